package microsoft_defender

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/influxdata/telegraf/config"
	"github.com/influxdata/telegraf/testutil"

	simulator "github.com/sectelemetry/telegraf-defender/internal/sim"
)

const (
	testTenant       = "contoso-tenant"
	testClientID     = "00000000-aaaa-bbbb-cccc-000000000001"
	testClientSecret = "S3cr3t-Value~with/special+chars="
	testRefreshToken = "0.ARfresh-token-value-that-must-not-leak"
)

// simulated starts a simulator whose clock is fixedNow and a plugin whose
// token and alerts URLs point at it; configure adjusts the plugin before Init.
func simulated(t *testing.T, configure func(*MicrosoftDefender)) (*MicrosoftDefender, *simulator.Server) {
	t.Helper()
	sim := simulator.New(simulator.Config{
		TenantID:     testTenant,
		ClientID:     testClientID,
		ClientSecret: testClientSecret,
		RefreshToken: testRefreshToken,
		Now:          func() time.Time { return fixedNow },
	})
	server := httptest.NewServer(sim.Handler())
	t.Cleanup(server.Close)

	plugin := withDefaults(&MicrosoftDefender{
		EndpointURL:     server.URL + "/api/alerts",
		LoginEndpoint:   server.URL,
		TenantID:        testTenant,
		ClientID:        testClientID,
		ClientSecret:    config.NewSecret([]byte(testClientSecret)),
		InitialLookback: config.Duration(time.Hour),
		Timeout:         config.Duration(5 * time.Second),
		Log:             testutil.Logger{},
		now:             func() time.Time { return fixedNow },
	})
	if configure != nil {
		configure(plugin)
	}
	require.NoError(t, plugin.Init())
	return plugin, sim
}

func gatherOK(t *testing.T, plugin *MicrosoftDefender) *testutil.Accumulator {
	t.Helper()
	var acc testutil.Accumulator
	require.NoError(t, plugin.Gather(&acc))
	require.Empty(t, acc.Errors)
	return &acc
}

func requestsTo(sim *simulator.Server, pathSuffix string) []*http.Request {
	var out []*http.Request
	for _, r := range sim.Requests() {
		if strings.HasSuffix(r.URL.Path, pathSuffix) {
			out = append(out, r)
		}
	}
	return out
}

func TestAlertsRequestCarriesEveryFilter(t *testing.T) {
	plugin, sim := simulated(t, func(m *MicrosoftDefender) {
		m.Limit = 50
		m.MachineGroups = []string{"UKMachines", "France Machines"}
		m.DeviceCreatedMachineTags = "VIP"
		m.CloudCreatedMachineTags = "PCI"
	})
	gatherOK(t, plugin)

	requests := requestsTo(sim, "/api/alerts")
	require.Len(t, requests, 1)
	r := requests[0]
	require.Equal(t, http.MethodGet, r.Method)
	require.Equal(t, url.Values{
		"sinceTimeUtc":             {"2020-09-30T13:59:00.0000000Z"},
		"untilTimeUtc":             {"2020-09-30T14:59:00.0000000Z"},
		"limit":                    {"50"},
		"machinegroups":            {"UKMachines", "France Machines"},
		"DeviceCreatedMachineTags": {"VIP"},
		"CloudCreatedMachineTags":  {"PCI"},
	}, r.URL.Query())
	require.Regexp(t, `^Bearer simtok-[0-9a-f]{48}$`, r.Header.Get("Authorization"))
	require.Equal(t, "application/json", r.Header.Get("Accept"))
	require.Equal(t, userAgent, r.Header.Get("User-Agent"))
}

// Without filters a request carries the window, ending delay before now,
// and a limit of max_alerts_per_gather, so that one poll never holds more.
func TestAlertsRequestWithoutFiltersSendsTheWindowAndTheBudget(t *testing.T) {
	plugin, sim := simulated(t, nil)
	gatherOK(t, plugin)
	requests := requestsTo(sim, "/api/alerts")
	require.Len(t, requests, 1)
	require.Equal(t,
		"limit=10000&sinceTimeUtc=2020-09-30T13%3A59%3A00.0000000Z&untilTimeUtc=2020-09-30T14%3A59%3A00.0000000Z",
		requests[0].URL.RawQuery)
}

