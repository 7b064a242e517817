package microsoft_defender

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/influxdata/telegraf/config"
	"github.com/influxdata/telegraf/testutil"
)

func validPlugin() *MicrosoftDefender {
	return withDefaults(&MicrosoftDefender{
		Region:          "eu",
		TenantID:        testTenant,
		ClientID:        testClientID,
		ClientSecret:    config.NewSecret([]byte(testClientSecret)),
		InitialLookback: config.Duration(2 * time.Hour),
		Timeout:         config.Duration(30 * time.Second),
	})
}

func TestInitRejectsBadConfigurations(t *testing.T) {
	tests := []struct {
		name      string
		configure func(*MicrosoftDefender)
		err       string
	}{
		{"unknown api", func(m *MicrosoftDefender) { m.API = "mde" },
			`api "mde" is not supported: use "siem" or "graph"`},
		{"graph filters on siem", func(m *MicrosoftDefender) {
			m.ServiceSources = []string{"microsoftDefenderForEndpoint"}
			m.IncludeEvidence = true
		}, `service_sources, include_evidence: not used by api = "siem"`},
		{"siem keys on graph", func(m *MicrosoftDefender) {
			m.API, m.Region = "graph", ""
			m.DeviceCreatedMachineTags = "VIP"
			m.RefreshToken = config.NewSecret([]byte(testRefreshToken))
			m.Resource = "https://graph.windows.net"
		}, `device_created_machine_tags, refresh_token, resource (use scopes): not used by api = "graph"`},
		{"graph page size", func(m *MicrosoftDefender) { m.API, m.Region, m.PageSize = "graph", "", 5000 },
			"page_size must be from 1 to 1000 for api = \"graph\", got 5000"},
		{"siem region on graph", func(m *MicrosoftDefender) { m.API = "graph" },
			`region "eu" is a region of api = "siem": for api = "graph" use "global" (the default), "gcc", "gcc-high", "dod" or "china"`},
		{"graph region on siem", func(m *MicrosoftDefender) { m.Region = "dod" },
			`region "dod" is a region of api = "graph": for api = "siem" use "us" (the default), "eu", "uk", "gcc" or "gcc-high"`},
		{"unknown region", func(m *MicrosoftDefender) { m.Region = "asia" },
			`region "asia" is unknown for api = "siem": use "us", "eu", "uk", "gcc" or "gcc-high", or set endpoint_url`},
		{"plain http endpoint", func(m *MicrosoftDefender) { m.EndpointURL = "http://alerts.example.com/api/alerts" },
			`endpoint_url "http://alerts.example.com/api/alerts" uses plain http to a host that is not loopback: use https`},
		{"plain http token url", func(m *MicrosoftDefender) { m.TokenURL = "http://login.example.com/t/oauth2/token" },
			`token_url "http://login.example.com/t/oauth2/token" uses plain http to a host that is not loopback: use https`},
		{"plain http login endpoint", func(m *MicrosoftDefender) { m.LoginEndpoint = "http://10.0.0.1" },
			`login_endpoint "http://10.0.0.1" uses plain http to a host that is not loopback: use https`},
		{"endpoint without host", func(m *MicrosoftDefender) { m.EndpointURL = "/api/alerts" },
			`endpoint_url "/api/alerts" has no host`},
		{"ftp endpoint", func(m *MicrosoftDefender) { m.EndpointURL = "ftp://alerts.example.com/" },
			`endpoint_url "ftp://alerts.example.com/" must be an https URL`},
		{"no credentials", func(m *MicrosoftDefender) {
			m.TenantID, m.ClientID, m.ClientSecret = "", "", config.Secret{}
		}, "no credentials: set tenant_id, client_id and client_secret (optionally refresh_token), " +
			"or client_certificate, use_managed_identity, use_workload_identity, or access_token"},
		{"static token with credentials", func(m *MicrosoftDefender) { m.AccessToken = config.NewSecret([]byte("x")) },
			"access_token cannot be combined with tenant_id, client_id, client_secret: set either a static access_token or Azure AD credentials"},
		{"static token with scopes", func(m *MicrosoftDefender) {
			m.TenantID, m.ClientID, m.ClientSecret = "", "", config.Secret{}
			m.AccessToken = config.NewSecret([]byte("x"))
			m.Scopes = []string{"https://graph.windows.net/.default"}
		}, "access_token cannot be combined with scopes: set either a static access_token or Azure AD credentials"},
		{"missing secret", func(m *MicrosoftDefender) { m.ClientSecret = config.Secret{} },
			"incomplete Azure AD credentials: client_secret missing"},
		{"refresh token alone", func(m *MicrosoftDefender) {
			m.TenantID, m.ClientID, m.ClientSecret = "", "", config.Secret{}
			m.RefreshToken = config.NewSecret([]byte(testRefreshToken))
		}, "incomplete Azure AD credentials: tenant_id, client_id, client_secret missing"},
		{"resource and scopes", func(m *MicrosoftDefender) {
			m.Resource = "https://graph.windows.net"
			m.Scopes = []string{"https://graph.windows.net/.default"}
		}, "resource and scopes cannot both be set: resource selects the Azure AD v1 token form, scopes the v2 form"},
		{"tenant with a path", func(m *MicrosoftDefender) { m.TenantID = "contoso/../x" },
			`tenant_id "contoso/../x" is not a tenant id or domain name`},
		{"negative page size", func(m *MicrosoftDefender) { m.PageSize = -1 }, "page_size must not be negative, got -1"},
		{"zero lookback", func(m *MicrosoftDefender) { m.InitialLookback = 0 }, "initial_lookback must be positive"},
		{"zero timeout", func(m *MicrosoftDefender) { m.Timeout = 0 }, "timeout must be positive"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			plugin := validPlugin()
			tt.configure(plugin)
			require.EqualError(t, plugin.Init(), tt.err)
		})
	}
}

