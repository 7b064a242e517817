package microsoft_defender

import (
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/influxdata/telegraf/config"
	"github.com/influxdata/telegraf/testutil"
)

func TestRequestsGoThroughTheConfiguredProxy(t *testing.T) {
	var seen []string
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen = append(seen, r.Method+" "+r.URL.String())
		if strings.HasSuffix(r.URL.Path, "/token") {
			w.Header().Set("Content-Type", "application/json")
			respond(t, w, []byte(`{"token_type":"Bearer","expires_in":3599,"access_token":"via-proxy"}`))
			return
		}
		respond(t, w, []byte(`[]`))
	}))
	defer proxy.Close()

	plugin := withDefaults(&MicrosoftDefender{
		// Loopback http, so that the proxy sees the request in the clear.
		EndpointURL:     "http://127.0.0.1:1/api/alerts",
		LoginEndpoint:   "http://127.0.0.1:1",
		TenantID:        testTenant,
		ClientID:        testClientID,
		ClientSecret:    config.NewSecret([]byte(testClientSecret)),
		InitialLookback: config.Duration(time.Hour),
		Timeout:         config.Duration(5 * time.Second),
		now:             func() time.Time { return fixedNow },
	})
	plugin.HTTPProxyURL = proxy.URL
	require.NoError(t, plugin.Init())
	gatherOK(t, plugin)
	require.Equal(t, []string{
		"POST http://127.0.0.1:1/" + testTenant + "/oauth2/token",
		"GET http://127.0.0.1:1/api/alerts?limit=10000&sinceTimeUtc=2020-09-30T13%3A59%3A00.0000000Z&untilTimeUtc=2020-09-30T14%3A59%3A00.0000000Z",
	}, seen)
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
