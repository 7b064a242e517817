package microsoft_defender

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// Each echo of testClientSecret ("S3cr3t-Value~with/special+chars=") in a
// form that a server, a proxy or an error page might use.
func TestRedactFindsEncodedSecrets(t *testing.T) {
	tests := []struct {
		name string
		body string
		want string
	}{
		{"plain", `echo S3cr3t-Value~with/special+chars= end`, `echo [redacted] end`},
		{"query-escaped", `client_secret=S3cr3t-Value~with%2Fspecial%2Bchars%3D&x=1`, `client_secret=[redacted]&x=1`},
		{"JSON escapes, whole", `{"echo":"\u0053\u0033\u0063\u0072\u0033\u0074\u002d\u0056\u0061\u006c\u0075\u0065\u007e` +
			`\u0077\u0069\u0074\u0068\u002f\u0073\u0070\u0065\u0063\u0069\u0061\u006c\u002b\u0063\u0068\u0061\u0072\u0073\u003d"}`,
			`{"echo":"[redacted]"}`},
		{"JSON escapes, some, either case", `{"echo":"S3cr\u0033t-Value~with\/special\u002Bchars\u003D"}`, `{"echo":"[redacted]"}`},
		{"decimal entities", `<p>S&#51;cr&#51;t-Value~with&#47;special&#43;chars&#61;</p>`, `<p>[redacted]</p>`},
		{"hexadecimal entities", `<p>&#x53;3cr3t-Value&#X7E;with/special+chars&#x3d;</p>`, `<p>[redacted]</p>`},
		{"named entities", `<p>S3cr3t-Value~with&sol;special&plus;chars&equals;</p>`, `<p>[redacted]</p>`},
		{"entities without semicolon", `<p>&#83&#51cr3t-Value~with/special+chars=</p>`, `<p>[redacted]</p>`},
		{"split by markup", `<p>S3c<b>r3t</b>-Value~<span class="x">with</span>/special+chars=</p>`, `<p>[redacted]</p>`},
		{"split by a comment", `S3cr3t<!-- a > b -->-Value~with/special+chars=`, `[redacted]`},
		{"inside an attribute", `<input value="S&#51;cr3t-Value~with/special+chars=">`, `<input value="[redacted]">`},
		{"split inside an attribute", `<a title="S3<b>cr3t-Value~with/special+chars=">x</a>`, `<a title="[redacted]">x</a>`},
		{"nested encodings", `S&amp;#51;cr3t-Value~with%252Fspecial\\u002bchars&#x5C;u003d!`, `[redacted]!`},
		{"every form at once", `\x53&#51;c<i>r</i>3t%2DValue&#126;with&sol;spec\u0069al+chars=`, `[redacted]`},
		{"C escapes", `S3cr3t\x2dValue~with/special+chars\x3d`, `[redacted]`},
		{"twice, overlapping a plain one", `S3cr3t-Value~with/special+chars=S&#51;cr3t-Value~with/special+chars=`,
			`[redacted][redacted]`},
		{"other escapes are left alone", `a &amp; b \u00e9 %41 <b>bold</b>`, `a &amp; b \u00e9 %41 <b>bold</b>`},
		{"a different secret is left alone", `S&#51;cr3t-Value~with/special+chars`, `S&#51;cr3t-Value~with/special+chars`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			require.Equal(t, tt.want, string(redact([]byte(tt.body), testClientSecret)))
		})
	}
}

// A secret whose own characters decode (a proxy password such as
// "p%41ss&amp;") is found as it is and as it decodes.
func TestRedactSecretsThatLookEncoded(t *testing.T) {
	const password = "p%41ss&amp;w<o>rd"
	require.Equal(t, "[redacted] [redacted] [redacted]",
		string(redact([]byte(`p%41ss&amp;w<o>rd pAss&w<o>rd p%2541ss&amp;amp;w<o>rd`), password)))
}

// A secret read whole is redacted before the snippet is cut; a body read
// only in part may end with the start of a secret, in whatever form, and
// the snippet then ends before it.
func TestSnippetCutInsideASecret(t *testing.T) {
	secrets := []string{testClientSecret, testRefreshToken}
	escaped := `\u0053\u0033\u0063\u0072\u0033\u0074-Value~with/special+chars=`
	require.Equal(t, "see [reda", outsideText([]byte("see "+escaped+" and more"), 9, false, secrets...))

	for body, want := range map[string]string{
		"see S3cr3t-Va":       "see ",
		"see " + escaped[:20]: "see ",
		`see S3\u006`:         "see ",
		"see S3&#9":           "see ",
		"see S3&amp;#":        "see ",
		"see S3<span":         "see ",
		"see S3<b>":           "see ",
		"see S3%6":            "see ",
		"see 0.ARfre":         "see ",
		"see S3-Value":        "see S3-Value",
		"see S3<b> x":         "see S3<b> x",
	} {
		require.Equal(t, want, outsideText([]byte(body), maxBodySnippet, true, secrets...), body)
		require.Equal(t, body, outsideText([]byte(body), maxBodySnippet, false, secrets...), body)
	}

	// Past maxQuotedInput a body is not read: the same holds at that cut.
	pad := strings.Repeat("x", maxQuotedInput-30)
	require.Equal(t, pad+"see ", outsideText([]byte(pad+"see "+escaped), maxQuotedInput+100, false, secrets...))
}

// Encodings nested up to maxDecodeRounds deep are undone as one is; a
// text nested deeper is not quoted at all.
func TestRedactNestedEncodings(t *testing.T) {
	nested := func(depth int) []byte {
		return []byte("see &" + strings.Repeat("amp;", depth-1) + "#83;3cr3t-Value~with/special+chars=")
	}
	require.Equal(t, "see [redacted]", string(redact(nested(maxDecodeRounds), testClientSecret)))
	require.Equal(t, "[redacted: encoded too deeply to be checked for secrets]",
		string(redact(nested(maxDecodeRounds+1), testClientSecret)))
	require.Equal(t, string(nested(maxDecodeRounds+1)), string(redact(nested(maxDecodeRounds+1))), "no secret, nothing to check")
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

// Every error and warning is scrubbed: the cost of one typical message,
// with a quoted HTML body, against four secrets.
func BenchmarkRedactMessage(b *testing.B) {
	msg := []byte(`token request to login.example.com failed: HTTP 502 Bad Gateway: body "` +
		strings.Repeat(`<p class=\"x\">Bad gateway &amp; more, see %2Fhelp</p>`, 10) + `"`)
	secrets := []string{testClientSecret, testRefreshToken, testAccessToken, "Pr0xy~Pass/word+1="}
	b.ReportAllocs()
	for b.Loop() {
		redact(msg, secrets...)
	}
}
