package microsoft_defender

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"

	jsonv2 "github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"
	jsonv1 "github.com/go-json-experiment/json/v1"
)

// fieldProblem is a member whose value does not fit its field, such as a
// string where a number belongs or a number beyond int64. The field is
// left as it was and the rest of the object decoded: one odd value must
// not cost the whole record.
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

// notObjectError is an element of an item array that is no object at all.
type notObjectError struct {
	kind string // JSON kind found
	noun string
}

func (e *notObjectError) Error() string {
	return fmt.Sprintf("a JSON %s where %s object was expected", e.kind, article(e.noun))
}

// recordDecoder reads the items of an answer one at a time from the body
// through jsontext, so that memory holds one item, not the answer. Each
// item is unmarshaled as encoding/json would (the v1 options: names
// matched without regard to case, the last of repeated names wins, null
// leaves a field as it is, invalid UTF-8 replaced), except that a value
// that does not fit its field is left out and recorded in problems
// instead of failing the item: the unmarshalers below take every value the
// item types hold.
type recordDecoder struct {
	dec  *jsontext.Decoder
	body *bodyReader

	// The object being unmarshaled: where it starts, the names its type
	// gives its fields, and what did not fit.
	start    int64
	names    []string
	problems []fieldProblem
	// The string values of the objects being unmarshaled, unquoted back
	// to back, and the fields they go to once the object is done: all
	// strings of an object share one allocation.
	values  []byte
	assigns []stringAssign
	// alert is the Graph alert being unmarshaled, whose evidence
	// (unmarshalEvidence) sets more than its own field.
	alert *graphAlert
}

// newRecordDecoder reads body; cutStrings cuts its strings after
// maxStringBytes (bodyReader), for answers whose items may hold strings
// far longer than anything the plugin emits.
func newRecordDecoder(body io.Reader, cutStrings bool) *recordDecoder {
	rd := &recordDecoder{body: &bodyReader{r: body, cutting: cutStrings}}
	rd.dec = jsontext.NewDecoder(rd.body,
		jsonv1.DefaultOptionsV1(),
		// The legacy error semantics would read each item whole before
		// unmarshaling it, evidence and all.
		jsonv1.ReportErrorsWithLegacySemantics(false),
		jsonv2.WithUnmarshalers(jsonv2.JoinUnmarshalers(
			jsonv2.UnmarshalFunc(rd.unmarshalString),
			jsonv2.UnmarshalFunc(rd.unmarshalOptionalInt),
			jsonv2.UnmarshalFunc(rd.unmarshalOptionalBool),
			jsonv2.UnmarshalFromFunc(rd.unmarshalStrings),
			jsonv2.UnmarshalFromFunc(rd.unmarshalEvidence),
		)))
	return rd
}

// stringAssign is a string field and where its value lies in values.
type stringAssign struct {
	field      *string
	start, end int
}

// object unmarshals the object (or null) that starts at start into v,
// whose field names are names, and returns what did not fit.
func (rd *recordDecoder) object(v any, start int64, names []string) ([]fieldProblem, error) {
	outerStart, outerNames, outerProblems := rd.start, rd.names, len(rd.problems)
	outerValues, outerAssigns := len(rd.values), len(rd.assigns)
	rd.start, rd.names = start, names
	err := jsonv2.UnmarshalDecode(rd.dec, v)
	var problems []fieldProblem
	if err == nil {
		if len(rd.assigns) > outerAssigns {
			values := string(rd.values[outerValues:])
			for _, a := range rd.assigns[outerAssigns:] {
				*a.field = values[a.start-outerValues : a.end-outerValues]
			}
		}
		if len(rd.problems) > outerProblems {
			problems = append(problems, rd.problems[outerProblems:]...)
		}
	}
	rd.start, rd.names, rd.problems = outerStart, outerNames, rd.problems[:outerProblems]
	rd.values, rd.assigns = rd.values[:outerValues], rd.assigns[:outerAssigns]
	return problems, err
}

// valueStart is the offset of the value the decoder peeked at: after the
// last token read, past whitespace, a comma or a colon.
func (rd *recordDecoder) valueStart() int64 {
	buf := rd.dec.UnreadBuffer()
	n := 0
	for n < len(buf) && isSeparator(buf[n]) {
		n++
	}
	return rd.dec.InputOffset() + int64(n)
}

func isSeparator(c byte) bool {
	return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == ',' || c == ':'
}

