package microsoft_defender

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	jsonv2 "github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"
	jsonv1 "github.com/go-json-experiment/json/v1"
)

// maxRecordBytes caps one detection or alert, evidence included: a longer
// one is skipped and counted in alerts_skipped, and the answer read on.
const maxRecordBytes = 8 << 20 // 40 times the longest Windows command line JSON-escaped; one record held fits the plugin's 64 MB

// errRecordTooLarge ends the unmarshaling of a record past maxRecordBytes.
var errRecordTooLarge = errors.New("record larger than maxRecordBytes")

// fieldProblem is a member whose value does not fit its field, such as a
// string where a number belongs: the field is left as it was and the rest
// of the record decoded.
type fieldProblem struct {
	field  string
	offset int64 // of the value, from the start of the object
	reason string
}

func (p fieldProblem) String() string {
	if p.offset < 0 {
		return fmt.Sprintf("%s: %s", p.field, p.reason)
	}
	return fmt.Sprintf("%s (byte %d of the object): %s", p.field, p.offset, p.reason)
}

// recordReader reads the records of an answer one at a time with
// jsontext, each unmarshaled by the library as encoding/json would (v1
// options: names matched without regard to case, the last of repeated
// names wins, null leaves a field as it is, invalid UTF-8 replaced). Its
// unmarshalers take only what the library would refuse: a value that does
// not fit its field is skipped and recorded in problems.
//
// The library reads a record a token at a time and skips unknown members
// the same way, so memory holds what the record's fields keep, which
// maxRecordBytes caps, and the token being read: jsontext holds a token
// whole, a string of 100 MB too (it has no byte limit yet,
// go.dev/issue/56733), which only max_body_size bounds.
type recordReader struct {
	dec      *jsontext.Decoder
	opts     jsonv2.Options
	names    map[string]string // of the record's fields, by their lower case
	start    int64             // of the record being read
	problems []fieldProblem    // of the record being read
	alert    *graphAlert       // being read, for its evidence
	evidence []byte            // its evidence kept so far
}

func newRecordReader(body io.Reader, names map[string]string) *recordReader {
	r := &recordReader{names: names}
	r.opts = jsonv2.JoinOptions(jsonv1.DefaultOptionsV1(),
		// The legacy error semantics would read each record whole first.
		jsonv1.ReportErrorsWithLegacySemantics(false),
		jsonv2.WithUnmarshalers(jsonv2.JoinUnmarshalers(
			jsonv2.UnmarshalFromFunc(r.unmarshalString),
			jsonv2.UnmarshalFromFunc(func(dec *jsontext.Decoder, o *optionalInt) error { return r.unmarshalRaw(dec, o.UnmarshalJSON) }),
			jsonv2.UnmarshalFromFunc(func(dec *jsontext.Decoder, o *optionalBool) error { return r.unmarshalRaw(dec, o.UnmarshalJSON) }),
			jsonv2.UnmarshalFromFunc(r.unmarshalStrings),
			jsonv2.UnmarshalFromFunc(r.unmarshalEvidence),
			jsonv2.UnmarshalFromFunc(r.unmarshalIncidentAlerts),
		)))
	r.dec = jsontext.NewDecoder(body, r.opts)
	return r
}

// open reads the answer's opening token, want: '[' for SIEM, '{' for Graph
// (described by what).
func (r *recordReader) open(want jsontext.Kind, what string) error {
	k := r.dec.PeekKind()
	if k == want || k == 0 {
		if _, err := r.dec.ReadToken(); err != nil {
			return fmt.Errorf("response is not a JSON %s: %w", kindName(want), r.explain(err))
		}
		return nil
	}
	start := fmt.Sprintf("%q", k.String())
	if k != '{' && k != '[' {
		tok, err := r.dec.ReadToken()
		if err != nil {
			return fmt.Errorf("response is not a JSON %s: %w", kindName(want), r.explain(err))
		}
		if start = truncate(tok.String(), 64); k == '"' {
			start = fmt.Sprintf("the string %q", start)
		}
	}
	return fmt.Errorf("response is not a JSON %s %s: it starts with %s", kindName(want), what, start)
}

