package microsoft_defender

import (
	"bufio"
	"encoding/base64"
	"fmt"
	"html"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/influxdata/telegraf/config"
	"github.com/influxdata/telegraf/testutil"
)

var (
	escapeSequence = regexp.MustCompile(`\\u[0-9a-fA-F]{4}|\\x[0-9a-fA-F]{2}|\\["\\/'bfnrt]|%[0-9a-fA-F]{2}`)
	markupSequence = regexp.MustCompile(`(?s)<!--.*?-->|<[^<>]*>`)
)

// unescapeAll undoes what a reader of a message could undo, with the
// standard library where it can: JSON, C and percent escapes and HTML
// entities until none is left, then markup. A message must not hold a
// secret even then.
func unescapeAll(s string) string {
	for {
		prev := s
		s = escapeSequence.ReplaceAllStringFunc(s, func(e string) string {
			switch {
			case e[0] == '%', e[1] == 'x':
				v, _ := strconv.ParseUint(e[len(e)-2:], 16, 8) //nolint:errcheck // the pattern holds two hex digits
				return string([]byte{byte(v)})
			case e[1] == 'u':
				v, _ := strconv.ParseUint(e[2:], 16, 16) //nolint:errcheck // the pattern holds four hex digits
				return string(rune(v))
			}
			unquoted, err := strconv.Unquote(`"` + e + `"`)
			if err != nil {
				return e[1:] // \' and \/ are not Go escapes
			}
			return unquoted
		})
		s = html.UnescapeString(s)
		if s == prev {
			return markupSequence.ReplaceAllString(s, "")
		}
	}
}

// Encoders of a secret, as careless servers echo it.
func jsonEscapeAll(s string) string {
	var b strings.Builder
	for _, r := range s {
		fmt.Fprintf(&b, `\u%04x`, r)
	}
	return b.String()
}

func entityEscapeAll(s string) string {
	var b strings.Builder
	for i, r := range s {
		if i%2 == 0 {
			fmt.Fprintf(&b, "&#%d;", r)
		} else {
			fmt.Fprintf(&b, "&#x%X;", r)
		}
	}
	return b.String()
}

func splitByMarkup(s string) string {
	return s[:3] + "<b>" + s[3:7] + "</b><span class=x>" + s[7:len(s)-1] + "</span><!-- > -->" + s[len(s)-1:]
}

// A token endpoint (or a proxy or gateway in its place) that echoes the
// form in encoded forms: the message quotes nothing of the answer but its
// status, its OAuth code and its AADSTS number, whichever client sent the
// form (azidentity for the client secret, x/oauth2 for the refresh token).
func TestTokenEndpointEchoesEncodedSecrets(t *testing.T) {
	tests := []struct {
		name   string
		status int
		page   func(secret, refresh string) string
		want   string
	}{
		{"JSON escapes, no OAuth error", http.StatusBadRequest,
			func(secret, refresh string) string {
				return `{"message":"bad client_secret ` + jsonEscapeAll(secret) + `","refresh":"` + jsonEscapeAll(refresh) + `"}`
			},
			"HTTP 400 Bad Request"},
		{"HTML entities, no OAuth error", http.StatusBadGateway,
			func(secret, refresh string) string {
				return fmt.Sprintf("<h1>Bad gateway</h1><pre>client_secret=%s&amp;refresh_token=%s</pre>",
					entityEscapeAll(secret), strings.ReplaceAll(refresh, ".", "&period;"))
			},
			"HTTP 502 Bad Gateway"},
		{"exact and URL-escaped, no OAuth error", http.StatusBadGateway,
			func(secret, refresh string) string {
				return fmt.Sprintf("<p>secret %s %s, refresh %s %s</p>", secret, url.QueryEscape(secret), refresh, url.PathEscape(refresh))
			},
			"HTTP 502 Bad Gateway"},
		{"OAuth error describing the secret in entities", http.StatusUnauthorized,
			func(secret, _ string) string {
				return fmt.Sprintf(`{"error":"invalid_client","error_description":"AADSTS7000215: Invalid client secret %s provided.\r\nTrace ID: 1"}`,
					entityEscapeAll(secret))
			},
			"HTTP 401 Unauthorized: invalid_client (AADSTS7000215). The client secret is wrong, or is the secret's ID rather than " +
				"its value: create a new client secret for the app and set its value as client_secret"},
		{"OAuth error code split by markup", http.StatusBadRequest,
			func(secret, _ string) string {
				return `{"error":"` + splitByMarkup(secret) + `","error_description":"x"}`
			},
			"HTTP 400 Bad Request"},
	}
	for _, method := range []string{methodClientSecret, methodRefreshToken} {
		for _, tt := range tests {
			t.Run(method+", "+tt.name, func(t *testing.T) {
				server := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					if err := r.ParseForm(); err != nil {
						t.Errorf("parsing the token request: %v", err)
					}
					w.Header().Set("Content-Type", "application/json")
					w.WriteHeader(tt.status)
					respond(t, w, []byte(tt.page(testClientSecret, testRefreshToken)))
				}))
				defer server.Close()
				logger := &testutil.CaptureLogger{}
				plugin := stubbedPlugin(t, server, logger, func(m *MicrosoftDefender) {
					m.AuthMethod = method
					if method == methodRefreshToken {
						m.RefreshToken = config.NewSecret([]byte(testRefreshToken))
					}
				})
				plugin.MaxRetries = 0
				msg, _ := gatherError(t, plugin, logger)
				require.Equal(t, "token request to "+strings.TrimPrefix(server.URL, "http://")+" failed: "+tt.want, msg)
			})
		}
	}
}

