package microsoft_defender

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	jsonv2 "github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"
	jsonv1 "github.com/go-json-experiment/json/v1"

	"github.com/influxdata/telegraf"
)

// record is a SIEM detection or a Graph alert or incident version: all that deduplication, the cursor and counts see.
type record interface {
	identity() string                    // the deduplication key; "" when there is none
	cursorTime() time.Time               // the time the API's window filters on
	inWindow() bool                      // whether cursorTime lies in the window asked: if not, it moves no bound
	metric() (telegraf.Metric, []string) // defender_alert, and the fields cut to maxFieldBytes
	countKey() countKey                  // its defender_alert_count series
	problems() *recordProblems           // what of it could not be decoded
	validate()                           // parses what the decoder left as text, once decoded
}

// fieldProblem is a member whose value does not fit its field: the field is
// left as it was and the rest of the record decoded.
type fieldProblem struct{ field, reason string }

// recordProblems is what of one record could not be decoded.
type recordProblems struct {
	noun    string // with index and offset, places the record (where)
	index   int
	offset  int64
	invalid []fieldProblem
	skip    string // why the record is not emitted; "" when it is
}

// where starts a log message on the record: "Detection 3 at byte 1204".
func (p *recordProblems) where() string {
	return fmt.Sprintf("%s%s %d at byte %d", strings.ToUpper(p.noun[:1]), p.noun[1:], p.index, p.offset)
}

// fieldNames lists the fields left out, for the invalid_field_names field.
func (p *recordProblems) fieldNames() string {
	names := make([]string, len(p.invalid))
	for i, f := range p.invalid {
		names[i] = f.field
	}
	return strings.Join(names, ",")
}

func (p *recordProblems) String() string {
	parts := make([]string, len(p.invalid))
	for i, f := range p.invalid {
		parts[i] = f.field + ": " + f.reason
	}
	return strings.Join(parts, "; ")
}

// parseTime parses the named field's time; "" is none, and no problem.
func (p *recordProblems) parseTime(field, value string) time.Time {
	if value == "" {
		return time.Time{}
	}
	t, err := parseAPITime(value)
	if err != nil {
		p.invalid = append(p.invalid, fieldProblem{field, err.Error()})
	}
	return t
}

// A metric's time is nanoseconds since 1970 in an int64: one beyond these would wrap around.
var earliestTime, latestTime = time.Unix(0, math.MinInt64), time.Unix(0, math.MaxInt64)

// parseAPITime reads the forms the APIs and their documentation use; no zone is UTC, as in the SIEM API.
func parseAPITime(s string) (time.Time, error) {
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04:05.999999999", "2006-01-02 15:04:05.999999999"} {
		if t, err := time.Parse(layout, s); err == nil {
			if t.Before(earliestTime) || t.After(latestTime) {
				return time.Time{}, fmt.Errorf("%q lies outside the years 1678 to 2262 that a metric's time can hold", s)
			}
			return t.UTC(), nil
		}
	}
	return time.Time{}, fmt.Errorf("%s is not an RFC 3339 timestamp", quoteShort([]byte(strconv.Quote(s))))
}

// optional is a JSON integer or boolean that may also be null, "" or absent.
type optional[T int64 | bool] struct {
	value T
	set   bool
}

// UnmarshalJSON implements json.Unmarshaler; what does not parse leaves o as it was.
func (o *optional[T]) UnmarshalJSON(b []byte) error {
	s := string(bytes.TrimSpace(b))
	switch {
	case len(s) >= 2 && s[0] == '"' && s[len(s)-1] == '"':
		s = s[1 : len(s)-1]
	case s == "null":
		return nil
	}
	if s == "" {
		return nil
	}
	var v T
	var err error
	what := "an integer"
	switch p := any(&v).(type) {
	case *int64:
		*p, err = strconv.ParseInt(s, 10, 64)
	case *bool:
		what = "a boolean"
		*p, err = strconv.ParseBool(s)
	}
	if err != nil {
		return fmt.Errorf("%s is not %s", quoteShort(b), what)
	}
	o.value, o.set = v, true
	return nil
}

// quoteShort quotes a misfit value for a message. A long one is only
// measured: cut, it could hold most of a secret that redaction misses.
func quoteShort(b []byte) string {
	if len(b) > 64 {
		return fmt.Sprintf("a value of %d bytes", len(b))
	}
	return string(b)
}