// misfit skips the value the decoder peeked at, of kind k, and records it
// as not fitting the field being unmarshaled.
func (rd *recordDecoder) misfit(k jsontext.Kind, reason string) error {
	start := rd.valueStart()
	if err := rd.dec.SkipValue(); err != nil {
		return err
	}
	rd.problem(start, fmt.Sprintf(reason, kindName(k)))
	return nil
}

// problem records that the value at start, of the member last read, does
// not fit its field.
func (rd *recordDecoder) problem(start int64, reason string) {
	rd.problems = append(rd.problems, fieldProblem{field: rd.fieldName(), offset: rd.body.inBody(start) - rd.body.inBody(rd.start), reason: reason})
}

// fieldName is the field of the member being read, as its type's tag
// spells it, whatever case the answer used.
func (rd *recordDecoder) fieldName() string {
	name := rd.dec.StackPointer().LastToken()
	for _, n := range rd.names {
		if n == name {
			return n
		}
	}
	for _, n := range rd.names {
		if strings.EqualFold(n, name) {
			return n
		}
	}
	return name
}

// unmarshalString takes a string; null leaves the field as it is. It takes
// the value as the library read it (json.UnmarshalFunc), which costs less
// than reading it itself.
func (rd *recordDecoder) unmarshalString(raw []byte, s *string) error {
	switch k := jsontext.Value(raw).Kind(); k {
	case '"':
		begin := len(rd.values)
		if content := raw[1 : len(raw)-1]; bytes.IndexByte(content, '\\') < 0 && utf8.Valid(content) {
			rd.values = append(rd.values, content...) // as it came: nothing to unescape
		} else {
			// The decoder checked the string; what is not UTF-8 in it
			// becomes U+FFFD, as in encoding/json, and is no error.
			rd.values, _ = jsontext.AppendUnquote(rd.values, raw) //nolint:errcheck // its error says only that U+FFFD replaced invalid UTF-8
		}
		rd.assigns = append(rd.assigns, stringAssign{field: s, start: begin, end: len(rd.values)})
	case 'n':
	default:
		rd.problem(rd.dec.InputOffset()-int64(len(raw)), fmt.Sprintf("JSON %s where a string was expected", kindName(k)))
	}
	return nil
}

// unmarshalOptionalInt and unmarshalOptionalBool decode the value as the
// type's UnmarshalJSON does, as encoding/json would call it.
func (rd *recordDecoder) unmarshalOptionalInt(raw []byte, o *optionalInt) error {
	return rd.unmarshalRaw(raw, o.UnmarshalJSON)
}

func (rd *recordDecoder) unmarshalOptionalBool(raw []byte, o *optionalBool) error {
	return rd.unmarshalRaw(raw, o.UnmarshalJSON)
}

func (rd *recordDecoder) unmarshalRaw(raw []byte, unmarshal func([]byte) error) error {
	if err := unmarshal(raw); err != nil {
		rd.problem(rd.dec.InputOffset()-int64(len(raw)), err.Error())
	}
	return nil
}

// openArray opens the array that is the field's value and returns where
// it starts. For null, which leaves the field as it is, and any other
// value, which does not fit (misfit, the reason), it reads the value and
// returns false.
func (rd *recordDecoder) openArray(dec *jsontext.Decoder, misfit string) (start int64, ok bool, err error) {
	switch k := dec.PeekKind(); k {
	case 'n', 0:
		_, err := dec.ReadToken()
		return 0, false, err
	case '[':
	default:
		return 0, false, rd.misfit(k, misfit)
	}
	start = rd.valueStart()
	_, err = dec.ReadToken()
	return start, err == nil, err
}

// unmarshalStrings decodes mitreTechniques as encoding/json decodes into a
// []string: null keeps what is there, and the elements of a repeated name
// reuse the slice.
func (rd *recordDecoder) unmarshalStrings(dec *jsontext.Decoder, v *[]string) error {
	start, ok, err := rd.openArray(dec, "a JSON %s where an array of strings was expected")
	if !ok {
		return err
	}
	// A copy, so that a value left out leaves the field as it was; null
	// elements keep what an earlier array had there, as in encoding/json.
	techniques := append([]string(nil), (*v)...)[:0]
	var typeErr string
	for i := 0; ; i++ {
		k := dec.PeekKind()
		if k == ']' {
			break
		}
		if i < cap(techniques) {
			techniques = techniques[:i+1]
		} else {
			techniques = append(techniques, "")
		}
		switch k {
		case '"':
			tok, err := dec.ReadToken()
			if err != nil {
				return err
			}
			techniques[i] = tok.String()
			continue
		case 'n':
		default:
			if typeErr == "" && k != 0 {
				typeErr = fmt.Sprintf("element %d: JSON %s where a string was expected", i, kindName(k))
			}
		}
		if err := dec.SkipValue(); err != nil {
			return err
		}
	}
	if _, err := dec.ReadToken(); err != nil {
		return err
	}
	if typeErr != "" {
		rd.problem(start, typeErr)
		return nil
	}
	if len(techniques) == 0 {
		techniques = make([]string, 0)
	}
	*v = techniques
	return nil
}

