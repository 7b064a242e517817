package microsoft_defender

import (
	"bytes"
	"html"
	"net/url"
	"slices"
	"strings"
	"unicode/utf16"
	"unicode/utf8"
)

// A server can echo a secret in forms that a plain search misses: JSON or
// C escapes (\u0053), HTML entities (&#83; &#x53; &sol;), percent-encoding,
// any mix of them and of nestings (&amp;#83;), or with markup between its
// characters (S<b>3</b>cr...). Redaction therefore also searches a decoded
// copy of the text in which every byte remembers the span of the original
// it was decoded from, and blanks out the original spans. The message keeps
// the server's own words; only the secret goes.

const redactedMark = "[redacted]"

// tooDeep replaces a text whose encodings are nested deeper than
// maxDecodeRounds, which no server sends but one hiding a secret could.
const tooDeep = "[redacted: encoded too deeply to be checked for secrets]"

// maxQuotedInput bounds the part of a body that is decoded and searched
// for the snippet of a message: far more than the snippet, so that a
// secret inside the snippet is seen whole however it is encoded, and
// little enough for an error path.
const maxQuotedInput = 16 << 10

// decodedText is a text with every escape decoded; each byte of text came
// from the bytes start[i] to end[i] of the original.
type decodedText struct {
	text       []byte
	start, end []int
}

// maxDecodeRounds bounds how deeply nested encodings are undone (each round
// undoes one level everywhere), and so the cost of a hostile text.
const maxDecodeRounds = 16

// decodeText decodes s until nothing decodes any more; ok is false when
// that takes more than maxDecodeRounds rounds.
func decodeText(s []byte) (d decodedText, ok bool) {
	d = decodedText{text: s, start: make([]int, len(s)), end: make([]int, len(s))}
	for i := range s {
		d.start[i], d.end[i] = i, i+1
	}
	for range maxDecodeRounds + 1 {
		next, changed := d.decodeOnce()
		if !changed {
			return d, true
		}
		d = next
	}
	return d, false
}

func (d decodedText) decodeOnce() (decodedText, bool) {
	t := d.text
	if !bytes.ContainsAny(t, `\&%`) {
		return d, false
	}
	out := decodedText{
		text:  make([]byte, 0, len(t)),
		start: make([]int, 0, len(t)),
		end:   make([]int, 0, len(t)),
	}
	changed := false
	for i := 0; i < len(t); {
		n, decoded := decodeAt(t[i:])
		if n == 0 {
			n, decoded = 1, t[i:i+1]
		} else {
			changed = true
		}
		for _, b := range decoded {
			out.text = append(out.text, b)
			out.start = append(out.start, d.start[i])
			out.end = append(out.end, d.end[i+n-1])
		}
		i += n
	}
	return out, changed
}

// decodeAt decodes the escape that b starts with: it returns the bytes it
// took (0 when b starts with none) and what they stand for, which always
// differs from them.
func decodeAt(b []byte) (int, []byte) {
	switch b[0] {
	case '\\':
		return decodeBackslash(b)
	case '%':
		if v, ok := hexValue(b[1:], 2); ok {
			return 3, []byte{byte(v)}
		}
	case '&':
		return decodeEntity(b)
	}
	return 0, nil
}

// decodeBackslash decodes the escapes of JSON and C strings.
func decodeBackslash(b []byte) (int, []byte) {
	if len(b) < 2 {
		return 0, nil
	}
	switch b[1] {
	case 'u':
		v, ok := hexValue(b[2:], 4)
		if !ok {
			return 0, nil
		}
		r := rune(v)
		if utf16.IsSurrogate(r) {
			if len(b) >= 12 && b[6] == '\\' && b[7] == 'u' {
				if low, ok := hexValue(b[8:], 4); ok {
					if pair := utf16.DecodeRune(r, rune(low)); pair != utf8.RuneError {
						return 12, utf8.AppendRune(nil, pair)
					}
				}
			}
			r = utf8.RuneError
		}
		return 6, utf8.AppendRune(nil, r)
	case 'x':
		if v, ok := hexValue(b[2:], 2); ok {
			return 4, []byte{byte(v)}
		}
	case '"', '\\', '/', '\'':
		return 2, b[1:2]
	case 'b':
		return 2, []byte{'\b'}
	case 'f':
		return 2, []byte{'\f'}
	case 'n':
		return 2, []byte{'\n'}
	case 'r':
		return 2, []byte{'\r'}
	case 't':
		return 2, []byte{'\t'}
	}
	return 0, nil
}

// decodeEntity decodes an HTML character reference, named, decimal or
// hexadecimal, with or without its semicolon, as html.UnescapeString does.
func decodeEntity(b []byte) (int, []byte) {
	j := 1
	switch {
	case j+1 < len(b) && b[j] == '#' && (b[j+1] == 'x' || b[j+1] == 'X'):
		j = skip(b, j+2, isHexDigit)
	case j < len(b) && b[j] == '#':
		j = skip(b, j+1, isDigit)
	default:
		j = skip(b, j, isAlnum)
	}
	if j < len(b) && b[j] == ';' {
		j++
	}
	candidate := string(b[:j])
	decoded := html.UnescapeString(candidate)
	if decoded == candidate {
		return 0, nil
	}
	return j, []byte(decoded)
}

func skip(b []byte, j int, class func(byte) bool) int {
	for j < len(b) && class(b[j]) {
		j++
	}
	return j
}

func hexValue(b []byte, n int) (uint32, bool) {
	if len(b) < n {
		return 0, false
	}
	var v uint32
	for _, c := range b[:n] {
		switch {
		case '0' <= c && c <= '9':
			v = v<<4 | uint32(c-'0')
		case 'a' <= c && c <= 'f':
			v = v<<4 | uint32(c-'a'+10)
		case 'A' <= c && c <= 'F':
			v = v<<4 | uint32(c-'A'+10)
		default:
			return 0, false
		}
	}
	return v, true
}

