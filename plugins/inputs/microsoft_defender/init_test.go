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
			`api "mde" is not supported: use "graph", "graph_incidents" or "siem"`},
		{"graph filters on siem", func(m *MicrosoftDefender) {
			m.ServiceSources = []string{"microsoftDefenderForEndpoint"}
			m.IncludeEvidence = true
		}, `service_sources, include_evidence: not used by api = "siem"`},
		{"siem keys on graph", func(m *MicrosoftDefender) {
			m.API, m.Region = "graph", ""
			m.DeviceCreatedMachineTags = "VIP"
			m.AuthMethod, m.RefreshToken = methodRefreshToken, config.NewSecret([]byte(testRefreshToken))
		}, `device_created_machine_tags, auth_method = "refresh_token" (the SIEM portal's): not used by api = "graph"`},
		{"graph page size", func(m *MicrosoftDefender) { m.API, m.Region, m.PageSize = "graph", "", 5000 },
			"page_size must be from 1 to 1000 for api = \"graph\", got 5000"},
		{"siem region on graph", func(m *MicrosoftDefender) { m.API = "graph" },
			`region "eu" is a region of api = "siem": for api = "graph" use "global" (the default), "gcc", "gcc-high", "dod" or "china"`},
		{"graph region on siem", func(m *MicrosoftDefender) { m.Region = "dod" },
			`region "dod" is a region of api = "graph": for api = "siem" use "us" (the default), "eu", "uk", "gcc" or "gcc-high"`},
		{"unknown region", func(m *MicrosoftDefender) { m.Region = "asia" },
			`region "asia" is unknown for api = "siem": use "us" (the default), "eu", "uk", "gcc" or "gcc-high", or set endpoint_url`},
		{"plain http endpoint", func(m *MicrosoftDefender) { m.EndpointURL = "http://alerts.example.com/api/alerts" },
			`endpoint_url "http://alerts.example.com/api/alerts" uses plain http to a host that is not loopback: use https`},
		{"plain http login endpoint", func(m *MicrosoftDefender) { m.LoginEndpoint = "http://10.0.0.1" },
			`login_endpoint "http://10.0.0.1" uses plain http to a host that is not loopback: use https`},
		{"endpoint without host", func(m *MicrosoftDefender) { m.EndpointURL = "/api/alerts" },
			`endpoint_url "/api/alerts" has no host`},
		{"ftp endpoint", func(m *MicrosoftDefender) { m.EndpointURL = "ftp://alerts.example.com/" },
			`endpoint_url "ftp://alerts.example.com/" must be an https URL`},
		{"tenant with a path", func(m *MicrosoftDefender) { m.TenantID = "contoso/../x" },
			`tenant_id "contoso/../x" is not a tenant id or domain name`},
		{"negative page size", func(m *MicrosoftDefender) { m.PageSize = -1 }, "page_size must not be negative, got -1"},
		{"zero lookback", func(m *MicrosoftDefender) { m.InitialLookback = 0 }, "initial_lookback must be positive"},
		{"zero timeout", func(m *MicrosoftDefender) { m.Timeout = 0 }, "timeout must be positive"},
		{"requests per minute beyond any budget", func(m *MicrosoftDefender) { m.MaxRequestsPerMinute = 15001 },
			"max_requests_per_minute must be from 1 to 15000, got 15001"},
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
		login     string
	}{
		{"eu", func(m *MicrosoftDefender) { m.Region = "eu" },
			"https://wdatp-alertexporter-eu.windows.com/api/alerts", "https://login.microsoftonline.com"},
		{"uk", func(m *MicrosoftDefender) { m.Region = "uk" },
			"https://wdatp-alertexporter-uk.windows.com/api/alerts", "https://login.microsoftonline.com"},
		{"us", func(m *MicrosoftDefender) { m.Region = "us" },
			"https://wdatp-alertexporter-us.windows.com/api/alerts", "https://login.microsoftonline.com"},
		{"gcc", func(m *MicrosoftDefender) { m.Region = "gcc" },
			"https://wdatp-alertexporter-us.gcc.securitycenter.windows.us/api/alerts", "https://login.microsoftonline.com"},
		{"gcc-high signs in at the US government host", func(m *MicrosoftDefender) { m.Region = "gcc-high" },
			"https://wdatp-alertexporter-us.securitycenter.windows.us/api/alerts", "https://login.microsoftonline.us"},
		{"overrides", func(m *MicrosoftDefender) {
			m.EndpointURL = "https://alerts.example.com/api/Alerts/"
			m.LoginEndpoint = "https://login.partner.microsoftonline.cn"
		}, "https://alerts.example.com/api/Alerts/", "https://login.partner.microsoftonline.cn"},
		{"loopback http", func(m *MicrosoftDefender) {
			m.EndpointURL = "http://127.0.0.1:8089/api/alerts"
			m.LoginEndpoint = "http://[::1]:8089"
		}, "http://127.0.0.1:8089/api/alerts", "http://[::1]:8089"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			plugin := validPlugin()
			tt.configure(plugin)
			require.NoError(t, plugin.Init())
			require.Equal(t, tt.alerts, plugin.endpoint.String())
			login, err := plugin.loginEndpoint()
			require.NoError(t, err)
			require.Equal(t, tt.login, login.String())
			require.Equal(t, []string{"https://graph.windows.net/.default"}, plugin.Scopes, "the SIEM app's resource")
		})
	}
}

