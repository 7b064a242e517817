package scenario_test

import (
	"fmt"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/influxdata/telegraf/config"
	"github.com/influxdata/telegraf/testutil"

	simulator "github.com/sectelemetry/telegraf-defender/internal/sim"
)

// simulated starts a simulator and a plugin whose token and alerts URLs
// point at it; configure adjusts the plugin before Init.
func simulated(t *testing.T, configure func(*MicrosoftDefender)) (*MicrosoftDefender, *simulator.Server) {
	t.Helper()
	s := newScenario(t, simulator.Config{TokenLifetime: time.Hour})
	plugin := s.plugin(func(m *MicrosoftDefender) {
		m.InitialLookback = config.Duration(time.Hour)
		m.Timeout = config.Duration(5 * time.Second)
		m.Log = testutil.Logger{}
		if configure != nil {
			configure(m)
		}
	})
	return plugin, s.sim
}

// gatherOK runs a poll that must succeed.
func gatherOK(t *testing.T, plugin *MicrosoftDefender) {
	t.Helper()
	var acc testutil.Accumulator
	require.NoError(t, plugin.Gather(&acc))
	require.Empty(t, acc.Errors)
}

func TestAlertsRequestCarriesEveryFilter(t *testing.T) {
	bubble(t, func(t *testing.T) {
		plugin, sim := simulated(t, func(m *MicrosoftDefender) {
			m.PageSize = 50
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
			"sinceTimeUtc":             {"2020-09-30T14:00:00.0000000Z"},
			"untilTimeUtc":             {"2020-09-30T15:00:00.0000000Z"},
			"limit":                    {"50"},
			"machinegroups":            {"UKMachines", "France Machines"},
			"DeviceCreatedMachineTags": {"VIP"},
			"CloudCreatedMachineTags":  {"PCI"},
		}, r.URL.Query())
		require.Regexp(t, `^Bearer simtok-[0-9a-f]{48}$`, r.Header.Get("Authorization"))
		require.Equal(t, "application/json", r.Header.Get("Accept"))
		require.Equal(t, "Telegraf-microsoft_defender", r.Header.Get("User-Agent"))
	})
}

// Without filters a request carries the window, ending delay before now,
// and a limit of max_alerts_per_gather, so that one poll never holds more.
func TestAlertsRequestWithoutFiltersSendsTheWindowAndTheBudget(t *testing.T) {
	bubble(t, func(t *testing.T) {
		plugin, sim := simulated(t, nil)
		gatherOK(t, plugin)
		requests := requestsTo(sim, "/api/alerts")
		require.Len(t, requests, 1)
		require.Equal(t,
			"limit=10000&sinceTimeUtc=2020-09-30T14%3A00%3A00.0000000Z&untilTimeUtc=2020-09-30T15%3A00%3A00.0000000Z",
			requests[0].URL.RawQuery)
	})
}

func TestTokenRequestForms(t *testing.T) {
	tests := []struct {
		name      string
		configure func(*MicrosoftDefender)
		path      string
		form      url.Values
	}{
		{
			name: "client secret, the SIEM app's scope",
			path: "/" + testTenant + "/oauth2/v2.0/token",
			form: url.Values{
				"grant_type":    {"client_credentials"},
				"client_id":     {testClientID},
				"client_secret": {testClientSecret},
				"scope":         {"https://graph.windows.net/.default openid offline_access profile"},
			},
		},
		{
			name: "client secret, other scope",
			configure: func(m *MicrosoftDefender) {
				m.Scopes = []string{"https://WDATPAlertExport.Seville.onmicrosoft.com/.default"}
			},
			path: "/" + testTenant + "/oauth2/v2.0/token",
			form: url.Values{
				"grant_type":    {"client_credentials"},
				"client_id":     {testClientID},
				"client_secret": {testClientSecret},
				"scope":         {"https://WDATPAlertExport.Seville.onmicrosoft.com/.default openid offline_access profile"},
			},
		},
		{
			name: "refresh token, v1 resource",
			configure: func(m *MicrosoftDefender) {
				m.AuthMethod, m.RefreshToken = "refresh_token", config.NewSecret([]byte(testRefreshToken))
			},
			path: "/" + testTenant + "/oauth2/token",
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
			bubble(t, func(t *testing.T) {
				plugin, sim := simulated(t, tt.configure)
				gatherOK(t, plugin)
				time.Sleep(time.Minute)
				gatherOK(t, plugin)

				// The token, valid for an hour, serves both polls.
				tokenRequests := requestsTo(sim, "/token")
				require.Len(t, tokenRequests, 1)
				r := tokenRequests[0]
				require.Equal(t, http.MethodPost, r.Method)
				require.Equal(t, tt.path, r.URL.Path)
				// MSAL names the charset, x/oauth2 does not.
				require.Contains(t, []string{"application/x-www-form-urlencoded; charset=utf-8", "application/x-www-form-urlencoded"},
					r.Header.Get("Content-Type"))
				require.Equal(t, tt.form, r.PostForm)
				require.Len(t, requestsTo(sim, "/api/alerts"), 2)
			})
		})
	}
}

func TestTokenEndpointErrors(t *testing.T) {
	tests := []struct {
		name      string
		configure func(*MicrosoftDefender)
		want      string
	}{
		{"wrong secret", func(m *MicrosoftDefender) { m.ClientSecret = config.NewSecret([]byte("wrong-" + testClientSecret)) },
			"token request to %s failed: HTTP 401 Unauthorized: invalid_client (AADSTS7000215). The client secret is wrong, or is the " +
				"secret's ID rather than its value: create a new client secret for the app and set its value as client_secret"},
		{"unknown app", func(m *MicrosoftDefender) { m.ClientID = "11111111-2222-3333-4444-555555555555" },
			"token request to %s failed: HTTP 400 Bad Request: unauthorized_client (AADSTS700016). No app with this client_id exists " +
				"in the tenant: check client_id, and that tenant_id is the app's tenant"},
		{"unknown tenant", func(m *MicrosoftDefender) { m.TenantID = "fabrikam.onmicrosoft.com" },
			"token request to %s failed: HTTP 400 Bad Request: invalid_request (AADSTS90002). The tenant does not exist: check " +
				"tenant_id, and that login_endpoint (or region) is the tenant's cloud"},
		{"scope without .default", func(m *MicrosoftDefender) { m.Scopes = []string{"https://graph.windows.net"} },
			"token request to %s failed: HTTP 400 Bad Request: invalid_scope (AADSTS1002012)"},
		{"expired refresh token", func(m *MicrosoftDefender) {
			m.AuthMethod, m.RefreshToken = "refresh_token", config.NewSecret([]byte("stale-"+testRefreshToken))
		}, "token request to %s failed: HTTP 400 Bad Request: invalid_grant (AADSTS70000)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			logger := &testutil.CaptureLogger{}
			bubble(t, func(t *testing.T) {
				plugin, sim := simulated(t, func(m *MicrosoftDefender) {
					m.Log = logger
					tt.configure(m)
				})
				var acc testutil.Accumulator
				require.NoError(t, plugin.Gather(&acc))
				require.Len(t, acc.Errors, 1)
				msg := acc.Errors[0].Error()
				for _, entry := range logger.Messages() {
					requireNoSecret(t, entry.String())
				}
				requireNoSecret(t, msg)
				require.Equal(t, fmt.Sprintf(tt.want, simHost), msg)
				require.NotContains(t, msg, "wrong-"+testClientSecret)
				require.NotContains(t, msg, "stale-"+testRefreshToken)
				require.Empty(t, requestsTo(sim, "/api/alerts"), "no API request without a token")
			})
		})
	}
}
