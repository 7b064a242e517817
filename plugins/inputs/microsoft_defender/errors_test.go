package microsoft_defender

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/influxdata/telegraf/config"
	"github.com/influxdata/telegraf/testutil"
)

const testAccessToken = "eyJ0eXAiOiJKV1QiLCJhbGciOi-access-token-that-must-not-leak"

// stub answers the token endpoint with testAccessToken and the alerts API
// with alerts; it echoes secrets back wherever a careless server might.
func stub(t *testing.T, alerts http.HandlerFunc) *httptest.Server {
	t.Helper()
	server := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/token") {
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprintf(w, `{"token_type":"Bearer","expires_in":3599,"access_token":%q}`, testAccessToken)
			return
		}
		alerts(w, r)
	}))
	t.Cleanup(server.Close)
	return server
}

// stubbedPlugin is a plugin reading server, changed by configure before
// Init.
func stubbedPlugin(t *testing.T, server *httptest.Server, logger *testutil.CaptureLogger, configure ...func(*MicrosoftDefender)) *MicrosoftDefender {
	t.Helper()
	plugin := withDefaults(&MicrosoftDefender{
		EndpointURL:     server.URL + "/api/alerts",
		LoginEndpoint:   server.URL,
		TenantID:        testTenant,
		ClientID:        testClientID,
		ClientSecret:    config.NewSecret([]byte(testClientSecret)),
		InitialLookback: config.Duration(time.Hour),
		Timeout:         config.Duration(5 * time.Second),
		Log:             logger,
		now:             func() time.Time { return fixedNow },
	})
	for _, c := range configure {
		c(plugin)
	}
	require.NoError(t, plugin.Init())
	return plugin
}

// gatherError runs one poll that must fail and returns its one error.
func gatherError(t *testing.T, plugin *MicrosoftDefender, logger *testutil.CaptureLogger) (string, *testutil.Accumulator) {
	t.Helper()
	var acc testutil.Accumulator
	require.NoError(t, plugin.Gather(&acc))
	require.Len(t, acc.Errors, 1)
	msg := acc.Errors[0].Error()
	requireNoSecret(t, msg)
	if logger != nil {
		for _, entry := range logger.Messages() {
			requireNoSecret(t, entry.String())
		}
	}
	for _, m := range acc.GetTelegrafMetrics() {
		requireNoSecret(t, fmt.Sprint(m.Tags(), m.Fields()))
	}
	return msg, &acc
}

func requirePollStatus(t *testing.T, acc *testutil.Accumulator, status string) {
	t.Helper()
	var statuses []string
	for _, m := range acc.GetTelegrafMetrics() {
		if m.Name() == measurementPoll {
			statuses = append(statuses, m.Tags()["status"])
		}
	}
	require.Equal(t, []string{status}, statuses)
}

func requireNoSecret(t *testing.T, s string) {
	t.Helper()
	for _, secret := range []string{testClientSecret, testRefreshToken, testAccessToken} {
		require.NotContains(t, s, secret)
		require.NotContains(t, s, url.QueryEscape(secret))
		require.NotContains(t, s, url.PathEscape(secret))
		require.NotContains(t, unescapeAll(s), secret, "%s", s)
	}
}

func TestAPIStatusErrors(t *testing.T) {
	long := strings.Repeat("x", 600)
	tests := []struct {
		status int
		body   string
		want   string
	}{
		{http.StatusUnauthorized, "Authorization has been denied for this request.",
			`SIEM API at %s answered 401 Unauthorized (the token is invalid or expired, was issued for another audience ` +
				`(the SIEM API's is https://graph.windows.net), or the request is malformed): ` +
				`body "Authorization has been denied for this request."`},
		{http.StatusForbidden, `{"error":"Forbidden"}`,
			`SIEM API at %s answered 403 Forbidden (the app lacks permission, or the tenant is not managed by this API or was deleted: ` +
				`enable SIEM integration for the app in the Defender portal, or use api = "graph"): ` +
				`body "{\"error\":\"Forbidden\"}"`},
		{http.StatusInternalServerError, "<html>\r\n<body>Oops\x1b[31m</body>\n</html>",
			`SIEM API at %s answered 500 Internal Server Error (service error): body "<html>  <body>Oops�[31m</body> </html>"`},
		{http.StatusServiceUnavailable, "",
			`SIEM API at %s answered 503 Service Unavailable (service error): empty body`},
		{http.StatusNotFound, long,
			`SIEM API at %s answered 404 Not Found (no alerts API at this address: check region or endpoint_url; if it is retired ` +
				`for this tenant, use api = "graph"): body "` + long[:200] + `"`},
		{http.StatusTeapot, "echo: Bearer " + testAccessToken,
			`SIEM API at %s answered 418 I'm a teapot (unexpected answer): body "echo: Bearer [redacted]"`},
	}
	for _, tt := range tests {
		t.Run(http.StatusText(tt.status), func(t *testing.T) {
			server := stub(t, func(w http.ResponseWriter, _ *http.Request) {
				w.WriteHeader(tt.status)
				respond(t, w, []byte(tt.body))
			})
			logger := &testutil.CaptureLogger{}
			msg, acc := gatherError(t, stubbedPlugin(t, server, logger), logger)
			require.Equal(t, fmt.Sprintf(tt.want, strings.TrimPrefix(server.URL, "http://")), msg)
			require.Empty(t, detectionMetrics(acc))
			requirePollStatus(t, acc, "error")
		})
	}
}

func TestTokenEndpointAnswersWithoutOAuthError(t *testing.T) {
	server := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := r.ParseForm(); err != nil {
			t.Errorf("parsing the token request: %v", err)
		}
		w.WriteHeader(http.StatusBadGateway)
		// A proxy error page that echoes the form it was sent.
		fmt.Fprintf(w, "<h1>Bad gateway</h1>\n<pre>%s</pre>", r.PostForm.Encode())
	}))
	defer server.Close()
	logger := &testutil.CaptureLogger{}
	plugin := stubbedPlugin(t, server, logger, func(m *MicrosoftDefender) {
		m.AuthMethod, m.RefreshToken = methodRefreshToken, config.NewSecret([]byte(testRefreshToken))
	})
	msg, _ := gatherError(t, plugin, logger)
	require.Equal(t, "token request to "+strings.TrimPrefix(server.URL, "http://")+" failed: HTTP 502 Bad Gateway", msg)
}

func TestUnreachableServers(t *testing.T) {
	server := stub(t, func(http.ResponseWriter, *http.Request) {})
	logger := &testutil.CaptureLogger{}
	plugin := stubbedPlugin(t, server, logger)
	host := strings.TrimPrefix(server.URL, "http://")
	server.Close()

	msg, _ := gatherError(t, plugin, logger)
	require.Equal(t, "token request to "+host+" failed: dial tcp "+host+": connect: connection refused", msg)

	// With a token in hand, the API request fails the same way.
	plugin.client.tokens = &staticToken{secret: &plugin.ClientSecret}
	msg, _ = gatherError(t, plugin, logger)
	require.Equal(t, "SIEM API request to "+host+" failed: dial tcp "+host+": connect: connection refused", msg)
}
