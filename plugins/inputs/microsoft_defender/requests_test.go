package microsoft_defender

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/influxdata/telegraf/config"
	"github.com/influxdata/telegraf/testutil"
)

const (
	testTenant       = "contoso-tenant"
	testClientID     = "00000000-aaaa-bbbb-cccc-000000000001"
	testClientSecret = "S3cr3t-Value~with/special+chars="
	testRefreshToken = "0.ARfresh-token-value-that-must-not-leak"
)

func gatherOK(t *testing.T, plugin *MicrosoftDefender) *testutil.Accumulator {
	t.Helper()
	var acc testutil.Accumulator
	require.NoError(t, plugin.Gather(&acc))
	require.Empty(t, acc.Errors)
	return &acc
}

// tokenServer answers the token endpoint with tokenBody and the alerts API
// with an empty list; it counts the token requests and hands each alerts
// request to check.
func tokenServer(t *testing.T, tokenBody []byte, check func(*http.Request)) (*httptest.Server, *int) {
	t.Helper()
	var tokenRequests int
	server := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/token") {
			tokenRequests++
			w.Header().Set("Content-Type", "application/json")
			respond(t, w, tokenBody)
			return
		}
		if check != nil {
			check(r)
		}
		respond(t, w, []byte(`[]`))
	}))
	t.Cleanup(server.Close)
	return server, &tokenRequests
}

// credentialsPlugin uses client credentials against server, changed by
// configure before Init.
func credentialsPlugin(t *testing.T, server *httptest.Server, now func() time.Time, configure ...func(*MicrosoftDefender)) *MicrosoftDefender {
	t.Helper()
	plugin := withDefaults(&MicrosoftDefender{
		EndpointURL: server.URL + "/api/alerts", LoginEndpoint: server.URL, TenantID: testTenant,
		ClientID: testClientID, ClientSecret: config.NewSecret([]byte(testClientSecret)),
		InitialLookback: config.Duration(time.Hour), Timeout: config.Duration(5 * time.Second),
		now: now,
	})
	for _, c := range configure {
		c(plugin)
	}
	require.NoError(t, plugin.Init())
	return plugin
}

func TestTokenIsRenewedShortlyBeforeItExpires(t *testing.T) {
	// 100 s of life: inside the two-minute renewal margin at once.
	server, tokenRequests := tokenServer(t, []byte(`{"token_type":"Bearer","expires_in":"100","access_token":"short-lived"}`), nil)
	now := fixedNow
	plugin := credentialsPlugin(t, server, func() time.Time { return now })
	gatherOK(t, plugin)
	now = now.Add(time.Minute)
	gatherOK(t, plugin)
	require.Equal(t, 2, *tokenRequests)
}

func TestStaticAccessTokenIsSentAsIs(t *testing.T) {
	var seen []string
	server := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen = append(seen, r.URL.Path+" "+r.Header.Get("Authorization"))
		respond(t, w, []byte(`[]`))
	}))
	defer server.Close()
	plugin := withDefaults(&MicrosoftDefender{
		EndpointURL: server.URL + "/api/alerts", AuthMethod: methodAccessToken, AccessToken: config.NewSecret([]byte("portal-token")),
		InitialLookback: config.Duration(time.Hour), Timeout: config.Duration(5 * time.Second),
		now: func() time.Time { return fixedNow },
	})
	require.NoError(t, plugin.Init())
	gatherOK(t, plugin)
	require.Equal(t, []string{"/api/alerts Bearer portal-token"}, seen)
}

func TestTokenResponseOfTheSeedIsAccepted(t *testing.T) {
	// The seed's v1 response sends expires_in, expires_on and not_before as
	// strings; the token, valid for an hour, serves both polls. The v1
	// endpoint is the portal's refresh token's.
	var sent []string
	server, tokenRequests := tokenServer(t, readFile(t, "testdata/token_response_v1_seed.json"), func(r *http.Request) {
		sent = append(sent, r.Header.Get("Authorization"))
	})
	now := fixedNow
	plugin := credentialsPlugin(t, server, func() time.Time { return now }, func(m *MicrosoftDefender) {
		m.AuthMethod, m.RefreshToken = methodRefreshToken, config.NewSecret([]byte(testRefreshToken))
	})
	gatherOK(t, plugin)
	now = now.Add(time.Minute)
	gatherOK(t, plugin)
	require.Equal(t, 1, *tokenRequests)
	bearer := "Bearer eyJ0eXaioJJOIneiowiouqSuzNiZ345FYOVkaJL0625TueyaJasjhIjEnbMlWqP..."
	require.Equal(t, []string{bearer, bearer}, sent)
}

// holding serves body to SIEM requests whose window holds at, and an empty
// answer to others, as the API does; other requests get body.
func holding(t *testing.T, at, body string) http.HandlerFunc {
	placed, err := time.Parse(time.RFC3339Nano, at)
	require.NoError(t, err)
	return func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		since, sinceErr := time.Parse(time.RFC3339Nano, q.Get("sinceTimeUtc"))
		until, untilErr := time.Parse(time.RFC3339Nano, q.Get("untilTimeUtc"))
		if sinceErr == nil && untilErr == nil && (placed.Before(since) || placed.After(until)) {
			respond(t, w, []byte("[]"))
			return
		}
		respond(t, w, []byte(body))
	}
}
