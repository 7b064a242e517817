package microsoft_defender

import (
	"context"
	"encoding/pem"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/influxdata/telegraf/config"
	"github.com/influxdata/telegraf/testutil"
)

// https through http_proxy_url is a CONNECT tunnel: the proxy learns the
// host and port, never the form or the token.
func TestRequestsGoThroughTheConfiguredProxy(t *testing.T) {
	var mu sync.Mutex
	var served []string
	server := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		served = append(served, r.Method+" "+r.URL.String()+" from "+r.RemoteAddr)
		mu.Unlock()
		if strings.HasSuffix(r.URL.Path, "/token") {
			w.Header().Set("Content-Type", "application/json")
			respond(t, w, []byte(`{"token_type":"Bearer","expires_in":3599,"access_token":"via-proxy"}`))
			return
		}
		respond(t, w, []byte(`[]`))
	}))
	defer server.Close()
	host := strings.TrimPrefix(server.URL, "https://")

	var tunnels []string
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodConnect {
			t.Errorf("the proxy was sent %s %s, not a tunnel", r.Method, r.URL)
			w.WriteHeader(http.StatusMethodNotAllowed)
			return
		}
		upstream, err := net.Dial("tcp", r.Host)
		if err != nil {
			w.WriteHeader(http.StatusBadGateway)
			return
		}
		mu.Lock()
		tunnels = append(tunnels, "CONNECT "+r.Host+" from "+upstream.LocalAddr().String())
		mu.Unlock()
		w.WriteHeader(http.StatusOK)
		client, _, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Errorf("hijacking the tunnel: %v", err)
			upstream.Close()
			return
		}
		go func() { io.Copy(upstream, client); upstream.Close() }() //nolint:errcheck // the tunnel ends with either side
		io.Copy(client, upstream)                                   //nolint:errcheck // the tunnel ends with either side
		client.Close()
	}))
	defer proxy.Close()

	caFile := filepath.Join(t.TempDir(), "ca.pem")
	cert := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: server.Certificate().Raw})
	require.NoError(t, os.WriteFile(caFile, cert, 0o600))
	plugin := withDefaults(&MicrosoftDefender{
		EndpointURL:     server.URL + "/api/alerts",
		LoginEndpoint:   server.URL,
		TenantID:        testTenant,
		ClientID:        testClientID,
		ClientSecret:    config.NewSecret([]byte(testClientSecret)),
		InitialLookback: config.Duration(time.Hour),
		Timeout:         config.Duration(5 * time.Second),
		now:             func() time.Time { return fixedNow },
	})
	plugin.HTTPProxyURL = proxy.URL
	plugin.TLSCA = caFile
	require.NoError(t, plugin.Init())
	gatherOK(t, plugin)
	plugin.Stop()

	mu.Lock()
	defer mu.Unlock()
	require.NotEmpty(t, tunnels)
	via := make(map[string]bool)
	for _, tunnel := range tunnels {
		target, from, _ := strings.Cut(tunnel, " from ")
		require.Equal(t, "CONNECT "+host, target)
		via[from] = true
	}
	require.Len(t, served, 2)
	for i, want := range []string{
		"POST /" + testTenant + "/oauth2/v2.0/token",
		"GET /api/alerts?limit=10000&sinceTimeUtc=2020-09-30T14%3A00%3A00.0000000Z&untilTimeUtc=2020-09-30T15%3A00%3A00.0000000Z",
	} {
		request, from, _ := strings.Cut(served[i], " from ")
		require.Equal(t, want, request)
		require.True(t, via[from], "%s did not come through the proxy", request)
	}
}

// A plain http endpoint through http_proxy_url would hand the proxy the
// client secret and the bearer token: refused at start-up.
func TestPlainHTTPThroughAProxyIsRefused(t *testing.T) {
	for _, tt := range []struct {
		name      string
		configure func(*MicrosoftDefender)
		err       string
	}{
		{"loopback endpoint_url", func(m *MicrosoftDefender) {
			m.AuthMethod, m.AccessToken = methodAccessToken, config.NewSecret([]byte(testAccessToken))
			m.EndpointURL = "http://127.0.0.1:8080/api/alerts"
		}, `endpoint_url "http://127.0.0.1:8080/api/alerts" is plain http and http_proxy_url sends it through a proxy, ` +
			`which would read the bearer token in clear: use https, or remove http_proxy_url`},
		{"loopback login_endpoint", func(m *MicrosoftDefender) {
			m.TenantID, m.ClientID, m.ClientSecret = testTenant, testClientID, config.NewSecret([]byte(testClientSecret))
			m.EndpointURL = "https://alerts.example.com/api/alerts"
			m.LoginEndpoint = "http://localhost:8081"
		}, `login_endpoint "http://localhost:8081" is plain http and http_proxy_url sends it ` +
			`through a proxy, which would read the client secret in clear: use https, or remove http_proxy_url`},
		{"loopback login_endpoint of a refresh token", func(m *MicrosoftDefender) {
			m.TenantID, m.ClientID, m.ClientSecret = testTenant, testClientID, config.NewSecret([]byte(testClientSecret))
			m.AuthMethod, m.RefreshToken = methodRefreshToken, config.NewSecret([]byte(testRefreshToken))
			m.EndpointURL = "https://alerts.example.com/api/alerts"
			m.LoginEndpoint = "http://[::1]:8081"
		}, `login_endpoint "http://[::1]:8081" is plain http and http_proxy_url sends it through a proxy, ` +
			`which would read the client secret and refresh token in clear: use https, or remove http_proxy_url`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			plugin := withDefaults(&MicrosoftDefender{Timeout: config.Duration(5 * time.Second)})
			plugin.HTTPProxyURL = "http://proxyuser:" + url.QueryEscape(testClientSecret) + "@proxy.example.com:3128"
			tt.configure(plugin)
			require.EqualError(t, plugin.Init(), tt.err)

			// Without the proxy the same endpoints are accepted.
			plugin = withDefaults(&MicrosoftDefender{Timeout: config.Duration(5 * time.Second)})
			tt.configure(plugin)
			require.NoError(t, plugin.Init())
		})
	}
}