// next reads the next element i of the array being read into v, an item
// of the API (noun) with problems p: an object or null is unmarshaled and
// validated, anything else skipped. It returns io.EOF after the array.
func (r *recordReader) next(v interface{ validate() }, p *recordProblems, noun string, i int) error {
	k := r.dec.PeekKind()
	if k == ']' || k == 0 {
		_, err := r.dec.ReadToken()
		switch {
		case err == nil:
			return io.EOF
		case i == 0:
			return fmt.Errorf("after the opening bracket: %w", r.explain(err))
		}
		return r.recordError(err, "after %s %d", noun, i-1)
	}
	r.start = valueStart(r.dec)
	p.noun, p.index, p.offset = noun, i, r.start
	r.problems = r.problems[:0]
	depth := r.dec.StackDepth()
	var err error
	if k == '{' || k == 'n' {
		err = jsonv2.UnmarshalDecode(r.dec, v)
	} else if err = r.dec.SkipValue(); err == nil {
		p.skip = fmt.Sprintf("a JSON %s where %s object was expected", kindName(k), article(noun))
	}
	if errors.Is(err, errRecordTooLarge) {
		for err = nil; err == nil && r.dec.StackDepth() > depth; {
			_, err = r.dec.ReadToken() // one token at a time
		}
	}
	switch {
	case err != nil:
		return r.recordError(err, "%s %d", noun, i)
	case r.dec.InputOffset()-r.start > maxRecordBytes:
		p.skip = fmt.Sprintf("it is larger than %d MiB, the most one record may take", maxRecordBytes>>20)
	case p.skip == "":
		if len(r.problems) > 0 {
			p.invalid = slices.Clone(r.problems)
		}
		v.validate()
	}
	return nil
}

// over reports whether the record read by dec has passed maxRecordBytes;
// values decoded from bytes already read (evidence) are not counted again.
func (r *recordReader) over(dec *jsontext.Decoder) bool {
	return dec == r.dec && dec.InputOffset()-r.start > maxRecordBytes
}

// valueStart is the offset of the value the decoder peeked at: after the
// last token read, past whitespace, a comma or a colon.
func valueStart(dec *jsontext.Decoder) int64 {
	buf := dec.UnreadBuffer()
	n := 0
	for n < len(buf) && strings.IndexByte(" \t\r\n,:", buf[n]) >= 0 {
		n++
	}
	return dec.InputOffset() + int64(n)
}

// problem records that the value at offset at, of the member dec last
// read, does not fit its field.
func (r *recordReader) problem(dec *jsontext.Decoder, at int64, reason string) {
	if dec == r.dec {
		at -= r.start
	}
	name := dec.StackPointer().LastToken()
	if canonical, ok := r.names[strings.ToLower(name)]; ok {
		name = canonical // as the type's tag spells it
	}
	r.problems = append(r.problems, fieldProblem{field: name, offset: at, reason: reason})
}

// misfit skips the value the decoder peeked at, of kind k, as not fitting
// its field (reason, with the kind's name).
func (r *recordReader) misfit(dec *jsontext.Decoder, k jsontext.Kind, reason string) error {
	at := valueStart(dec)
	if err := dec.SkipValue(); err != nil {
		return err
	}
	r.problem(dec, at, fmt.Sprintf(reason, kindName(k)))
	return nil
}

// unmarshalString leaves a string or null to the library.
func (r *recordReader) unmarshalString(dec *jsontext.Decoder, _ *string) error {
	switch k := dec.PeekKind(); {
	case r.over(dec):
		return errRecordTooLarge
	case k == '"' || k == 'n':
		return errors.ErrUnsupported // the library's own
	default:
		return r.misfit(dec, k, "JSON %s where a string was expected")
	}
}

// unmarshalRaw decodes the value with the type's UnmarshalJSON, as
// encoding/json would call it.
func (r *recordReader) unmarshalRaw(dec *jsontext.Decoder, unmarshal func([]byte) error) error {
	raw, err := dec.ReadValue()
	if err == nil {
		if err := unmarshal(raw); err != nil {
			r.problem(dec, dec.InputOffset()-int64(len(raw)), err.Error())
		}
	}
	return err
}