func TestInitSelectsEndpoints(t *testing.T) {
	tests := []struct {
		name      string
		configure func(*MicrosoftDefender)
		alerts    string
		token     string
	}{
		{"eu", func(m *MicrosoftDefender) { m.Region = "eu" },
			"https://wdatp-alertexporter-eu.windows.com/api/alerts",
			"https://login.microsoftonline.com/" + testTenant + "/oauth2/token"},
		{"uk", func(m *MicrosoftDefender) { m.Region = "uk" },
			"https://wdatp-alertexporter-uk.windows.com/api/alerts",
			"https://login.microsoftonline.com/" + testTenant + "/oauth2/token"},
		{"us", func(m *MicrosoftDefender) { m.Region = "us" },
			"https://wdatp-alertexporter-us.windows.com/api/alerts",
			"https://login.microsoftonline.com/" + testTenant + "/oauth2/token"},
		{"gcc", func(m *MicrosoftDefender) { m.Region = "gcc" },
			"https://wdatp-alertexporter-us.gcc.securitycenter.windows.us/api/alerts",
			"https://login.microsoftonline.com/" + testTenant + "/oauth2/token"},
		{"gcc-high signs in at the US government host", func(m *MicrosoftDefender) { m.Region = "gcc-high" },
			"https://wdatp-alertexporter-us.securitycenter.windows.us/api/alerts",
			"https://login.microsoftonline.us/" + testTenant + "/oauth2/token"},
		{"v2 form with scopes", func(m *MicrosoftDefender) { m.Scopes = []string{"https://graph.windows.net/.default"} },
			"https://wdatp-alertexporter-eu.windows.com/api/alerts",
			"https://login.microsoftonline.com/" + testTenant + "/oauth2/v2.0/token"},
		{"overrides", func(m *MicrosoftDefender) {
			m.EndpointURL = "https://alerts.example.com/api/Alerts/"
			m.LoginEndpoint = "https://login.partner.microsoftonline.cn"
		}, "https://alerts.example.com/api/Alerts/", "https://login.partner.microsoftonline.cn/" + testTenant + "/oauth2/token"},
		{"token_url", func(m *MicrosoftDefender) { m.TokenURL = "https://login.example.com/t/oauth2/token" },
			"https://wdatp-alertexporter-eu.windows.com/api/alerts", "https://login.example.com/t/oauth2/token"},
		{"loopback http", func(m *MicrosoftDefender) {
			m.EndpointURL = "http://127.0.0.1:8089/api/alerts"
			m.TokenURL = "http://[::1]:8089/t/oauth2/token"
		}, "http://127.0.0.1:8089/api/alerts", "http://[::1]:8089/t/oauth2/token"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			plugin := validPlugin()
			tt.configure(plugin)
			require.NoError(t, plugin.Init())
			require.Equal(t, tt.alerts, plugin.endpoint.String())
			token, err := plugin.tokenURL()
			require.NoError(t, err)
			require.Equal(t, tt.token, token.String())
		})
	}
}