// maxEvidenceTee bounds the evidence kept as it came, whitespace included,
// for the evidence field: compacted, at most maxFieldBytes are emitted
// (graphAlert.metric).
const maxEvidenceTee = 4 * maxFieldBytes

// unmarshalEvidence reads the alert's evidence array from the stream: it
// counts the evidence, keeps the first device evidence, and keeps the
// array itself only while it is short enough to be emitted, so that an
// alert with megabytes of evidence costs no more memory than one without.
// Evidence that does not decode leaves the alert's evidence as it was.
func (rd *recordDecoder) unmarshalEvidence(dec *jsontext.Decoder, raw *json.RawMessage) error {
	a := rd.alert
	start, ok, err := rd.openArray(dec, "a JSON %s where an array was expected")
	if !ok {
		return err
	}
	// From the opening bracket: what follows it is what the decoder has
	// buffered, then what it reads.
	rd.body.startTee([]byte{'['}, maxEvidenceTee)
	rd.body.copyToTee(dec.UnreadBuffer())
	defer rd.body.stopTee()
	var device deviceEvidence
	found := false
	var problem string
	count := 0
	for ; ; count++ {
		k := dec.PeekKind()
		if k == ']' {
			break
		}
		if found || problem != "" || k == 0 {
			// Only the first device evidence is used: the rest is
			// counted, not held.
			if err := dec.SkipValue(); err != nil {
				return err
			}
			continue
		}
		elementStart := rd.valueStart()
		if k != '{' && k != 'n' {
			if err := dec.SkipValue(); err != nil {
				return err
			}
			problem = fmt.Sprintf("evidence %d: %s", count, &notObjectError{kind: kindName(k), noun: "evidence"})
			continue
		}
		var e deviceEvidence
		problems, err := rd.object(&e, elementStart, deviceEvidenceNames)
		if err != nil {
			return err
		}
		if len(problems) > 0 {
			problem = fmt.Sprintf("evidence %d: field %s", count, problems[0])
			continue
		}
		if e.Type == "#microsoft.graph.security.deviceEvidence" {
			device, found = e, true
		}
	}
	if _, err := dec.ReadToken(); err != nil {
		return err
	}
	if problem != "" {
		rd.problem(start, problem)
		return nil
	}
	// Kept as it came: it is compacted only if it is emitted (metric).
	end := dec.InputOffset()
	kept, whole := rd.body.teed(end - start)
	if rd.body.cutWithin(start, end) {
		kept, whole = nil, false
	}
	a.evidenceCount, a.device, a.evidenceLeftOut = count, device, !whole
	*raw = kept
	return nil
}

// maxStringBytes bounds what the decoder holds of one JSON string of a
// Graph answer: a jsontext.Decoder holds each token whole, and an alert's
// evidence may hold a string of a hundred megabytes (a process command
// line). bodyReader cuts a string after this many bytes as they came, at
// the start of a character outside an escape. Nothing the plugin emits
// changes: string fields are cut to maxFieldBytes anyway, and evidence
// with a string that long is too long to be emitted (graphAlert.metric).
const maxStringBytes = 2 * maxFieldBytes

// bodyReader counts what the decoder read from the body and keeps the
// body's own error, which jsontext wraps. It cuts strings longer than
// maxStringBytes out of what the decoder sees, and copies what it hands
// the decoder to a tee while one is started.
type bodyReader struct {
	r       io.Reader
	n       int64 // read from the body
	err     error
	cutting bool // strings longer than maxStringBytes

	// What is left out of strings: the decoder's offset of each cut,
	// with the bytes left out up to there, so that an offset in the
	// decoder's input can be told as one in the body.
	strings    stringCutter
	cuts       []stringCut
	droppedRun int64 // left out since the last byte handed on
	handed     int64 // handed to the decoder

	tee      []byte
	teeOn    bool
	teeLimit int
}

