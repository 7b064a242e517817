package jsonstream

import (
	"encoding/json"
	"errors"
	"io"
	"strconv"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/stretchr/testify/require"
)

// decodeAny decodes one value the way json.Unmarshal into an interface{}
// does, through the Reader only, and requires nothing but whitespace after
// it.
func decodeAny(r *Reader) (any, error) {
	c, err := r.NextByte()
	if err != nil {
		return nil, err
	}
	v, err := value(r, c, 0)
	if err != nil {
		return nil, err
	}
	if err := r.ExpectEnd(); err != nil {
		return nil, err
	}
	return v, nil
}

func value(r *Reader, c byte, depth int) (any, error) {
	switch c {
	case '"':
		s, err := r.AppendString(nil)
		return string(s), err
	case '{', '[':
		if depth+1 > MaxDepth {
			return nil, errors.New("too deep")
		}
		return container(r, c, depth+1)
	}
	raw, err := r.AppendRaw(nil, c, depth)
	if err != nil {
		return nil, err
	}
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		return nil, err
	}
	return v, nil
}

func container(r *Reader, open byte, depth int) (any, error) {
	object := map[string]any{}
	var array []any
	closing := byte(']')
	if open == '{' {
		closing = '}'
	}
	c, err := r.NextByte()
	if err != nil {
		return nil, err
	}
	if c != closing {
		for {
			var key []byte
			if open == '{' {
				if c != '"' {
					return nil, r.ExpectedKey(c)
				}
				if key, err = r.AppendString(nil); err != nil {
					return nil, err
				}
				if c, err = r.NextByte(); err != nil {
					return nil, err
				}
				if c != ':' {
					return nil, r.ExpectedColon(c)
				}
				if c, err = r.NextByte(); err != nil {
					return nil, err
				}
			}
			v, err := value(r, c, depth)
			if err != nil {
				return nil, err
			}
			if open == '{' {
				object[string(key)] = v
			} else {
				array = append(array, v)
			}
			if c, err = r.NextByte(); err != nil {
				return nil, err
			}
			if c == closing {
				break
			}
			if c != ',' && open == '{' {
				return nil, r.ExpectedObjectSeparator(c)
			}
			if c != ',' {
				return nil, r.ExpectedArraySeparator(c)
			}
			if c, err = r.NextByte(); err != nil {
				return nil, err
			}
		}
	}
	if open == '{' {
		return object, nil
	}
	if array == nil {
		array = make([]any, 0)
	}
	return array, nil
}

// FuzzReaderMatchesEncodingJSON checks the Reader against encoding/json on
// any input, read one byte at a time so that every token crosses buffer
// refills, and read in place by NewBytesReader, which must not change it:
// both accept the same documents, the strings decode to the same values,
// and a value captured raw decodes as the original does.
func FuzzReaderMatchesEncodingJSON(f *testing.F) {
	for _, s := range []string{
		`{"a":"b\u00e9\ud83d\ude00\ud800x\"\\\/\b\f\n\r\t","n":[-0.5e+3,0,1E2,true,false,null],"o":{}}`,
		"\"\xff\xfe invalid UTF-8 \xed\xa0\x80 \xe2\x82\"", "\"\xe2\x82\xac\xf0\x9f\x98\x80\"",
		`[1,]`, `{"a" 1}`, `01`, `-`, `1.`, `1e`, `"\u12"`, `"\x"`, `tru`, `nul`,
		`"` + "\x01" + `"`, ` [ ] `, `{"a":1}x`, `"\uDBFF\uDFFF\uDC00"`, `[[[[[[]]]]]]`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var want any
		wantErr := json.Unmarshal(data, &want)
		var typeErr *json.UnmarshalTypeError
		if errors.As(wantErr, &typeErr) {
			return // a number beyond float64: valid JSON, no value to compare
		}
		original := string(data)
		for _, r := range []*Reader{NewReader(iotest.OneByteReader(strings.NewReader(original)), 16), NewBytesReader(data)} {
			got, err := decodeAny(r)
			if (err == nil) != (wantErr == nil) {
				t.Fatalf("encoding/json says %v, the Reader says %v", wantErr, err)
			}
			if err == nil {
				require.Equal(t, want, got)
			}
		}
		require.Equal(t, original, string(data), "NewBytesReader changed its input")
	})
}

