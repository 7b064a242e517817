// Package jsonstream reads JSON from a stream one token at a time, through a
// fixed-size buffer, without reflection. It accepts and rejects exactly the
// documents encoding/json does and unescapes strings the same way (invalid
// UTF-8 and lone surrogates become U+FFFD), so a caller that maps keys to
// fields itself decodes large arrays several times faster than
// json.Decoder, in memory that does not grow with the input.
package jsonstream

import (
	"errors"
	"fmt"
	"io"
	"strconv"
	"unicode/utf16"
	"unicode/utf8"
)

// maxEmptyReads is how many reads that return nothing, and no error, the
// Reader takes before it gives up on the stream, as bufio does.
const maxEmptyReads = 100

// MaxDepth is how deeply arrays and objects may nest, as in encoding/json.
const MaxDepth = 10000

// ErrEndOfInput means the input ended inside a JSON value.
var ErrEndOfInput = errors.New("unexpected end of JSON input")

// SyntaxError is malformed JSON at Offset, the number of bytes read up to
// and including the offending one.
type SyntaxError struct {
	Offset int64
	msg    string
}

func (e *SyntaxError) Error() string {
	return e.msg
}

// Reader reads JSON values from a stream. Errors of the stream other than
// io.EOF are returned as they are.
type Reader struct {
	src    io.Reader
	buf    []byte
	pos    int    // next byte to read in buf
	end    int    // bytes of buf that hold data
	base   int64  // stream offset of buf[0]
	srcErr error  // the first error of src, io.EOF included
	stack  []byte // open containers while skipping, '{' or '['
	tee    tee
}

// tee copies the bytes the reader consumes, as they are, up to a limit.
type tee struct {
	on    bool
	dst   []byte
	from  int // in buf: the first byte not yet copied
	limit int
	over  bool // bytes past the limit were consumed
}

// StartTee starts copying what the reader consumes, beginning with the
// byte last consumed (a value's first byte), keeping at most limit bytes.
func (r *Reader) StartTee(dst []byte, limit int) {
	r.tee = tee{on: true, dst: dst[:0], from: max(r.pos-1, 0), limit: limit}
}

// StopTee ends the copy. It returns the bytes consumed since StartTee, and
// false when there were more than its limit, which were not kept.
func (r *Reader) StopTee() ([]byte, bool) {
	r.teeUpTo(r.pos)
	t := r.tee
	r.tee = tee{}
	return t.dst, !t.over
}

func (r *Reader) teeUpTo(pos int) {
	if !r.tee.on {
		return
	}
	chunk := r.buf[r.tee.from:pos]
	if room := r.tee.limit - len(r.tee.dst); len(chunk) > room {
		chunk, r.tee.over = chunk[:max(room, 0)], true
	}
	r.tee.dst = append(r.tee.dst, chunk...)
	r.tee.from = pos
}

// NewReader reads from src through a buffer of bufSize bytes.
func NewReader(src io.Reader, bufSize int) *Reader {
	return &Reader{src: src, buf: make([]byte, max(bufSize, 16))}
}

// NewBytesReader reads the JSON in b, which it neither copies nor changes.
func NewBytesReader(b []byte) *Reader {
	return &Reader{buf: b, end: len(b), srcErr: io.EOF}
}

// Offset is the number of bytes consumed so far.
func (r *Reader) Offset() int64 {
	return r.base + int64(r.pos)
}

// fill makes at least n bytes available from pos unless the stream ends
// first; it reports whether they are.
func (r *Reader) fill(n int) bool {
	if r.end-r.pos >= n {
		return true
	}
	if r.srcErr != nil {
		return false // nothing more will come; buf stays as it is
	}
	if r.pos > 0 {
		r.teeUpTo(r.pos)
		r.tee.from = 0
		copy(r.buf, r.buf[r.pos:r.end])
		r.base += int64(r.pos)
		r.end -= r.pos
		r.pos = 0
	}
	for empty := 0; r.end < n && r.srcErr == nil; {
		k, err := r.src.Read(r.buf[r.end:])
		r.end += k
		switch {
		case err != nil:
			r.srcErr = err
		case k > 0:
			empty = 0
		default:
			if empty++; empty == maxEmptyReads {
				r.srcErr = io.ErrNoProgress
			}
		}
	}
	return r.end >= n
}

// endErr is the error of a value cut off by the end of the stream.
func (r *Reader) endErr() error {
	if r.srcErr != nil && !errors.Is(r.srcErr, io.EOF) {
		return r.srcErr
	}
	return ErrEndOfInput
}

func (r *Reader) syntaxError(c byte, context string) error {
	return &SyntaxError{Offset: r.Offset(), msg: "invalid character " + quoteChar(c) + " " + context}
}