// An API error page that repeats the bearer token, as it is or URL-escaped.
// Other encodings are not looked for: the message quotes at most
// maxQuotedBody bytes, with control characters replaced.
func TestAPIEchoesTheToken(t *testing.T) {
	for name, echo := range map[string]func(string) string{
		"as it is":     func(tok string) string { return tok },
		"query-escape": url.QueryEscape,
		"path-escape":  url.PathEscape,
	} {
		t.Run(name, func(t *testing.T) {
			server := stub(t, func(w http.ResponseWriter, r *http.Request) {
				w.WriteHeader(http.StatusTeapot)
				tok := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
				respond(t, w, []byte("echo: Bearer "+echo(tok)+" (end)"))
			})
			logger := &testutil.CaptureLogger{}
			msg, _ := gatherError(t, stubbedPlugin(t, server, logger), logger)
			require.Equal(t, "SIEM API at "+strings.TrimPrefix(server.URL, "http://")+
				` answered 418 I'm a teapot (unexpected answer): body "echo: Bearer [redacted] (end)"`, msg)
		})
	}
}

// A proxy whose refusal repeats the credentials it was sent, in its status
// line: the password, encoded, and the Proxy-Authorization header.
func TestProxyEchoesItsPassword(t *testing.T) {
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer listener.Close()
	go func() {
		for {
			conn, err := listener.Accept()
			if err != nil {
				return
			}
			req, err := http.ReadRequest(bufio.NewReader(conn))
			if err == nil {
				auth := strings.TrimPrefix(req.Header.Get("Proxy-Authorization"), "Basic ")
				decoded, _ := base64.StdEncoding.DecodeString(auth) //nolint:errcheck // an empty echo is still an answer
				_, password, _ := strings.Cut(string(decoded), ":")
				fmt.Fprintf(conn, "HTTP/1.1 407 Denied %s for %s\r\nContent-Length: 0\r\n\r\n", auth, url.QueryEscape(password))
			}
			conn.Close()
		}
	}()

	logger := &testutil.CaptureLogger{}
	plugin := proxiedPlugin(logger)
	plugin.HTTPProxyURL = "http://proxyuser:" + url.QueryEscape(testClientSecret) + "@" + listener.Addr().String()
	require.NoError(t, plugin.Init())
	msg, _ := gatherError(t, plugin, logger)
	require.Equal(t, "SIEM API request to alerts.example.com failed: Denied [redacted] for [redacted]", msg)
}