// array reports whether the value dec peeked at is an array. Null is
// left to the library, to take as encoding/json does; anything else is a
// misfit (reason).
func (r *recordReader) array(dec *jsontext.Decoder, reason string) (bool, error) {
	switch k := dec.PeekKind(); k {
	case '[':
		return true, nil
	case 'n':
		return false, errors.ErrUnsupported
	default:
		return false, r.misfit(dec, k, reason)
	}
}

// stringList is a []string that the library decodes element by element,
// through unmarshalString.
type stringList []string

// unmarshalStrings decodes mitreTechniques as encoding/json decodes a
// []string, but for an element that is no string, which leaves the field
// as it was.
func (r *recordReader) unmarshalStrings(dec *jsontext.Decoder, v *[]string) error {
	if ok, err := r.array(dec, "a JSON %s where an array of strings was expected"); !ok {
		return err
	}
	start, n := valueStart(dec), len(r.problems)
	list := stringList(slices.Clone(*v))
	if err := jsonv2.UnmarshalDecode(dec, &list); err != nil {
		return err
	}
	if len(r.problems) > n {
		first := r.problems[n]
		r.problems = r.problems[:n]
		r.problem(dec, start, fmt.Sprintf("element %s: %s", first.field, first.reason))
		return nil
	}
	*v = list
	return nil
}

// maxEvidenceBytes bounds the evidence kept as it came, for the evidence
// field: compacted, at most maxFieldBytes are emitted (graphAlert.metric).
const maxEvidenceBytes = 4 * maxFieldBytes

// unmarshalEvidence reads the alert's evidence entry by entry: it counts
// them, decodes the first device evidence, and keeps the array while it is
// short enough to be emitted (maxEvidenceBytes). Once the device
// is found and the array too long, entries are skipped a token at a time.
// Evidence that does not decode leaves the alert's evidence as it was.
func (r *recordReader) unmarshalEvidence(dec *jsontext.Decoder, raw *json.RawMessage) error {
	if dec.PeekKind() == 'n' {
		_, err := dec.ReadToken() // null keeps the evidence as it was
		return err
	}
	if ok, err := r.array(dec, "a JSON %s where an array was expected"); !ok {
		return err
	}
	start := valueStart(dec)
	if _, err := dec.ReadToken(); err != nil {
		return err
	}
	var device deviceEvidence
	found, problem, count, kept := false, "", 0, append(r.evidence[:0], '[')
	for ; dec.PeekKind() != ']'; count++ {
		if r.over(dec) {
			return errRecordTooLarge
		}
		if problem != "" || found && kept == nil {
			if err := dec.SkipValue(); err != nil {
				return err
			}
			continue
		}
		k := dec.PeekKind()
		entry, err := dec.ReadValue()
		if err != nil {
			return err
		}
		switch n := len(r.problems); {
		case found:
		case k != '{' && k != 'n':
			problem = fmt.Sprintf("evidence %d: a JSON %s where an evidence object was expected", count, kindName(k))
		default:
			var e deviceEvidence
			if err := jsonv2.Unmarshal(entry, &e, r.opts); err != nil {
				return err
			}
			if len(r.problems) > n {
				problem = fmt.Sprintf("evidence %d: field %s", count, r.problems[n])
				r.problems = r.problems[:n]
			}
			if e.Type == "#microsoft.graph.security.deviceEvidence" {
				device, found = e, true
			}
		}
		if kept != nil {
			if count > 0 {
				kept = append(kept, ',')
			}
			if kept = append(kept, entry...); len(kept)+1 > maxEvidenceBytes {
				r.evidence, kept = kept, nil // too long to be emitted
			}
		}
	}
	if _, err := dec.ReadToken(); err != nil {
		return err
	}
	if problem != "" {
		r.problem(dec, start, problem)
		return nil
	}
	a := r.alert
	a.evidenceCount, a.device, a.evidenceLeftOut = count, device, kept == nil
	*raw = nil
	if kept != nil {
		r.evidence = append(kept, ']')
		*raw = slices.Clone(r.evidence)
	}
	return nil
}