// NextByte consumes and returns the next byte that is not whitespace.
func (r *Reader) NextByte() (byte, error) {
	for {
		if r.pos == r.end && !r.fill(1) {
			return 0, r.endErr()
		}
		c := r.buf[r.pos]
		r.pos++
		if c != ' ' && c != '\n' && c != '\r' && c != '\t' {
			return c, nil
		}
	}
}

// ExpectEnd checks that nothing but whitespace is left in the stream.
func (r *Reader) ExpectEnd() error {
	c, err := r.NextByte()
	switch {
	case errors.Is(err, ErrEndOfInput):
		return nil
	case err != nil:
		return err
	}
	return r.syntaxError(c, "after top-level value")
}

// ExpectedValue is the error for c where a value should begin.
func (r *Reader) ExpectedValue(c byte) error {
	return r.syntaxError(c, "looking for beginning of value")
}

// ExpectedKey is the error for c where an object key should begin.
func (r *Reader) ExpectedKey(c byte) error {
	return r.syntaxError(c, "looking for beginning of object key string")
}

// ExpectedColon is the error for c where a colon should follow a key.
func (r *Reader) ExpectedColon(c byte) error {
	return r.syntaxError(c, "after object key")
}

// ExpectedObjectSeparator is the error for c where a comma or a closing
// brace should follow a member.
func (r *Reader) ExpectedObjectSeparator(c byte) error {
	return r.syntaxError(c, "after object key:value pair")
}

// ExpectedArraySeparator is the error for c where a comma or a closing
// bracket should follow an element.
func (r *Reader) ExpectedArraySeparator(c byte) error {
	return r.syntaxError(c, "after array element")
}

// rawStringStop marks the bytes that end a run of string content kept as
// written: the end, an escape, a control character.
var rawStringStop = func() (t [256]bool) {
	for c := range 0x20 {
		t[c] = true
	}
	t['"'], t['\\'] = true, true
	return t
}()

// stringStop marks the bytes that end a run of string content that is
// unescaped: also the first byte of a multi-byte rune, whose UTF-8 must be
// checked.
var stringStop = func() [256]bool {
	t := rawStringStop
	for c := utf8.RuneSelf; c < 256; c++ {
		t[c] = true
	}
	return t
}()

// appendRun consumes the bytes from pos up to the next one that stop
// marks, appending them to dst when capture is set; the marked byte is then
// at pos. It fails at the end of the stream.
func (r *Reader) appendRun(dst []byte, stop *[256]bool, capture bool) ([]byte, error) {
	for {
		i := r.pos
		for i < r.end && !stop[r.buf[i]] {
			i++
		}
		if capture {
			dst = append(dst, r.buf[r.pos:i]...)
		}
		r.pos = i
		if i < r.end {
			return dst, nil
		}
		if !r.fill(1) {
			return dst, r.endErr()
		}
	}
}

// AppendString reads the rest of a string whose opening quote was consumed
// and appends its unescaped content to dst.
func (r *Reader) AppendString(dst []byte) ([]byte, error) {
	for {
		var err error
		if dst, err = r.appendRun(dst, &stringStop, true); err != nil {
			return dst, err
		}
		c := r.buf[r.pos]
		switch {
		case c == '"':
			r.pos++
			return dst, nil
		case c == '\\':
			var err error
			if dst, err = r.appendEscape(dst); err != nil {
				return dst, err
			}
		case c < 0x20:
			r.pos++
			return dst, r.syntaxError(c, "in string literal")
		default:
			r.fill(utf8.UTFMax)
			ru, size := utf8.DecodeRune(r.buf[r.pos:r.end])
			if ru == utf8.RuneError && size == 1 {
				dst = utf8.AppendRune(dst, utf8.RuneError)
			} else {
				dst = append(dst, r.buf[r.pos:r.pos+size]...)
			}
			r.pos += size
		}
	}
}

// appendEscape decodes the escape sequence at pos, as encoding/json does:
// a surrogate pair becomes one rune, a lone surrogate U+FFFD.
func (r *Reader) appendEscape(dst []byte) ([]byte, error) {
	r.fill(12) // \uD83D\uDE00, the longest sequence decoded at once
	escape, err := r.checkEscape()
	if err != nil {
		return dst, err
	}
	switch escape[1] {
	case 'b':
		return append(dst, '\b'), nil
	case 'f':
		return append(dst, '\f'), nil
	case 'n':
		return append(dst, '\n'), nil
	case 'r':
		return append(dst, '\r'), nil
	case 't':
		return append(dst, '\t'), nil
	case 'u':
		ru, _ := parseHex4(escape[2:6])
		if utf16.IsSurrogate(ru) {
			if r.end-r.pos >= 6 && r.buf[r.pos] == '\\' && r.buf[r.pos+1] == 'u' {
				if ru2, ok := parseHex4(r.buf[r.pos+2 : r.pos+6]); ok {
					if pair := utf16.DecodeRune(ru, ru2); pair != utf8.RuneError {
						r.pos += 6
						return utf8.AppendRune(dst, pair), nil
					}
				}
			}
			ru = utf8.RuneError
		}
		return utf8.AppendRune(dst, ru), nil
	}
	return append(dst, escape[1]), nil // '"', '\\' or '/'
}