// stringCut says that from the decoder's offset at on, dropped bytes of
// the body in all were left out before.
type stringCut struct {
	at, dropped int64
}

func (b *bodyReader) Read(p []byte) (int, error) {
	for {
		n, err := b.r.Read(p)
		b.n += int64(n)
		if err != nil && b.err == nil {
			b.err = err
		}
		kept := n
		if b.cutting {
			kept = b.cutStrings(p[:n])
		}
		b.handed += int64(kept)
		if b.teeOn {
			b.copyToTee(p[:kept])
		}
		// What was all left out is no answer: read on.
		if kept > 0 || n == 0 || err != nil {
			return kept, err
		}
	}
}

// resume notes that the decoder's input goes on at the kept index i of
// this read after bytes were left out.
func (b *bodyReader) resume(i int) {
	if b.droppedRun == 0 {
		return
	}
	dropped := b.droppedRun
	if len(b.cuts) > 0 {
		dropped += b.cuts[len(b.cuts)-1].dropped
	}
	b.cuts = append(b.cuts, stringCut{at: b.handed + int64(i), dropped: dropped})
	b.droppedRun = 0
}

// inBody turns an offset in what the decoder read into one in the body.
func (b *bodyReader) inBody(offset int64) int64 {
	i := sort.Search(len(b.cuts), func(i int) bool { return b.cuts[i].at > offset })
	if i == 0 {
		return offset
	}
	return offset + b.cuts[i-1].dropped
}

// cutWithin reports whether a string was cut between the decoder's offsets
// from and to.
func (b *bodyReader) cutWithin(from, to int64) bool {
	i := sort.Search(len(b.cuts), func(i int) bool { return b.cuts[i].at > from })
	return i < len(b.cuts) && b.cuts[i].at <= to
}

// stringCutter follows JSON strings through a stream to cut each after
// maxStringBytes. Outside a string, a quote can only open one; inside,
// only a quote after an even run of backslashes closes it; so it sees the
// strings the decoder sees up to the first malformed byte, after which the
// decoder fails whatever it is given.
type stringCutter struct {
	inString bool
	length   int // bytes of the string so far
	// backslashes ends what was read of the string, which decides whether
	// a quote at the start of the next read closes it.
	backslashes int
	// Once the string is cut, the rest is followed byte by byte, so that
	// an escape left out is checked: escape is -1 after a backslash, the
	// hex digits to come after \u, 0 elsewhere.
	cutting bool
	escape  int
}

// cutStrings removes from p, in place, what is left out of strings, and
// returns how many bytes are kept. Strings that are not cut are passed
// over at the speed of bytes.IndexByte.
func (b *bodyReader) cutStrings(p []byte) int {
	s := &b.strings
	if s.passOver(p) {
		return len(p)
	}
	w, i := 0, 0
	keepTo := func(j int) {
		if j > i {
			b.resume(w)
		}
		if w != i {
			copy(p[w:], p[i:j])
		}
		w, i = w+j-i, j
	}
	for i < len(p) {
		switch {
		case !s.inString:
			q := bytes.IndexByte(p[i:], '"')
			if q < 0 {
				keepTo(len(p))
				continue
			}
			keepTo(i + q + 1)
			s.inString, s.length, s.backslashes = true, 0, 0
		case s.cutting && s.escape == 0 && !cutStop[p[i]]:
			// Content left out, up to what must be looked at.
			j := i + 1
			for j < len(p) && !cutStop[p[j]] {
				j++
			}
			b.droppedRun += int64(j - i)
			i = j
		case s.cutting:
			if c, keep := s.step(p[i]); keep {
				b.resume(w)
				p[w] = c
				w++
			} else {
				b.droppedRun++
			}
			i++
		default:
			end := len(p)
			if q := bytes.IndexByte(p[i:], '"'); q >= 0 {
				end = i + q
			}
			if cutAt := i + maxStringBytes - s.length; cutAt < end {
				if y := safeCut(p, max(cutAt, i)); y >= 0 && y < end {
					s.length += y - i
					keepTo(y)
					s.cutting = true
					continue
				}
			}
			run := p[i:end]
			s.length += len(run)
			if n := trailingBackslashes(run); n < len(run) {
				s.backslashes = n
			} else {
				s.backslashes += n
			}
			if end == len(p) {
				keepTo(end)
				continue
			}
			keepTo(end + 1) // the quote
			if s.backslashes%2 == 1 {
				s.length, s.backslashes = s.length+1, 0 // escaped
			} else {
				s.inString = false
			}
		}
	}
	return w
}