// An access_token that cannot be a header value is refused with the
// answer, and asked for again at the next poll rather than cached.
func TestTokenThatCannotBeAHeaderIsRefused(t *testing.T) {
	var tokenRequests, apiRequests atomic.Int32
	server := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/token") {
			tokenRequests.Add(1)
			w.Header().Set("Content-Type", "application/json")
			respond(t, w, []byte(`{"token_type":"Bearer","expires_in":3599,"access_token":"`+testAccessToken+`\r\nX-Injected: 1"}`))
			return
		}
		apiRequests.Add(1)
		respond(t, w, []byte(`[]`))
	}))
	defer server.Close()
	logger := &testutil.CaptureLogger{}
	plugin := stubbedPlugin(t, server, logger)
	want := "token request to " + strings.TrimPrefix(server.URL, "http://") + " failed: the access_token it answered cannot be sent: " +
		"byte 58 is 0x0d, not allowed in a bearer token (RFC 6750)"
	for poll := 1; poll <= 2; poll++ {
		msg, acc := gatherError(t, plugin, logger)
		require.Equal(t, want, msg)
		requirePollStatus(t, acc, "error")
		require.Equal(t, int32(poll), tokenRequests.Load(), "one token request per poll, none retried, none cached")
	}
	require.Zero(t, apiRequests.Load())
	require.EqualError(t, plugin.Probe(), "token: "+want)
}

// The same for a configured access_token: refused at start-up, and at the
// poll when the secret store hands out such a value later.
func TestStaticTokenThatCannotBeAHeaderIsRefused(t *testing.T) {
	var requests atomic.Int32
	server := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		requests.Add(1)
		respond(t, w, []byte(`[]`))
	}))
	defer server.Close()
	logger := &testutil.CaptureLogger{}
	newPlugin := func(token string) *MicrosoftDefender {
		return withDefaults(&MicrosoftDefender{
			EndpointURL: server.URL + "/api/alerts",
			AuthMethod:  methodAccessToken,
			AccessToken: config.NewSecret([]byte(token)),
			Log:         logger,
			now:         func() time.Time { return fixedNow },
		})
	}
	require.EqualError(t, newPlugin(testAccessToken+"\n").Init(),
		"access_token cannot be sent: byte 58 is 0x0a, not allowed in a bearer token (RFC 6750)")

	plugin := newPlugin(testAccessToken)
	require.NoError(t, plugin.Init())
	// The secret store's value changes after start-up.
	plugin.AccessToken = config.NewSecret([]byte("Bearer " + testAccessToken))
	msg, _ := gatherError(t, plugin, logger)
	require.Equal(t, "access_token cannot be sent: byte 6 is 0x20, not allowed in a bearer token (RFC 6750)", msg)
	require.Zero(t, requests.Load())
}

// A proxy that repeats its own address with the credentials, as a URL
// (http://user:password@host), escapes the password for userinfo: '@' and
// ':' escaped, ';' and ',' not, unlike the query and path escapes that
// were redacted. That form is redacted too.
func TestProxyEchoesItsURLWithThePassword(t *testing.T) {
	const password = "p@ss:w;rd,+x"
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer listener.Close()
	go func() {
		for {
			conn, err := listener.Accept()
			if err != nil {
				return
			}
			if _, err := http.ReadRequest(bufio.NewReader(conn)); err == nil {
				echo := &url.URL{Scheme: "http", User: url.UserPassword("proxyuser", password), Host: listener.Addr().String()}
				fmt.Fprintf(conn, "HTTP/1.1 407 Denied to %s\r\nContent-Length: 0\r\n\r\n", echo)
			}
			conn.Close()
		}
	}()

	logger := &testutil.CaptureLogger{}
	plugin := proxiedPlugin(logger)
	plugin.HTTPProxyURL = "http://proxyuser:" + url.QueryEscape(password) + "@" + listener.Addr().String()
	require.NoError(t, plugin.Init())
	msg, _ := gatherError(t, plugin, logger)
	require.Equal(t, "SIEM API request to alerts.example.com failed: Denied to http://proxyuser:[redacted]@"+listener.Addr().String(), msg)
}

// proxiedPlugin sends access_token to an https API host no proxy test
// reaches, without retries: its error is the proxy's answer.
func proxiedPlugin(logger *testutil.CaptureLogger) *MicrosoftDefender {
	return withDefaults(&MicrosoftDefender{
		EndpointURL: "https://alerts.example.com/api/alerts",
		AuthMethod:  methodAccessToken,
		AccessToken: config.NewSecret([]byte(testAccessToken)),
		MaxRetries:  0,
		Log:         logger,
		now:         func() time.Time { return fixedNow },
	})
}