// hex4 reads the four hex digits of a \u escape.
func (r *Reader) hex4() (rune, error) {
	var v rune
	for range 4 {
		if r.pos == r.end {
			return 0, r.endErr()
		}
		c := r.buf[r.pos]
		r.pos++
		d, ok := hexDigit(c)
		if !ok {
			return 0, r.syntaxError(c, "in \\u hexadecimal character escape")
		}
		v = v<<4 | d
	}
	return v, nil
}

func parseHex4(b []byte) (rune, bool) {
	var v rune
	for _, c := range b {
		d, ok := hexDigit(c)
		if !ok {
			return 0, false
		}
		v = v<<4 | d
	}
	return v, true
}

func hexDigit(c byte) (rune, bool) {
	switch {
	case '0' <= c && c <= '9':
		return rune(c - '0'), true
	case 'a' <= c && c <= 'f':
		return rune(c - 'a' + 10), true
	case 'A' <= c && c <= 'F':
		return rune(c - 'A' + 10), true
	}
	return 0, false
}

// appendRawString reads the rest of a string whose opening quote was
// consumed, checking its escapes, and appends its bytes as they are, closing
// quote included, to dst when capture is set.
func (r *Reader) appendRawString(dst []byte, capture bool) ([]byte, error) {
	for {
		var err error
		if dst, err = r.appendRun(dst, &rawStringStop, capture); err != nil {
			return dst, err
		}
		c := r.buf[r.pos]
		r.pos++
		switch {
		case c == '"':
			if capture {
				dst = append(dst, c)
			}
			return dst, nil
		case c < 0x20:
			return dst, r.syntaxError(c, "in string literal")
		}
		// A backslash: check the escape and keep it as written.
		r.pos--
		r.fill(6) // \uXXXX, the longest escape
		escape, err := r.checkEscape()
		if err != nil {
			return dst, err
		}
		if capture {
			dst = append(dst, escape...)
		}
	}
}

// checkEscape consumes the escape sequence at pos and returns it as written.
func (r *Reader) checkEscape() ([]byte, error) {
	start := r.pos
	if r.end-r.pos < 2 {
		r.pos = r.end
		return nil, r.endErr()
	}
	c := r.buf[r.pos+1]
	r.pos += 2
	switch c {
	case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
	case 'u':
		if _, err := r.hex4(); err != nil {
			return nil, err
		}
	default:
		return nil, r.syntaxError(c, "in string escape code")
	}
	return r.buf[start:r.pos], nil
}

// Skip reads the rest of a value whose first byte, c, was consumed, checking
// its syntax. depth is the number of containers already open around it.
func (r *Reader) Skip(c byte, depth int) error {
	_, err := r.appendValue(nil, c, depth, false)
	return err
}

// AppendRaw reads the rest of a value whose first byte, c, was consumed and
// appends the value as written, minus whitespace between tokens, to dst.
func (r *Reader) AppendRaw(dst []byte, c byte, depth int) ([]byte, error) {
	return r.appendValue(dst, c, depth, true)
}

func (r *Reader) appendValue(dst []byte, c byte, depth int, capture bool) ([]byte, error) {
	stack := r.stack[:0]
	defer func() { r.stack = stack[:0] }()
	var err error
	for {
		// A value begins with c.
		switch {
		case c == '{' || c == '[':
			if depth+len(stack)+1 > MaxDepth {
				return dst, &SyntaxError{Offset: r.Offset(), msg: fmt.Sprintf("nesting deeper than %d levels", MaxDepth)}
			}
			stack = append(stack, c)
			if capture {
				dst = append(dst, c)
			}
			if c, err = r.NextByte(); err != nil {
				return dst, err
			}
			if c == '}' && stack[len(stack)-1] == '{' || c == ']' && stack[len(stack)-1] == '[' {
				stack = stack[:len(stack)-1]
				if capture {
					dst = append(dst, c)
				}
				break
			}
			if stack[len(stack)-1] == '{' {
				if dst, c, err = r.member(dst, c, capture); err != nil {
					return dst, err
				}
			}
			continue
		case c == '"':
			if capture {
				dst = append(dst, c)
			}
			if dst, err = r.appendRawString(dst, capture); err != nil {
				return dst, err
			}
		case c == '-' || '0' <= c && c <= '9':
			if dst, err = r.appendNumber(dst, c, capture); err != nil {
				return dst, err
			}
		case c == 't' || c == 'f' || c == 'n':
			if dst, err = r.appendLiteral(dst, c, capture); err != nil {
				return dst, err
			}
		default:
			return dst, r.ExpectedValue(c)
		}
		// A value ended: close the containers it completes, or move to the
		// next value of the innermost one.
		for {
			if len(stack) == 0 {
				return dst, nil
			}
			if c, err = r.NextByte(); err != nil {
				return dst, err
			}
			top := stack[len(stack)-1]
			if c == ',' {
				if capture {
					dst = append(dst, c)
				}
				if c, err = r.NextByte(); err != nil {
					return dst, err
				}
				if top == '{' {
					if dst, c, err = r.member(dst, c, capture); err != nil {
						return dst, err
					}
				}
				break
			}
			if top == '{' && c != '}' {
				return dst, r.ExpectedObjectSeparator(c)
			}
			if top == '[' && c != ']' {
				return dst, r.ExpectedArraySeparator(c)
			}
			stack = stack[:len(stack)-1]
			if capture {
				dst = append(dst, c)
			}
		}
	}
}

