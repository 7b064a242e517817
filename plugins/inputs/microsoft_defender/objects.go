package microsoft_defender

import (
	"fmt"
	"unicode"
	"unicode/utf8"

	"github.com/sectelemetry/telegraf-defender/plugins/inputs/microsoft_defender/jsonstream"
)

// objectField is where the value of one key of an object of type T goes: a
// string field, or a field that takes the value's raw JSON (as a
// json.Unmarshaler would).
type objectField[T any] struct {
	name string // the key as the API spells it
	str  func(*T) *string
	raw  func(v *T, raw []byte) error
	// stream reads a value whose first byte, c, was consumed, straight
	// from the reader, for values too large to hold whole. It returns a
	// value that does not fit as problem, malformed JSON as err.
	stream func(v *T, r *jsonstream.Reader, c byte) (problem, err error)
}

// objectFields maps the keys of T to its fields, matching keys exactly or
// else case-insensitively, as encoding/json does.
type objectFields[T any] struct {
	noun   string // what T is, for errors: "detection", "alert"
	exact  map[string]objectField[T]
	folded map[string]objectField[T]
}

func newObjectFields[T any](noun string, fields map[string]objectField[T]) *objectFields[T] {
	t := &objectFields[T]{noun: noun, exact: fields, folded: make(map[string]objectField[T], len(fields))}
	for key, f := range fields {
		f.name = key
		t.exact[key] = f
		t.folded[string(appendFoldedName(nil, []byte(key)))] = f
	}
	return t
}

func (t *objectFields[T]) lookup(key []byte) (objectField[T], bool) {
	if f, ok := t.exact[string(key)]; ok {
		return f, true
	}
	var folded [64]byte // enough for any key of the APIs: no allocation
	f, ok := t.folded[string(appendFoldedName(folded[:0], key))]
	return f, ok
}

// objectDecoder decodes JSON objects into structs through a field table,
// without reflection. Its buffers are reused from object to object.
type objectDecoder struct {
	r       *jsonstream.Reader
	key     []byte
	raw     []byte
	values  []byte         // the unescaped string values, back to back
	assigns []stringAssign // which field each of values goes to
	// problems of the last object decoded
	problems []fieldProblem
}

// stringAssign is a string field and where its value lies in values.
type stringAssign struct {
	field      *string
	start, end int
}

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

// decodeObject reads an object whose first byte, c, was consumed into v, as
// encoding/json decodes an object member by member: null decodes to
// nothing, null leaves a field as it is, the last of repeated keys wins,
// unknown keys are skipped. A value that does not fit its field is left
// out and recorded in od.problems; an element that is no object is a
// *notObjectError; malformed JSON is an error. All string fields of v share
// one allocation.
func decodeObject[T any](od *objectDecoder, c byte, v *T, fields *objectFields[T]) error {
	r := od.r
	od.problems = od.problems[:0]
	switch c {
	case '{':
	case 'n':
		return r.Skip(c, 0)
	default:
		if err := r.Skip(c, 0); err != nil {
			return err
		}
		return &notObjectError{kind: jsonstream.Kind(c), noun: fields.noun}
	}
	start := r.Offset() - 1
	od.values, od.assigns = od.values[:0], od.assigns[:0]
	err := readObject(r, &od.key, func(c byte) error {
		field, known := fields.lookup(od.key)
		switch {
		case !known || c == 'n' && field.str != nil:
			return r.Skip(c, 1)
		case field.str != nil && c == '"':
			begin := len(od.values)
			var err error
			od.values, err = r.AppendString(od.values)
			od.assigns = append(od.assigns, stringAssign{field: field.str(v), start: begin, end: len(od.values)})
			return err
		case field.str != nil:
			offset := r.Offset() - 1 - start
			err := r.Skip(c, 1)
			od.problems = append(od.problems, fieldProblem{
				field: field.name, offset: offset, reason: fmt.Sprintf("JSON %s where a string was expected", jsonstream.Kind(c)),
			})
			return err
		}
		offset := r.Offset() - 1 - start
		if field.stream != nil {
			problem, err := field.stream(v, r, c)
			if problem != nil {
				od.problems = append(od.problems, fieldProblem{field: field.name, offset: offset, reason: problem.Error()})
			}
			return err
		}
		var err error
		if od.raw, err = r.AppendRaw(od.raw[:0], c, 1); err == nil {
			if valueErr := field.raw(v, od.raw); valueErr != nil {
				od.problems = append(od.problems, fieldProblem{field: field.name, offset: offset, reason: valueErr.Error()})
			}
		}
		return err
	})
	if err != nil {
		return err
	}
	values := string(od.values)
	for _, a := range od.assigns {
		*a.field = values[a.start:a.end]
	}
	return nil
}

