package microsoft_defender

import (
	"net/url"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// The exact and URL-escaped forms of each secret are redacted; other
// text, and an empty secret, are left alone.
func TestRedact(t *testing.T) {
	for body, want := range map[string]string{
		`echo S3cr3t-Value~with/special+chars= end`:                              `echo [redacted] end`,
		`client_secret=S3cr3t-Value~with%2Fspecial%2Bchars%3D&x=1`:               `client_secret=[redacted]&x=1`,
		`/path/S3cr3t-Value~with%2Fspecial+chars=/end`:                           `/path/[redacted]/end`,
		`twice S3cr3t-Value~with/special+chars=S3cr3t-Value~with/special+chars=`: `twice [redacted][redacted]`,
		`refresh 0.ARfresh-token-value-that-must-not-leak`:                       `refresh [redacted]`,
		`a &amp; b \u00e9 %41 <b>bold</b>`:                                       `a &amp; b \u00e9 %41 <b>bold</b>`,
	} {
		require.Equal(t, want, redact(body, testClientSecret, "", testRefreshToken), body)
	}
}

// A one-character secret is redacted where it stands, the markers written
// for it are not searched again: a message grows by the marker per
// occurrence, not without bound.
func TestRedactOneCharacterSecret(t *testing.T) {
	require.Equal(t, "tok[redacted]n [redacted]", redact("token e", "e"))
	require.Equal(t, "[redacted] [redacted] x", redact("a/ a%2F x", "a/", "a"), "forms of two secrets in one pass")
}

// An API error answer is quoted short, its control characters replaced,
// after the secrets were redacted in the whole of what was read: a secret
// crossing the cut is not quoted in part.
func TestBodySnippet(t *testing.T) {
	pad := strings.Repeat("x", maxQuotedBody-len("see ")-5)
	require.Equal(t, `body "`+pad+`see [reda"`, bodySnippet([]byte(pad+"see "+testAccessToken+" and more"), testAccessToken))
	require.Equal(t, "body \"a  b c\ufffd[redacted]\"", bodySnippet([]byte("a\r\nb\tc\x1b"+url.QueryEscape(testClientSecret)), testClientSecret))
	require.Equal(t, "empty body", bodySnippet([]byte(" \n ")))
}

func TestCheckBearerToken(t *testing.T) {
	for token, want := range map[string]string{
		"eyJ0eXAi.eyJhdWQi.c2ln-_~+/": "",
		"YWJj==":                      "",
		"":                            "it is empty",
		"==":                          "it is empty",
		"abc\r\nX-Injected: 1":        "byte 3 is 0x0d, not allowed in a bearer token (RFC 6750)",
		"abc def":                     "byte 3 is 0x20, not allowed in a bearer token (RFC 6750)",
		"abc=def":                     "byte 3 is '=', allowed only as padding at the end of a bearer token (RFC 6750)",
		"tok\xe2\x80\xa8":             "byte 3 is 0xe2, not allowed in a bearer token (RFC 6750)",
	} {
		err := checkBearerToken(token)
		if want == "" {
			require.NoError(t, err, "%q", token)
			continue
		}
		require.EqualError(t, err, want, "%q", token)
	}
}