func TestReaderErrors(t *testing.T) {
	tests := []struct {
		input string
		want  string
	}{
		{`{"a" 1}`, `invalid character '1' after object key at byte 6`},
		{`{"a":1 "b"}`, `invalid character '"' after object key:value pair at byte 8`},
		{`["a\x"]`, `invalid character 'x' in string escape code at byte 5`},
		{`["\u12g4"]`, `invalid character 'g' in \u hexadecimal character escape at byte 7`},
		{"[\"a\x01\"]", `invalid character '\x01' in string literal at byte 4`},
		{`[-x]`, `invalid character 'x' in numeric literal at byte 3`},
		{`[1.e5]`, `invalid character 'e' in numeric literal at byte 4`},
		{`[trux]`, `invalid character 'x' in literal true (expecting 'e') at byte 5`},
		{`[,]`, `invalid character ',' looking for beginning of value at byte 2`},
		{`{1:2}`, `invalid character '1' looking for beginning of object key string at byte 2`},
		{strings.Repeat("[", MaxDepth+1), `nesting deeper than 10000 levels at byte 10001`},
		{`["abc`, `unexpected end of JSON input at byte 5`},
		{`{"a":tr`, `unexpected end of JSON input at byte 7`},
	}
	for _, tt := range tests {
		t.Run(tt.input[:min(len(tt.input), 12)], func(t *testing.T) {
			r := NewReader(strings.NewReader(tt.input), 16)
			c, err := r.NextByte()
			require.NoError(t, err)
			if c == '{' && strings.Count(tt.input, "[") == 0 {
				_, err = container(r, c, 1)
			} else {
				err = r.Skip(c, 0)
			}
			var syntaxErr *SyntaxError
			offset := r.Offset()
			if errors.As(err, &syntaxErr) {
				offset = syntaxErr.Offset
			}
			require.Equal(t, tt.want, err.Error()+" at byte "+strconv.FormatInt(offset, 10))
		})
	}
}

// A read error of the stream is returned as it is, not as malformed JSON.
func TestReaderReturnsTheStreamsError(t *testing.T) {
	broken := errors.New("connection reset by peer")
	r := NewReader(io.MultiReader(strings.NewReader(`["abc`), iotest.ErrReader(broken)), 16)
	c, err := r.NextByte()
	require.NoError(t, err)
	require.Equal(t, byte('['), c)
	c, err = r.NextByte()
	require.NoError(t, err)
	_, err = r.AppendString(nil)
	require.ErrorIs(t, err, broken)
	require.Equal(t, byte('"'), c)
}

func TestAppendRawKeepsTheValueAsWritten(t *testing.T) {
	r := NewReader(strings.NewReader(`{ "a" : [ 1 , "x\u00e9\n" , { } ] , "b" : null } tail`), 16)
	c, err := r.NextByte()
	require.NoError(t, err)
	raw, err := r.AppendRaw([]byte("prefix:"), c, 0)
	require.NoError(t, err)
	require.Equal(t, `prefix:{"a":[1,"x\u00e9\n",{}],"b":null}`, string(raw))
	c, err = r.NextByte()
	require.NoError(t, err)
	require.Equal(t, byte('t'), c)
}

// emptyReader returns nothing, and no error, for ever.
type emptyReader struct{}

func (emptyReader) Read([]byte) (int, error) { return 0, nil }

// A stream that never makes progress is an error, not an endless loop.
func TestReaderGivesUpOnAStreamWithoutProgress(t *testing.T) {
	_, err := NewReader(emptyReader{}, 16).NextByte()
	require.ErrorIs(t, err, io.ErrNoProgress)
}

// The tee keeps the bytes of a value as they came, across buffer refills,
// and says when it had to stop at its limit.
func TestTeeCopiesWhatIsConsumed(t *testing.T) {
	value := `[ {"a": "` + strings.Repeat("x", 100) + `"}, 1 ]`
	for _, limit := range []int{len(value), len(value) - 1} {
		r := NewReader(iotest.OneByteReader(strings.NewReader(`{"k": `+value+`, "z": 2}`)), 16)
		for range 5 { // { "k" : — the value's first byte comes next
			if _, err := r.NextByte(); err != nil {
				t.Fatal(err)
			}
		}
		c, err := r.NextByte()
		if err != nil || c != '[' {
			t.Fatalf("got %q, %v", c, err)
		}
		r.StartTee(nil, limit)
		if err := r.Skip(c, 1); err != nil {
			t.Fatal(err)
		}
		got, whole := r.StopTee()
		if want := limit == len(value); whole != want || string(got) != value[:limit] {
			t.Fatalf("limit %d: got %q, whole %t", limit, got, whole)
		}
		if c, err := r.NextByte(); err != nil || c != ',' {
			t.Fatalf("after the value: %q, %v", c, err)
		}
	}
}