// readObject reads the members of an object whose '{' was consumed: for
// each, it reads the key into *key and calls member with the first byte of
// the value, which member must read.
func readObject(r *jsonstream.Reader, key *[]byte, member func(c byte) error) error {
	c, err := r.NextByte()
	if err != nil || c == '}' {
		return err
	}
	for {
		if c != '"' {
			return r.ExpectedKey(c)
		}
		if *key, err = r.AppendString((*key)[:0]); err != nil {
			return err
		}
		if c, err = r.NextByte(); err != nil {
			return err
		}
		if c != ':' {
			return r.ExpectedColon(c)
		}
		if c, err = r.NextByte(); err != nil {
			return err
		}
		if err := member(c); err != nil {
			return err
		}
		if c, err = r.NextByte(); err != nil || c == '}' {
			return err
		}
		if c != ',' {
			return r.ExpectedObjectSeparator(c)
		}
		if c, err = r.NextByte(); err != nil {
			return err
		}
	}
}

// readArray reads the elements of an array whose '[' was consumed, calling
// element with the index and first byte of each, which element must read.
func readArray(r *jsonstream.Reader, element func(i int, c byte) error) error {
	c, err := r.NextByte()
	if err != nil || c == ']' {
		return err
	}
	for i := 0; ; i++ {
		if err := element(i, c); err != nil {
			return err
		}
		if c, err = r.NextByte(); err != nil || c == ']' {
			return err
		}
		if c != ',' {
			return r.ExpectedArraySeparator(c)
		}
		if c, err = r.NextByte(); err != nil {
			return err
		}
	}
}

// describeStart names the value an answer starts with, c its first byte.
func describeStart(r *jsonstream.Reader, c byte) (string, error) {
	switch c {
	case '{', '[':
		return fmt.Sprintf("%q", string(c)), nil
	case '"':
		s, err := r.AppendString(nil)
		return fmt.Sprintf("the string %q", truncate(string(s), 64)), err
	}
	raw, err := r.AppendRaw(nil, c, 0)
	return truncate(string(raw), 64), err
}

func article(noun string) string {
	switch noun[0] {
	case 'a', 'e', 'i', 'o', 'u':
		return "an " + noun
	}
	return "a " + noun
}

// appendFoldedName appends key folded as encoding/json folds keys to match
// them without regard to case: ASCII letters to upper case, other runes to
// the smallest rune of their fold set.
func appendFoldedName(folded, key []byte) []byte {
	for i := 0; i < len(key); {
		if c := key[i]; c < utf8.RuneSelf {
			if 'a' <= c && c <= 'z' {
				c -= 'a' - 'A'
			}
			folded = append(folded, c)
			i++
			continue
		}
		r, n := utf8.DecodeRune(key[i:])
		folded = utf8.AppendRune(folded, smallestFold(r))
		i += n
	}
	return folded
}

// smallestFold walks r's fold set, which unicode.SimpleFold visits in
// increasing order before wrapping around to its smallest rune.
func smallestFold(r rune) rune {
	for {
		next := unicode.SimpleFold(r)
		if next <= r {
			return next
		}
		r = next
	}
}