// member reads an object key starting at c and its colon, and returns the
// first byte of the member's value.
func (r *Reader) member(dst []byte, c byte, capture bool) ([]byte, byte, error) {
	if c != '"' {
		return dst, 0, r.ExpectedKey(c)
	}
	if capture {
		dst = append(dst, c)
	}
	dst, err := r.appendRawString(dst, capture)
	if err != nil {
		return dst, 0, err
	}
	if c, err = r.NextByte(); err != nil {
		return dst, 0, err
	}
	if c != ':' {
		return dst, 0, r.ExpectedColon(c)
	}
	if capture {
		dst = append(dst, c)
	}
	c, err = r.NextByte()
	return dst, c, err
}

func isDigit(c byte) bool {
	return '0' <= c && c <= '9'
}

// peek returns the next byte without consuming it; ok is false at the end
// of the stream.
func (r *Reader) peek() (byte, bool) {
	if r.pos == r.end && !r.fill(1) {
		return 0, false
	}
	return r.buf[r.pos], true
}

// appendNumber reads the rest of a number whose first byte, c, was consumed.
func (r *Reader) appendNumber(dst []byte, c byte, capture bool) ([]byte, error) {
	if capture {
		dst = append(dst, c)
	}
	next := func() (byte, bool) {
		b, ok := r.peek()
		return b, ok
	}
	take := func(b byte) {
		r.pos++
		if capture {
			dst = append(dst, b)
		}
	}
	// digits consumes one or more digits; the first one is required.
	digits := func() error {
		b, ok := next()
		if !ok {
			return r.endErr()
		}
		if !isDigit(b) {
			r.pos++
			return r.syntaxError(b, "in numeric literal")
		}
		for ok && isDigit(b) {
			take(b)
			b, ok = next()
		}
		return nil
	}
	if c == '-' {
		b, ok := next()
		if !ok {
			return dst, r.endErr()
		}
		if !isDigit(b) {
			r.pos++
			return dst, r.syntaxError(b, "in numeric literal")
		}
		take(b)
		c = b
	}
	if c != '0' {
		for b, ok := next(); ok && isDigit(b); b, ok = next() {
			take(b)
		}
	}
	if b, ok := next(); ok && b == '.' {
		take(b)
		if err := digits(); err != nil {
			return dst, err
		}
	}
	if b, ok := next(); ok && (b == 'e' || b == 'E') {
		take(b)
		if b, ok := next(); ok && (b == '+' || b == '-') {
			take(b)
		}
		if err := digits(); err != nil {
			return dst, err
		}
	}
	return dst, nil
}

// appendLiteral reads the rest of true, false or null, whose first byte, c,
// was consumed.
func (r *Reader) appendLiteral(dst []byte, c byte, capture bool) ([]byte, error) {
	var word string
	switch c {
	case 't':
		word = "true"
	case 'f':
		word = "false"
	default:
		word = "null"
	}
	for i := 1; i < len(word); i++ {
		b, ok := r.peek()
		if !ok {
			return dst, r.endErr()
		}
		r.pos++
		if b != word[i] {
			return dst, r.syntaxError(b, fmt.Sprintf("in literal %s (expecting %s)", word, quoteChar(word[i])))
		}
	}
	if capture {
		dst = append(dst, word...)
	}
	return dst, nil
}

// Kind names the JSON type of a value that begins with c, as encoding/json
// does in its type errors.
func Kind(c byte) string {
	switch c {
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

func quoteChar(c byte) string {
	if c == '\'' {
		return `'\''`
	}
	if c == '"' {
		return `'"'`
	}
	s := strconv.Quote(string(rune(c)))
	return "'" + s[1:len(s)-1] + "'"
}