func TestInitSelectsGraphClouds(t *testing.T) {
	tests := []struct {
		region, alerts, token, scope string
	}{
		{"", "https://graph.microsoft.com/v1.0/security/alerts_v2",
			"https://login.microsoftonline.com/" + testTenant + "/oauth2/v2.0/token", "https://graph.microsoft.com/.default"},
		{"gcc", "https://graph.microsoft.com/v1.0/security/alerts_v2",
			"https://login.microsoftonline.com/" + testTenant + "/oauth2/v2.0/token", "https://graph.microsoft.com/.default"},
		{"gcc-high", "https://graph.microsoft.us/v1.0/security/alerts_v2",
			"https://login.microsoftonline.us/" + testTenant + "/oauth2/v2.0/token", "https://graph.microsoft.us/.default"},
		{"dod", "https://dod-graph.microsoft.us/v1.0/security/alerts_v2",
			"https://login.microsoftonline.us/" + testTenant + "/oauth2/v2.0/token", "https://dod-graph.microsoft.us/.default"},
		{"china", "https://microsoftgraph.chinacloudapi.cn/v1.0/security/alerts_v2",
			"https://login.partner.microsoftonline.cn/" + testTenant + "/oauth2/v2.0/token", "https://microsoftgraph.chinacloudapi.cn/.default"},
	}
	for _, tt := range tests {
		t.Run("region "+tt.region, func(t *testing.T) {
			plugin := validPlugin()
			plugin.API, plugin.Region = "graph", tt.region
			require.NoError(t, plugin.Init())
			require.Equal(t, tt.alerts, plugin.endpoint.String())
			token, err := plugin.tokenURL()
			require.NoError(t, err)
			require.Equal(t, tt.token, token.String())
			require.Equal(t, []string{tt.scope}, plugin.Scopes)
		})
	}

	// endpoint_url and scopes override; a static token needs neither scope
	// nor sign-in.
	plugin := validPlugin()
	plugin.API, plugin.Region = "graph", ""
	plugin.EndpointURL = "https://graph.example.com/beta/security/alerts_v2"
	require.NoError(t, plugin.Init())
	require.Equal(t, []string{"https://graph.example.com/.default"}, plugin.Scopes)

	static := withDefaults(&MicrosoftDefender{API: "graph", AccessToken: config.NewSecret([]byte("token"))})
	require.NoError(t, static.Init())
	require.Empty(t, static.Scopes)
}

// A host may stop a plugin whose Init failed: nothing to save, no panic.
func TestStopAfterAFailedInit(t *testing.T) {
	p := validPlugin()
	p.MaxRetries = -1
	require.Error(t, p.Init())
	require.NotPanics(t, p.Stop)
}

// Each API has a region that works without setting one: Graph's global
// cloud, and the SIEM API's US host.
func TestEachAPIHasADefaultRegion(t *testing.T) {
	for api, want := range map[string]string{
		"":      "https://graph.microsoft.com/v1.0/security/alerts_v2",
		"graph": "https://graph.microsoft.com/v1.0/security/alerts_v2",
		"siem":  "https://wdatp-alertexporter-us.windows.com/api/alerts",
	} {
		p := newMicrosoftDefender()
		p.API, p.Log = api, testutil.Logger{}
		p.TenantID, p.ClientID, p.ClientSecret = testTenant, testClientID, config.NewSecret([]byte(testClientSecret))
		require.NoError(t, p.Init(), api)
		require.Equal(t, want, p.endpoint.String(), api)
	}
}