func TestInitSelectsGraphClouds(t *testing.T) {
	tests := []struct {
		region, alerts, login, scope string
	}{
		{"", "https://graph.microsoft.com/v1.0/security/alerts_v2", "https://login.microsoftonline.com", "https://graph.microsoft.com/.default"},
		{"gcc", "https://graph.microsoft.com/v1.0/security/alerts_v2", "https://login.microsoftonline.com", "https://graph.microsoft.com/.default"},
		{"gcc-high", "https://graph.microsoft.us/v1.0/security/alerts_v2", "https://login.microsoftonline.us", "https://graph.microsoft.us/.default"},
		{"dod", "https://dod-graph.microsoft.us/v1.0/security/alerts_v2", "https://login.microsoftonline.us", "https://dod-graph.microsoft.us/.default"},
		{"china", "https://microsoftgraph.chinacloudapi.cn/v1.0/security/alerts_v2",
			"https://login.partner.microsoftonline.cn", "https://microsoftgraph.chinacloudapi.cn/.default"},
	}
	for _, tt := range tests {
		t.Run("region "+tt.region, func(t *testing.T) {
			plugin := validPlugin()
			plugin.API, plugin.Region = "graph", tt.region
			require.NoError(t, plugin.Init())
			require.Equal(t, tt.alerts, plugin.endpoint.String())
			login, err := plugin.loginEndpoint()
			require.NoError(t, err)
			require.Equal(t, tt.login, login.String())
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

	static := withDefaults(&MicrosoftDefender{API: "graph", AuthMethod: methodAccessToken, AccessToken: config.NewSecret([]byte("token"))})
	require.NoError(t, static.Init())
	require.Empty(t, static.Scopes)
}

// Each method's keys: the keys of other methods are refused, naming the
// method they belong to, and a missing key is named.
func TestInitChecksTheKeysOfTheAuthMethod(t *testing.T) {
	for _, env := range []string{envTenantID, envClientID, envFederatedTokenFile, envAuthorityHost} {
		t.Setenv(env, "")
	}
	none := func(m *MicrosoftDefender) { m.TenantID, m.ClientID, m.ClientSecret = "", "", config.Secret{} }
	tests := []struct {
		name      string
		configure func(*MicrosoftDefender)
		err       string
	}{
		{"unknown method", func(m *MicrosoftDefender) { m.AuthMethod = "password" },
			`auth_method "password" is not supported: use "client_secret", "client_certificate", "managed_identity", ` +
				`"workload_identity", "refresh_token" or "access_token"`},
		{"client secret: nothing set", none,
			`auth_method = "client_secret" needs tenant_id, client_id, client_secret`},
		{"client secret: a certificate's keys", func(m *MicrosoftDefender) {
			m.ClientCertificatePassword, m.SendCertificateChain = config.NewSecret([]byte("p")), true
		}, `client_certificate_password: only used with auth_method = "client_certificate"; ` +
			`send_certificate_chain: only used with auth_method = "client_certificate"`},
		{"client secret: a refresh token", func(m *MicrosoftDefender) { m.RefreshToken = config.NewSecret([]byte(testRefreshToken)) },
			`refresh_token: only used with auth_method = "refresh_token"`},
		{"client secret: a static token", func(m *MicrosoftDefender) { m.AccessToken = config.NewSecret([]byte("x")) },
			`access_token: only used with auth_method = "access_token"`},
		{"client secret: a federated token file", func(m *MicrosoftDefender) { m.FederatedTokenFile = "/var/run/token" },
			`federated_token_file: only used with auth_method = "workload_identity"`},
		{"client secret: a managed identity", func(m *MicrosoftDefender) { m.ManagedIdentityResourceID = "/subscriptions/x" },
			`managed_identity_resource_id: only used with auth_method = "managed_identity"`},
		{"client secret: a tenant with a path", func(m *MicrosoftDefender) { m.TenantID = "contoso/../x" },
			`tenant_id "contoso/../x" is not a tenant id or domain name`},
		{"client certificate: a secret, no certificate", func(m *MicrosoftDefender) { m.AuthMethod = methodClientCertificate },
			`client_secret: only used with auth_method = "client_secret" or "refresh_token"`},
		{"client certificate: nothing set", func(m *MicrosoftDefender) {
			none(m)
			m.AuthMethod = methodClientCertificate
		}, `auth_method = "client_certificate" needs tenant_id, client_id, client_certificate`},
		{"managed identity: Azure AD keys", func(m *MicrosoftDefender) {
			m.AuthMethod, m.LoginEndpoint = methodManagedIdentity, "https://login.example.com"
		}, `tenant_id: only used with auth_method = "client_secret", "client_certificate", "workload_identity" or "refresh_token"; ` +
			`client_secret: only used with auth_method = "client_secret" or "refresh_token"; ` +
			`login_endpoint: only used with auth_method = "client_secret", "client_certificate", "workload_identity" or "refresh_token"`},
		{"managed identity: two identities", func(m *MicrosoftDefender) {
			none(m)
			m.AuthMethod, m.ClientID, m.ManagedIdentityResourceID = methodManagedIdentity, "mi-client", "/subscriptions/x"
		}, "client_id and managed_identity_resource_id cannot both be set: each names one user-assigned identity"},
		{"managed identity: two scopes", func(m *MicrosoftDefender) {
			none(m)
			m.AuthMethod, m.Scopes = methodManagedIdentity, []string{"https://graph.windows.net/.default", "openid"}
		}, `auth_method = "managed_identity" takes one scope, got 2`},
		{"workload identity: nothing set", func(m *MicrosoftDefender) {
			none(m)
			m.AuthMethod = methodWorkloadIdentity
		}, `auth_method = "workload_identity" needs tenant_id, client_id, federated_token_file ` +
			`(or AZURE_TENANT_ID, AZURE_CLIENT_ID, AZURE_FEDERATED_TOKEN_FILE)`},
		{"refresh token: missing", func(m *MicrosoftDefender) { m.AuthMethod = methodRefreshToken },
			`auth_method = "refresh_token" needs refresh_token`},
		{"refresh token: two scopes", func(m *MicrosoftDefender) {
			m.AuthMethod, m.RefreshToken = methodRefreshToken, config.NewSecret([]byte(testRefreshToken))
			m.Scopes = []string{"https://graph.windows.net/.default", "offline_access"}
		}, `auth_method = "refresh_token" takes one scope, got 2`},
		{"access token: credentials and scopes", func(m *MicrosoftDefender) {
			m.AuthMethod, m.AccessToken = methodAccessToken, config.NewSecret([]byte("x"))
			m.Scopes = []string{"https://graph.windows.net/.default"}
		}, `tenant_id: only used with auth_method = "client_secret", "client_certificate", "workload_identity" or "refresh_token"; ` +
			`client_id: only used with auth_method = "client_secret", "client_certificate", "workload_identity", "refresh_token" or "managed_identity"; ` +
			`client_secret: only used with auth_method = "client_secret" or "refresh_token"; ` +
			`scopes: only used with auth_method = "client_secret", "client_certificate", "managed_identity", "workload_identity" or "refresh_token"`},
		{"access token: missing", func(m *MicrosoftDefender) {
			none(m)
			m.AuthMethod = methodAccessToken
		}, `auth_method = "access_token" needs access_token`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			plugin := validPlugin()
			tt.configure(plugin)
			require.EqualError(t, plugin.Init(), tt.err)
		})
	}
}

// The pod's environment fills the workload identity's keys that the
// configuration leaves out, AZURE_AUTHORITY_HOST the sign-in host.
func TestWorkloadIdentityTakesThePodsEnvironment(t *testing.T) {
	t.Setenv(envTenantID, testTenant)
	t.Setenv(envClientID, testClientID)
	t.Setenv(envFederatedTokenFile, "/var/run/secrets/azure/tokens/azure-identity-token")
	t.Setenv(envAuthorityHost, "https://login.microsoftonline.us/")
	plugin := withDefaults(&MicrosoftDefender{AuthMethod: methodWorkloadIdentity})
	require.NoError(t, plugin.Init())
	require.Equal(t, []string{testTenant, testClientID, "/var/run/secrets/azure/tokens/azure-identity-token"},
		[]string{plugin.TenantID, plugin.ClientID, plugin.FederatedTokenFile})
	login, err := plugin.loginEndpoint()
	require.NoError(t, err)
	require.Equal(t, "https://login.microsoftonline.us/", login.String())
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