func isDigit(c byte) bool    { return '0' <= c && c <= '9' }
func isHexDigit(c byte) bool { return isDigit(c) || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F' }
func isAlnum(c byte) bool    { return isDigit(c) || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' }

// markupAt returns the length of the tag or comment b starts with, or 0.
func markupAt(b []byte) int {
	if bytes.HasPrefix(b, []byte("<!--")) {
		if end := bytes.Index(b[4:], []byte("-->")); end >= 0 {
			return 4 + end + 3
		}
		return 0
	}
	if len(b) == 0 || b[0] != '<' {
		return 0
	}
	if end := bytes.IndexAny(b[1:], "<>"); end >= 0 && b[1+end] == '>' {
		return end + 2
	}
	return 0
}

// matchAt matches p against t from i on, skipping markup between the bytes
// of p. It returns where the match ended and how many bytes of p it
// matched.
func matchAt(t []byte, i int, p []byte) (end, matched int) {
	j := i
	for k := 0; k < len(p); {
		if j < len(t) && t[j] == p[k] {
			j, k = j+1, k+1
			continue
		}
		if n := markupAt(t[j:]); k > 0 && n > 0 {
			j += n
			continue
		}
		return j, k
	}
	return j, len(p)
}

// secretPatterns returns what a secret looks like once decoded: itself,
// its own decoding, and its query-escaped form decoded, which keeps '+'
// for a space.
func secretPatterns(secrets []string) [][]byte {
	var patterns [][]byte
	add := func(p []byte) {
		if len(p) > 0 && !slices.ContainsFunc(patterns, func(q []byte) bool { return bytes.Equal(p, q) }) {
			patterns = append(patterns, p)
		}
	}
	for _, secret := range secrets {
		for _, form := range []string{secret, strings.ReplaceAll(secret, " ", "+")} {
			add([]byte(form))
			if d, ok := decodeText([]byte(form)); ok {
				add(d.text)
			}
		}
	}
	return patterns
}

// redact blanks out secrets a server echoed back: an error page that
// repeats the Authorization header or the token request's form, as they
// were sent, URL-encoded, or in any of the forms decodeText undoes.
func redact(body []byte, secrets ...string) []byte {
	live := make([]string, 0, len(secrets))
	for _, secret := range secrets {
		if secret == "" {
			continue
		}
		live = append(live, secret)
		for _, form := range []string{secret, url.QueryEscape(secret), url.PathEscape(secret)} {
			body = bytes.ReplaceAll(body, []byte(form), []byte(redactedMark))
		}
	}
	if len(live) == 0 {
		return body
	}
	d, ok := decodeText(body)
	if !ok {
		return []byte(tooDeep)
	}
	var spans [][2]int
	for _, p := range secretPatterns(live) {
		t := d.text
		for i := 0; i < len(t); i++ {
			next := bytes.IndexByte(t[i:], p[0])
			if next < 0 {
				break
			}
			i += next
			if end, matched := matchAt(t, i, p); matched == len(p) {
				spans = append(spans, [2]int{d.start[i], d.end[end-1]})
			}
		}
	}
	if len(spans) == 0 {
		return body
	}
	slices.SortFunc(spans, func(a, b [2]int) int { return a[0] - b[0] })
	out := make([]byte, 0, len(body))
	at := 0
	for k := 0; k < len(spans); {
		start, end := spans[k][0], spans[k][1]
		for k++; k < len(spans) && spans[k][0] <= end; k++ {
			end = max(end, spans[k][1])
		}
		out = append(append(out, body[at:start]...), redactedMark...)
		at = end
	}
	return append(out, body[at:]...)
}

// trimPartialSecret cuts off the end of a text that was cut short when
// that end is the beginning of a secret, in any form redact finds, so that
// the cut does not leave part of a secret that redact could not see whole.
func trimPartialSecret(s []byte, secrets []string) []byte {
	patterns := secretPatterns(secrets)
	for len(patterns) > 0 {
		d, ok := decodeText(s)
		if !ok {
			return []byte(tooDeep)
		}
		t := d.text
		cut := -1
		for _, p := range patterns {
			for i := 0; i < len(t) && (cut < 0 || i < cut); i++ {
				next := bytes.IndexByte(t[i:], p[0])
				if next < 0 {
					break
				}
				i += next
				if end, matched := matchAt(t, i, p); matched < len(p) && unfinished(t[end:]) && (cut < 0 || i < cut) {
					cut = i
				}
			}
		}
		if cut < 0 {
			return s
		}
		s = s[:d.start[cut]]
	}
	return s
}

// unfinished reports whether rest is nothing, or the start of an escape or
// of markup that the cut ended.
func unfinished(rest []byte) bool {
	if len(rest) == 0 {
		return true
	}
	switch rest[0] {
	case '<':
		if bytes.HasPrefix(rest, []byte("<!--")) {
			return !bytes.Contains(rest[4:], []byte("-->"))
		}
		return bytes.IndexByte(rest, '>') < 0
	case '&':
		rest = rest[1:]
		if len(rest) > 0 && rest[0] == '#' {
			rest = rest[1:]
		}
		return skip(rest, 0, isAlnum) == len(rest)
	case '%':
		return len(rest) <= 2 && skip(rest, 1, isHexDigit) == len(rest)
	case '\\':
		switch {
		case len(rest) == 1:
			return true
		case rest[1] == 'u':
			return len(rest) <= 5 && skip(rest, 2, isHexDigit) == len(rest)
		case rest[1] == 'x':
			return len(rest) <= 3 && skip(rest, 2, isHexDigit) == len(rest)
		}
	}
	return false
}