func TestTokenRequestForms(t *testing.T) {
	tests := []struct {
		name      string
		configure func(*MicrosoftDefender)
		path      string
		form      url.Values
	}{
		{
			name: "client credentials, v1 resource",
			path: "/" + testTenant + "/oauth2/token",
			form: url.Values{
				"grant_type":    {"client_credentials"},
				"client_id":     {testClientID},
				"client_secret": {testClientSecret},
				"resource":      {"https://graph.windows.net"},
			},
		},
		{
			name:      "client credentials, other resource",
			configure: func(m *MicrosoftDefender) { m.Resource = "https://WDATPAlertExport.Seville.onmicrosoft.com" },
			path:      "/" + testTenant + "/oauth2/token",
			form: url.Values{
				"grant_type":    {"client_credentials"},
				"client_id":     {testClientID},
				"client_secret": {testClientSecret},
				"resource":      {"https://WDATPAlertExport.Seville.onmicrosoft.com"},
			},
		},
		{
			name:      "client credentials, v2 scope",
			configure: func(m *MicrosoftDefender) { m.Scopes = []string{"https://graph.windows.net/.default"} },
			path:      "/" + testTenant + "/oauth2/v2.0/token",
			form: url.Values{
				"grant_type":    {"client_credentials"},
				"client_id":     {testClientID},
				"client_secret": {testClientSecret},
				"scope":         {"https://graph.windows.net/.default"},
			},
		},
		{
			name:      "refresh token",
			configure: func(m *MicrosoftDefender) { m.RefreshToken = config.NewSecret([]byte(testRefreshToken)) },
			path:      "/" + testTenant + "/oauth2/token",
			form: url.Values{
				"grant_type":    {"refresh_token"},
				"refresh_token": {testRefreshToken},
				"client_id":     {testClientID},
				"client_secret": {testClientSecret},
				"resource":      {"https://graph.windows.net"},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			plugin, sim := simulated(t, tt.configure)
			gatherOK(t, plugin)
			plugin.now = func() time.Time { return fixedNow.Add(time.Minute) }
			gatherOK(t, plugin)

			// The token, valid for an hour, serves both polls.
			tokenRequests := requestsTo(sim, "/token")
			require.Len(t, tokenRequests, 1)
			r := tokenRequests[0]
			require.Equal(t, http.MethodPost, r.Method)
			require.Equal(t, tt.path, r.URL.Path)
			require.Equal(t, "application/x-www-form-urlencoded", r.Header.Get("Content-Type"))
			require.Equal(t, tt.form, r.PostForm)
			require.Len(t, requestsTo(sim, "/api/alerts"), 2)
		})
	}
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

// credentialsPlugin uses client credentials against server.
func credentialsPlugin(t *testing.T, server *httptest.Server, now func() time.Time) *MicrosoftDefender {
	t.Helper()
	plugin := withDefaults(&MicrosoftDefender{
		EndpointURL: server.URL + "/api/alerts", LoginEndpoint: server.URL, TenantID: testTenant,
		ClientID: testClientID, ClientSecret: config.NewSecret([]byte(testClientSecret)),
		InitialLookback: config.Duration(time.Hour), Timeout: config.Duration(5 * time.Second),
		now: now,
	})
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
		EndpointURL: server.URL + "/api/alerts", AccessToken: config.NewSecret([]byte("portal-token")),
		InitialLookback: config.Duration(time.Hour), Timeout: config.Duration(5 * time.Second),
		now: func() time.Time { return fixedNow },
	})
	require.NoError(t, plugin.Init())
	gatherOK(t, plugin)
	require.Equal(t, []string{"/api/alerts Bearer portal-token"}, seen)
}

func TestTokenResponseOfTheSeedIsAccepted(t *testing.T) {
	// The seed's v1 response sends expires_in, expires_on and not_before as
	// strings; the token, valid for an hour, serves both polls.
	var sent []string
	server, tokenRequests := tokenServer(t, readFile(t, "testdata/token_response_v1_seed.json"), func(r *http.Request) {
		sent = append(sent, r.Header.Get("Authorization"))
	})
	now := fixedNow
	plugin := credentialsPlugin(t, server, func() time.Time { return now })
	gatherOK(t, plugin)
	now = now.Add(time.Minute)
	gatherOK(t, plugin)
	require.Equal(t, 1, *tokenRequests)
	bearer := "Bearer eyJ0eXaioJJOIneiowiouqSuzNiZ345FYOVkaJL0625TueyaJasjhIjEnbMlWqP..."
	require.Equal(t, []string{bearer, bearer}, sent)
}