// maxRecordBytes caps one detection or alert, evidence included: a longer
// one is skipped and counted in alerts_skipped, and the answer read on.
const maxRecordBytes = 8 << 20 // 40 times the longest Windows command line JSON-escaped; one record held fits the plugin's 64 MB

var (
	// skipTooLarge is why a record over maxRecordBytes is skipped.
	skipTooLarge = fmt.Sprintf("it is larger than %d MiB, the most one record may take", maxRecordBytes>>20)
	// errRecordTooLarge ends the unmarshaling of a record past maxRecordBytes.
	errRecordTooLarge = errors.New("record larger than maxRecordBytes")
)

// recordReader reads an answer's records one at a time, each unmarshaled as
// encoding/json would (v1 options). Its unmarshalers take only what the
// library would refuse: a value that does not fit its field is skipped and
// noted. Memory holds what the fields keep, which maxRecordBytes caps, and
// the token being read, which jsontext holds whole (go.dev/issue/56733).
type recordReader struct {
	dec      *jsontext.Decoder
	opts     jsonv2.Options
	names    []taggedField   // of the record's fields
	start    int64           // of the record being read
	issues   *recordProblems // of the record being read
	needs    evidenceNeeds   // what of an alert's evidence is kept
	evidence []byte          // the evidence kept so far
}

func newRecordReader(body io.Reader, names []taggedField) *recordReader {
	r := &recordReader{names: names}
	r.opts = jsonv2.JoinOptions(jsonv1.DefaultOptionsV1(),
		// The legacy error semantics would read each record whole first.
		jsonv1.ReportErrorsWithLegacySemantics(false),
		jsonv2.WithUnmarshalers(jsonv2.JoinUnmarshalers(
			jsonv2.UnmarshalFromFunc(r.unmarshalString),
			jsonv2.UnmarshalFromFunc(r.unmarshalStrings),
			jsonv2.UnmarshalFromFunc(r.unmarshalEvidence),
			jsonv2.UnmarshalFromFunc(func(dec *jsontext.Decoder, o *optional[int64]) error { return r.unmarshalJSON(dec, o) }),
			jsonv2.UnmarshalFromFunc(func(dec *jsontext.Decoder, o *optional[bool]) error { return r.unmarshalJSON(dec, o) }),
			jsonv2.UnmarshalFromFunc(r.unmarshalIncidentAlerts),
		)))
	r.dec = jsontext.NewDecoder(body, r.opts)
	return r
}

// open reads the opening token, want ('[' for SIEM, '{' for Graph, with what).
func (r *recordReader) open(want jsontext.Kind, what string) error {
	if k := r.dec.PeekKind(); k != want && k != 0 {
		return fmt.Errorf("response is not a JSON %s %s: it is a JSON %s", kindName(want), what, kindName(k))
	}
	if _, err := r.dec.ReadToken(); err != nil {
		return fmt.Errorf("response is not a JSON %s: %w", kindName(want), r.explain(err))
	}
	return nil
}

// next reads element i of the array into v, an item of the API (noun): an
// object or null is unmarshaled and validated, anything else skipped.
func (r *recordReader) next(v record, noun string, i int) error {
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
	p := v.problems()
	r.start, r.issues = valueStart(r.dec), p
	p.noun, p.index, p.offset = noun, i, r.start
	depth := r.dec.StackDepth()
	var err error
	if k == '{' || k == 'n' {
		err = jsonv2.UnmarshalDecode(r.dec, v)
	} else if err = r.dec.SkipValue(); err == nil {
		p.skip = fmt.Sprintf("a JSON %s where an object was expected", kindName(k))
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
		p.skip = skipTooLarge
	case p.skip == "":
		v.validate()
	}
	return nil
}

// over reports whether dec's record has passed maxRecordBytes; bytes decoded again (evidence) are not counted.
func (r *recordReader) over(dec *jsontext.Decoder) bool {
	return dec == r.dec && dec.InputOffset()-r.start > maxRecordBytes
}

// valueStart is the offset of the value the decoder peeked at.
func valueStart(dec *jsontext.Decoder) int64 {
	buf := dec.UnreadBuffer()
	return dec.InputOffset() + int64(len(buf)-len(bytes.TrimLeft(buf, " \t\r\n,:")))
}