// passOver follows p whole and reports true when it holds nothing to cut,
// as most reads do: when no string can reach maxStringBytes in it (p is
// shorter than that, so only one open before it can, which the first
// quote that closes it tells). Quotes open or close strings but where a
// backslash escapes them, which only \" can show; a few passes of bytes'
// assembly over p cost less than a look at each string.
func (s *stringCutter) passOver(p []byte) bool {
	if s.cutting || len(p) == 0 || len(p) > maxStringBytes {
		return false
	}
	// The escaped quotes, few or none: a quote after an odd run of
	// backslashes, which may go on from the read before.
	var escaped []int
	for from := 0; ; {
		j := bytes.Index(p[from:], []byte(`\"`))
		if j < 0 {
			break
		}
		j += from + 1 // the quote
		run := trailingBackslashes(p[:j])
		if run == j && s.inString {
			run += s.backslashes
		}
		if run%2 == 1 {
			escaped = append(escaped, j)
		}
		from = j
	}
	if s.inString && s.backslashes%2 == 1 && p[0] == '"' {
		escaped = append([]int{0}, escaped...)
	}
	isEscaped := func(j int) bool {
		for _, e := range escaped {
			if e == j {
				return true
			}
		}
		return false
	}
	// The first and last quotes that open or close a string.
	first := -1
	for from := 0; from < len(p); {
		j := bytes.IndexByte(p[from:], '"')
		if j < 0 {
			break
		}
		if j += from; !isEscaped(j) {
			first = j
			break
		}
		from = j + 1
	}
	if first < 0 {
		if s.inString {
			if s.length+len(p) >= maxStringBytes {
				return false
			}
			s.length += len(p)
			if n := trailingBackslashes(p); n < len(p) {
				s.backslashes = n
			} else {
				s.backslashes += n
			}
		}
		return true
	}
	if s.inString && s.length+first >= maxStringBytes {
		return false
	}
	if (bytes.Count(p, []byte{'"'})-len(escaped))%2 == 1 {
		s.inString = !s.inString
	}
	if s.inString {
		last := len(p) - 1
		for last > first && (p[last] != '"' || isEscaped(last)) {
			last--
		}
		s.length = len(p) - 1 - last
		s.backslashes = trailingBackslashes(p[last+1:])
	}
	return true
}

// safeCut finds, from the index from on, where a string may be cut: at
// the start of a character that does not lie inside an escape, which is at
// most six bytes long. It returns -1 when p has no such place past from.
func safeCut(p []byte, from int) int {
	for y := max(from, 6); y < len(p); y++ {
		c := p[y]
		switch {
		case !utf8.RuneStart(c):
		case c == '\\' && p[y-1] != '\\':
			return y // an escape begins
		case c != '\\' && bytes.IndexByte(p[y-6:y], '\\') < 0:
			return y
		}
	}
	return -1
}

func trailingBackslashes(p []byte) int {
	n := 0
	for n < len(p) && p[len(p)-1-n] == '\\' {
		n++
	}
	return n
}

// malformedEscape is what the decoder is given for the malformed byte of
// an escape that is left out: a control character, which no string may
// hold, so that the answer fails there as it would whole.
const malformedEscape = 0

// cutStop marks the bytes of a string being cut that step must look at:
// the quote, the backslash and the control characters.
var cutStop = func() (t [256]bool) {
	for c := range 0x20 {
		t[c] = true
	}
	t['"'], t['\\'] = true, true
	return t
}()

// step takes the byte c of a string that is being cut and returns what
// the decoder is given for it, if anything.
func (s *stringCutter) step(c byte) (byte, bool) {
	switch {
	case s.escape == -1:
		s.escape = 0
		switch c {
		case 'u':
			s.escape = 4
		case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
		default:
			return malformedEscape, true
		}
	case s.escape > 0:
		s.escape--
		if !isHexDigit(c) {
			s.escape = 0
			return malformedEscape, true
		}
	case c == '"':
		s.inString, s.cutting = false, false
		return c, true
	case c < 0x20:
		return c, true // malformed: the decoder is to say so
	case c == '\\':
		s.escape = -1
	}
	return c, false
}