// expectEnd checks that nothing but whitespace follows the answer's value:
// more would be a second answer or garbage, and either means this one
// cannot be trusted whole.
func (r *recordReader) expectEnd() error {
	if r.dec.PeekKind() == 0 {
		_, err := r.dec.ReadToken()
		var syntaxErr *jsontext.SyntacticError
		if errors.Is(err, io.EOF) {
			return nil
		}
		if !errors.As(err, &syntaxErr) || errors.Is(syntaxErr.Err, io.ErrUnexpectedEOF) {
			return r.explain(err)
		}
	}
	at := valueStart(r.dec)
	c, _ := utf8.DecodeRune(r.dec.UnreadBuffer()[at-r.dec.InputOffset():])
	return fmt.Errorf("invalid JSON at byte %d: invalid character %s after top-level value", at, strconv.QuoteRune(c))
}

// explain turns an error of the decoder into what went wrong: the body's
// own read error, a truncated answer, or malformed JSON with its position.
func (r *recordReader) explain(err error) error {
	read := r.dec.InputOffset() + int64(len(r.dec.UnreadBuffer()))
	var syntaxErr *jsontext.SyntacticError
	var semanticErr *jsonv2.SemanticError
	isSyntax := errors.As(err, &syntaxErr)
	switch {
	case errors.Is(err, io.EOF), isSyntax && errors.Is(syntaxErr.Err, io.ErrUnexpectedEOF):
		return fmt.Errorf("%w at byte %d", errTruncated, read)
	case isSyntax:
		return fmt.Errorf("invalid JSON at byte %d: %w", syntaxErr.ByteOffset, syntaxErr.Err)
	case errors.Is(err, io.ErrUnexpectedEOF):
		return fmt.Errorf("%w at byte %d: the connection closed before the announced length", errTruncated, read)
	case !errors.As(err, &semanticErr) && errors.Unwrap(err) != nil:
		return errors.Unwrap(err) // the body's own error, which jsontext wraps
	}
	return err
}

// recordError places an error of the decoder in the item it names (format
// and args, such as "detection %d"), and marks malformed JSON as a
// recordSyntaxError.
func (r *recordReader) recordError(err error, format string, args ...any) error {
	explained := fmt.Errorf(format+": %w", append(args, r.explain(err))...)
	var syntaxErr *jsontext.SyntacticError
	if errors.As(err, &syntaxErr) && !errors.Is(syntaxErr.Err, io.ErrUnexpectedEOF) {
		return &recordSyntaxError{err: explained}
	}
	return explained
}

// recordSyntaxError is malformed JSON inside the array of items: in one
// item or between two. Unlike an answer cut short, it comes back when the
// same items are asked for again.
type recordSyntaxError struct {
	err error
}

func (e *recordSyntaxError) Error() string {
	return e.err.Error()
}

func (e *recordSyntaxError) Unwrap() error {
	return e.err
}

// kindName names a JSON kind as encoding/json does in its type errors.
func kindName(k jsontext.Kind) string {
	switch k {
	case '{':
		return "object"
	case '[':
		return "array"
	case '"':
		return "string"
	case 't', 'f':
		return "bool"
	case 'n':
		return "null"
	}
	return "number"
}

func article(noun string) string {
	if strings.IndexByte("aeiou", noun[0]) >= 0 {
		return "an " + noun
	}
	return "a " + noun
}

// jsonNames spells, by its lower case, each name the json tags of the
// types give their fields.
func jsonNames(types ...reflect.Type) map[string]string {
	names := make(map[string]string)
	for _, typ := range types {
		for i := range typ.NumField() {
			if name, ok := typ.Field(i).Tag.Lookup("json"); ok {
				names[strings.ToLower(name)] = name
			}
		}
	}
	return names
}

var (
	detectionNames  = jsonNames(reflect.TypeFor[detection]())
	graphAlertNames = jsonNames(reflect.TypeFor[graphAlert](), reflect.TypeFor[deviceEvidence]())
)