func TestServerCertificatesAreVerified(t *testing.T) {
	server := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		respond(t, w, []byte(`[]`))
	}))
	defer server.Close()
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	cert := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: server.Certificate().Raw})
	require.NoError(t, os.WriteFile(caFile, cert, 0o600))

	newPlugin := func(ca string) *MicrosoftDefender {
		plugin := withDefaults(&MicrosoftDefender{
			EndpointURL:     server.URL + "/api/alerts",
			AuthMethod:      methodAccessToken,
			AccessToken:     config.NewSecret([]byte(testAccessToken)),
			InitialLookback: config.Duration(time.Hour),
			Timeout:         config.Duration(5 * time.Second),
			now:             func() time.Time { return fixedNow },
		})
		plugin.TLSCA = ca
		require.NoError(t, plugin.Init())
		return plugin
	}

	// Without the CA the certificate is refused, and the error says so
	// without the token.
	logger := &testutil.CaptureLogger{}
	plugin := newPlugin("")
	plugin.Log = logger
	msg, _ := gatherError(t, plugin, logger)
	require.Equal(t, "SIEM API request to "+strings.TrimPrefix(server.URL, "https://")+
		" failed: tls: failed to verify certificate: x509: certificate signed by unknown authority", msg)

	gatherOK(t, newPlugin(caFile))
}

// Proxy and TLS failures name what failed, not the proxy's password.
func TestTransportErrorsHoldNoSecret(t *testing.T) {
	tlsServer := httptest.NewTLSServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	defer tlsServer.Close()
	for name, configure := range map[string]func(*MicrosoftDefender){
		"proxy with a password refuses connections": func(m *MicrosoftDefender) {
			m.HTTPProxyURL = "http://proxyuser:" + url.QueryEscape(testClientSecret) + "@127.0.0.1:1"
			m.EndpointURL = "https://alerts.example.com/api/alerts"
		},
		"unknown certificate authority": func(m *MicrosoftDefender) {
			m.EndpointURL = tlsServer.URL + "/api/alerts"
		},
	} {
		t.Run(name, func(t *testing.T) {
			logger := &testutil.CaptureLogger{}
			plugin := withDefaults(&MicrosoftDefender{
				AuthMethod:  methodAccessToken,
				AccessToken: config.NewSecret([]byte(testAccessToken)),
				Log:         logger,
				now:         func() time.Time { return fixedNow },
				sleep:       func(ctx context.Context, _ time.Duration) error { return ctx.Err() },
			})
			configure(plugin)
			require.NoError(t, plugin.Init())
			gatherError(t, plugin, logger)
		})
	}
}

func TestInvalidProxyURLIsNotRepeated(t *testing.T) {
	plugin := validPlugin()
	plugin.HTTPProxyURL = "http://proxyuser:" + testClientSecret + "@127.0.0.1:1"
	require.EqualError(t, plugin.Init(), "http_proxy_url is not a valid URL")
}

// The managed identity's request, with its secret header, never goes
// through http_proxy_url (nor the environment's proxy); the API's requests
// still do.
func TestManagedIdentityRequestsGoThroughNoProxy(t *testing.T) {
	m := &MicrosoftDefender{AuthMethod: methodManagedIdentity}
	m.HTTPProxyURL = "http://proxy.example:3128"
	signIn, api, err := m.httpClients()
	require.NoError(t, err)
	require.Nil(t, signIn.Transport.(*http.Transport).Proxy)
	proxyURL, err := api.Transport.(proxyTransport).Proxy(httptest.NewRequest(http.MethodGet, "https://graph.microsoft.com/", nil))
	require.NoError(t, err)
	require.Equal(t, "http://proxy.example:3128", proxyURL.String())

	m.AuthMethod = methodClientSecret
	signIn, _, err = m.httpClients()
	require.NoError(t, err)
	require.NotNil(t, signIn.Transport.(proxyTransport).Proxy, "other sign-ins go where the API goes")
}