// startTee starts copying what the reader hands on, after first, keeping
// at most limit bytes.
func (b *bodyReader) startTee(first []byte, limit int) {
	b.tee, b.teeOn, b.teeLimit = b.tee[:0], true, limit
	b.copyToTee(first)
}

func (b *bodyReader) copyToTee(p []byte) {
	if room := b.teeLimit - len(b.tee); len(p) > room {
		p = p[:max(room, 0)]
	}
	b.tee = append(b.tee, p...)
}

// teed returns a copy of the first n bytes copied, and false when there
// were more than the limit, which were not kept.
func (b *bodyReader) teed(n int64) ([]byte, bool) {
	if n > int64(b.teeLimit) || n > int64(len(b.tee)) {
		return nil, false
	}
	return append([]byte(nil), b.tee[:n]...), true
}

// stopTee ends the copy; its buffer is kept for the next.
func (b *bodyReader) stopTee() {
	b.teeOn = false
}

// expectEnd checks that nothing but whitespace follows the answer's value:
// more would be a second answer or garbage, and either means this one
// cannot be trusted whole.
func (rd *recordDecoder) expectEnd() error {
	if rd.dec.PeekKind() == 0 {
		_, err := rd.dec.ReadToken()
		var syntaxErr *jsontext.SyntacticError
		if !errors.As(err, &syntaxErr) || rd.bodyFailed() {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return rd.explain(err)
		}
	}
	at := rd.valueStart()
	r, _ := utf8.DecodeRune(rd.dec.UnreadBuffer()[at-rd.dec.InputOffset():])
	return fmt.Errorf("invalid JSON at byte %d: invalid character %s after top-level value", rd.body.inBody(at), strconv.QuoteRune(r))
}

func (rd *recordDecoder) bodyFailed() bool {
	return rd.body.err != nil && !errors.Is(rd.body.err, io.EOF)
}

// explain turns an error of the decoder into what went wrong: the body's
// own read error, a truncated answer, or malformed JSON with its
// position.
func (rd *recordDecoder) explain(err error) error {
	var syntaxErr *jsontext.SyntacticError
	switch {
	case errors.Is(rd.body.err, io.ErrUnexpectedEOF):
		return fmt.Errorf("%w at byte %d: the connection closed before the announced length", errTruncated, rd.body.n)
	case rd.bodyFailed():
		return rd.body.err
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return fmt.Errorf("%w at byte %d", errTruncated, rd.body.n)
	case errors.As(err, &syntaxErr):
		return fmt.Errorf("invalid JSON at byte %d: %w", rd.body.inBody(syntaxErr.ByteOffset), syntaxErr.Err)
	}
	return err
}

// recordError places an error of the decoder in the item it names (format
// and args, such as "detection %d"), and marks malformed JSON as a
// recordSyntaxError.
func (rd *recordDecoder) recordError(err error, format string, args ...any) error {
	explained := fmt.Errorf(format+": %w", append(args, rd.explain(err))...)
	var syntaxErr *jsontext.SyntacticError
	if errors.As(err, &syntaxErr) && !errors.Is(syntaxErr.Err, io.ErrUnexpectedEOF) && !rd.bodyFailed() {
		return &recordSyntaxError{err: explained}
	}
	return explained
}

// describeStart names the value an answer starts with, whose kind k the
// decoder peeked at.
func (rd *recordDecoder) describeStart(k jsontext.Kind) (string, error) {
	if k == '{' || k == '[' {
		return fmt.Sprintf("%q", k.String()), nil
	}
	tok, err := rd.dec.ReadToken()
	if err != nil {
		return "", err
	}
	if k == '"' {
		return fmt.Sprintf("the string %q", truncate(tok.String(), 64)), nil
	}
	return truncate(tok.String(), 64), nil
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
	switch noun[0] {
	case 'a', 'e', 'i', 'o', 'u':
		return "an " + noun
	}
	return "a " + noun
}

// jsonNames lists the names the json tags of T give its fields.
func jsonNames[T any]() []string {
	typ := reflect.TypeFor[T]()
	var names []string
	for i := range typ.NumField() {
		if name, ok := typ.Field(i).Tag.Lookup("json"); ok {
			names = append(names, name)
		}
	}
	return names
}

var (
	detectionNames      = jsonNames[detection]()
	graphAlertNames     = jsonNames[graphAlert]()
	deviceEvidenceNames = jsonNames[deviceEvidence]()
)