// problem notes that the member dec last read does not fit, named as its tag spells it.
func (r *recordReader) problem(dec *jsontext.Decoder, reason string) {
	name := dec.StackPointer().LastToken()
	for _, f := range r.names {
		if strings.EqualFold(f.name, name) {
			name = f.name
		}
	}
	r.issues.invalid = append(r.issues.invalid, fieldProblem{name, reason})
}

// misfit skips the value peeked at, of kind k, which does not fit: want was expected.
func (r *recordReader) misfit(dec *jsontext.Decoder, k jsontext.Kind, want string) error {
	err := dec.SkipValue()
	if err == nil {
		r.problem(dec, fmt.Sprintf("a JSON %s where %s was expected", kindName(k), want))
	}
	return err
}

// unmarshalString leaves a string or null to the library.
func (r *recordReader) unmarshalString(dec *jsontext.Decoder, _ *string) error {
	switch k := dec.PeekKind(); {
	case r.over(dec):
		return errRecordTooLarge
	case k == '"' || k == 'n':
		return errors.ErrUnsupported // the library's own
	default:
		return r.misfit(dec, k, "a string")
	}
}

// unmarshalJSON decodes the value with v's UnmarshalJSON, as encoding/json would.
func (r *recordReader) unmarshalJSON(dec *jsontext.Decoder, v json.Unmarshaler) error {
	raw, err := dec.ReadValue()
	if err == nil {
		if err := v.UnmarshalJSON(raw); err != nil {
			r.problem(dec, err.Error())
		}
	}
	return err
}

// stringList is a []string the library decodes element by element (unmarshalString).
type stringList []string

// unmarshalStrings decodes a []string, but an element that is no string leaves it as it was.
func (r *recordReader) unmarshalStrings(dec *jsontext.Decoder, v *[]string) error {
	switch k := dec.PeekKind(); {
	case k == 'n':
		return errors.ErrUnsupported // the library's own, as encoding/json
	case k != '[':
		return r.misfit(dec, k, "an array of strings")
	}
	n := len(r.issues.invalid)
	list := stringList(slices.Clone(*v))
	if err := jsonv2.UnmarshalDecode(dec, &list); err != nil {
		return err
	}
	if p := r.issues; len(p.invalid) > n {
		first := p.invalid[n]
		p.invalid = p.invalid[:n]
		r.problem(dec, "element "+first.field+": "+first.reason)
		return nil
	}
	*v = list
	return nil
}

// expectEnd refuses anything but whitespace after the answer's value: a
// second answer or garbage means this one cannot be trusted whole.
func (r *recordReader) expectEnd() error {
	if r.dec.PeekKind() == 0 {
		var syntaxErr *jsontext.SyntacticError
		switch _, err := r.dec.ReadToken(); {
		case errors.Is(err, io.EOF):
			return nil
		case !errors.As(err, &syntaxErr) || errors.Is(syntaxErr.Err, io.ErrUnexpectedEOF):
			return r.explain(err)
		}
	}
	return fmt.Errorf("invalid JSON at byte %d: more follows the answer", valueStart(r.dec))
}

// explain turns an error of the decoder into the body's own read error, a
// truncated answer, or malformed JSON with its position.
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

// recordError places an error in an item ("detection %d"), malformed JSON as a recordSyntaxError.
func (r *recordReader) recordError(err error, format string, args ...any) error {
	explained := fmt.Errorf(format+": %w", append(args, r.explain(err))...)
	var syntaxErr *jsontext.SyntacticError
	if errors.As(err, &syntaxErr) && !errors.Is(syntaxErr.Err, io.ErrUnexpectedEOF) {
		return &recordSyntaxError{explained}
	}
	return explained
}

// recordSyntaxError is malformed JSON in or between items: unlike an answer
// cut short, it comes back when the same items are asked for again.
type recordSyntaxError struct{ error }

func (e *recordSyntaxError) Unwrap() error { return e.error }

// kindNames name JSON kinds as encoding/json does in its type errors.
var kindNames = map[jsontext.Kind]string{'{': "object", '[': "array", '"': "string", 't': "bool", 'f': "bool", 'n': "null", '0': "number"}

func kindName(k jsontext.Kind) string { return kindNames[k] }
