package microsoft_defender

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"software.sslmate.com/src/go-pkcs12"

	"github.com/influxdata/telegraf/config"
	"github.com/influxdata/telegraf/testutil"
)

var (
	testKeysOnce sync.Once
	testKeys     [2]*rsa.PrivateKey
)

// testCertificate is a self-signed certificate with one of two RSA keys
// made once per test binary; the modes' end-to-end tests against the
// simulator live in cmd/telegraf-defender.
func testCertificate(t *testing.T, keyIndex int, cn string) (*x509.Certificate, *rsa.PrivateKey) {
	t.Helper()
	testKeysOnce.Do(func() {
		for i := range testKeys {
			key, err := rsa.GenerateKey(rand.Reader, 2048)
			if err != nil {
				panic(err)
			}
			testKeys[i] = key
		}
	})
	key := testKeys[keyIndex]
	template := &x509.Certificate{SerialNumber: big.NewInt(int64(keyIndex + 1)), Subject: pkix.Name{CommonName: cn},
		NotBefore: fixedNow.Add(-time.Hour), NotAfter: fixedNow.Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, template, template, &key.PublicKey, key)
	require.NoError(t, err)
	cert, err := x509.ParseCertificate(der)
	require.NoError(t, err)
	return cert, key
}

func pemBlock(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

func writeTemp(t *testing.T, name string, data []byte) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	require.NoError(t, os.WriteFile(path, data, 0o600))
	return path
}

func TestLoadCertificate(t *testing.T) {
	cert, key := testCertificate(t, 0, "leaf")
	other, otherKey := testCertificate(t, 1, "issuer")
	pkcs8, err := x509.MarshalPKCS8PrivateKey(key)
	require.NoError(t, err)
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	ecDER, err := x509.MarshalECPrivateKey(ecKey)
	require.NoError(t, err)
	modern, err := pkcs12.Modern.Encode(key, cert, []*x509.Certificate{other}, "p4ss-w0rd")
	require.NoError(t, err)
	legacy, err := pkcs12.LegacyDES.Encode(key, cert, nil, "p4ss-w0rd")
	require.NoError(t, err)
	noPassword, err := pkcs12.Modern.WithIterations(1).Encode(key, cert, nil, "")
	require.NoError(t, err)

	tests := []struct {
		name     string
		file     string
		data     []byte
		password string
		err      string
		chain    int
	}{
		{"PEM, PKCS#1 key", "c.pem", append(pemBlock("CERTIFICATE", cert.Raw), pemBlock("RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(key))...), "", "", 1},
		{"PEM, PKCS#8 key first, chain before the leaf", "c.pem", append(append(pemBlock("PRIVATE KEY", pkcs8), pemBlock("CERTIFICATE", other.Raw)...),
			pemBlock("CERTIFICATE", cert.Raw)...), "", "", 2},
		{"PKCS#12 of OpenSSL 3 with its chain", "c.pfx", modern, "p4ss-w0rd", "", 2},
		{"PKCS#12 with 3DES", "c.p12", legacy, "p4ss-w0rd", "", 1},
		{"PKCS#12 without password", "c.pfx", noPassword, "", "", 1},
		{"PKCS#12, wrong password", "c.pfx", modern, "wr0ng-w0rd",
			"the PKCS#12 file's password is wrong or missing: check client_certificate_password", 0},
		{"PKCS#12, not one", "c.pfx", []byte("garbage"), "", "not a PKCS#12 file with one key and its certificate: ", 0},
		{"larger than 1 MiB", "c.pfx", bytes.Repeat([]byte("a"), maxCertificateFile+1), "", "the file is larger than 1024 KiB", 0},
		{"key of another certificate", "c.pem",
			append(pemBlock("CERTIFICATE", cert.Raw), pemBlock("RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(otherKey))...), "",
			"the private key does not match the certificate", 0},
		{"no key", "c.pem", pemBlock("CERTIFICATE", cert.Raw), "", "not a PEM file with a certificate and an unencrypted RSA key: found no private key", 0},
		{"no certificate", "c.pem", pemBlock("PRIVATE KEY", pkcs8), "",
			"not a PEM file with a certificate and an unencrypted RSA key: found no certificate", 0},
		{"encrypted key", "c.pem", append(pemBlock("CERTIFICATE", cert.Raw), pemBlock("ENCRYPTED PRIVATE KEY", []byte{1})...), "",
			"the key of a PEM file must not be encrypted (client_certificate_password is for PKCS#12 files): " +
				"use an unencrypted key, or a PKCS#12 file with client_certificate_password", 0},
		{"EC key", "c.pem", append(pemBlock("CERTIFICATE", cert.Raw), pemBlock("EC PRIVATE KEY", ecDER)...), "",
			"not a PEM file with a certificate and an unencrypted RSA key: found no private key", 0},
		{"password for a PEM file", "c.pem", append(pemBlock("CERTIFICATE", cert.Raw), pemBlock("PRIVATE KEY", pkcs8)...), "p4ss-w0rd",
			"the key of a PEM file must not be encrypted (client_certificate_password is for PKCS#12 files): " +
				"use an unencrypted key, or a PKCS#12 file with client_certificate_password", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := writeTemp(t, tt.file, tt.data)
			var password config.Secret
			if tt.password != "" {
				password = config.NewSecret([]byte(tt.password))
			}
			certs, gotKey, err := loadCertificate(path, &password)
			if tt.err != "" {
				require.ErrorContains(t, err, fmt.Sprintf("client_certificate %q: %s", path, tt.err))
				if tt.password != "" {
					require.NotContains(t, err.Error(), tt.password)
				}
				return
			}
			require.NoError(t, err)
			require.Len(t, certs, tt.chain)
			require.Equal(t, cert.Raw, certs[0].Raw, "the certificate of the key comes first")
			require.True(t, gotKey.Equal(key))
		})
	}
}

// signInPlugin is a plugin of one sign-in method whose sign-in requests
// go to recorder instead of the network.
func signInPlugin(t *testing.T, recorder http.RoundTripper, configure func(*MicrosoftDefender)) *MicrosoftDefender {
	t.Helper()
	plugin := withDefaults(&MicrosoftDefender{Log: testutil.Logger{}, now: func() time.Time { return fixedNow }})
	configure(plugin)
	require.NoError(t, plugin.Init())
	var err error
	plugin.tokens, err = plugin.tokenSource(&http.Client{Transport: recorder})
	require.NoError(t, err)
	return plugin
}

type recordedRequests struct {
	mu       sync.Mutex
	requests []string
}

func (r *recordedRequests) RoundTrip(req *http.Request) (*http.Response, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.requests = append(r.requests, req.Method+" "+req.URL.String())
	return nil, errors.New("no network in this test")
}

// Each method signs in where the region's cloud has its Azure AD, or where
// login_endpoint says, with the token request as its only request (the
// tenant's discovery document is the transport's own); managed identity
// asks the host's endpoint (IMDS when the environment names no other).
func TestSignInGoesToTheRegionsCloud(t *testing.T) {
	cert, key := testCertificate(t, 0, "leaf")
	certFile := writeTemp(t, "c.pem", append(pemBlock("CERTIFICATE", cert.Raw), pemBlock("RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(key))...))
	tokenFile := writeTemp(t, "token", []byte("federated-token"))
	for _, env := range []string{"IDENTITY_ENDPOINT", "IDENTITY_HEADER", "IMDS_ENDPOINT", "MSI_ENDPOINT", "MSI_SECRET", envAuthorityHost} {
		t.Setenv(env, "")
	}
	certificate := func(api, region string) func(*MicrosoftDefender) {
		return func(m *MicrosoftDefender) {
			m.API, m.Region, m.TenantID, m.ClientID = api, region, testTenant, testClientID
			m.AuthMethod, m.ClientCertificate = methodClientCertificate, certFile
		}
	}
	secret := func(api, region string) func(*MicrosoftDefender) {
		return func(m *MicrosoftDefender) {
			m.API, m.Region, m.TenantID, m.ClientID = api, region, testTenant, testClientID
			m.ClientSecret = config.NewSecret([]byte(testClientSecret))
		}
	}
	const v2 = "/" + testTenant + "/oauth2/v2.0/token"
	tests := []struct {
		name      string
		configure func(*MicrosoftDefender)
		want      string
	}{
		{"client secret, SIEM us", secret("siem", "us"), "POST https://login.microsoftonline.com" + v2},
		{"client secret, SIEM gcc-high", secret("siem", "gcc-high"), "POST https://login.microsoftonline.us" + v2},
		{"client secret, Graph china", secret("graph", "china"), "POST https://login.partner.microsoftonline.cn" + v2},
		{"certificate, SIEM us", certificate("siem", "us"), "POST https://login.microsoftonline.com" + v2},
		{"certificate, Graph global", certificate("graph", ""), "POST https://login.microsoftonline.com" + v2},
		{"certificate, Graph dod", certificate("graph", "dod"), "POST https://login.microsoftonline.us" + v2},
		{"login_endpoint", func(m *MicrosoftDefender) {
			certificate("graph", "china")(m)
			m.LoginEndpoint = "https://login.example.com/"
		}, "POST https://login.example.com" + v2},
		{"login_endpoint in plain http on loopback", func(m *MicrosoftDefender) {
			secret("siem", "eu")(m)
			m.LoginEndpoint = "http://127.0.0.1:8089"
		}, "POST http://127.0.0.1:8089" + v2},
		{"workload identity, Graph gcc-high", func(m *MicrosoftDefender) {
			m.API, m.Region, m.TenantID, m.ClientID = "graph", "gcc-high", testTenant, testClientID
			m.AuthMethod, m.FederatedTokenFile = methodWorkloadIdentity, tokenFile
		}, "POST https://login.microsoftonline.us" + v2},
		{"refresh token, SIEM eu", func(m *MicrosoftDefender) {
			secret("siem", "eu")(m)
			m.AuthMethod, m.RefreshToken = methodRefreshToken, config.NewSecret([]byte(testRefreshToken))
		}, "POST https://login.microsoftonline.com/" + testTenant + "/oauth2/token"},
		{"managed identity, SIEM", func(m *MicrosoftDefender) { m.Region, m.AuthMethod = "eu", methodManagedIdentity },
			"GET http://169.254.169.254/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https%3A%2F%2Fgraph.windows.net"},
		{"managed identity by client id, Graph gcc-high", func(m *MicrosoftDefender) {
			m.API, m.Region, m.AuthMethod, m.ClientID = "graph", "gcc-high", methodManagedIdentity, "mi-client"
		}, "GET http://169.254.169.254/metadata/identity/oauth2/token?api-version=2018-02-01&client_id=mi-client&resource=https%3A%2F%2Fgraph.microsoft.us"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			recorder := &recordedRequests{}
			plugin := signInPlugin(t, recorder, tt.configure)
			_, err := plugin.tokens.token(t.Context())
			require.ErrorContains(t, err, "no network in this test")
			require.NotEmpty(t, recorder.requests)
			require.Equal(t, tt.want, strings.TrimSuffix(recorder.requests[0], "?"))
		})
	}
}

func TestExpiredCertificateIsReportedAtStart(t *testing.T) {
	cert, key := testCertificate(t, 0, "leaf")
	certFile := writeTemp(t, "c.pem", append(pemBlock("CERTIFICATE", cert.Raw), pemBlock("RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(key))...))
	logger := &testutil.CaptureLogger{}
	plugin := validPlugin()
	plugin.Log, plugin.ClientSecret, plugin.ClientCertificate = logger, config.Secret{}, certFile
	plugin.AuthMethod = methodClientCertificate
	plugin.now = func() time.Time { return cert.NotAfter.Add(time.Second) }
	require.NoError(t, plugin.Init())
	require.Equal(t, []string{"W! [] The certificate in client_certificate expired on " + cert.NotAfter.UTC().Format(time.RFC3339) +
		": Azure AD refuses it until a new one is registered and configured"}, logger.Warnings())
}

// A sign-in service echoing the request back, whatever the method: the
// message names the status, the OAuth code and the AADSTS number, and
// quotes nothing of the answer, so neither the client secret, the
// federated token, the client assertion, the managed identity header nor
// the certificate password.
func TestSignInErrorsQuoteNothingOfTheAnswer(t *testing.T) {
	const federated, header, password = "federated-token-must-not-leak", "mi-header-must-not-leak", "pfx-password-must-not-leak"
	tokenFile := writeTemp(t, "token", []byte(federated))
	t.Setenv("IDENTITY_ENDPOINT", "http://127.0.0.1:1/msi/token")
	t.Setenv("IDENTITY_HEADER", header)
	echo := roundTripFunc(func(req *http.Request) (*http.Response, error) {
		var form string
		if req.Body != nil {
			b, err := io.ReadAll(req.Body)
			if err != nil {
				return nil, err
			}
			form = string(b)
		}
		body := fmt.Sprintf(`{"error":"invalid_client","error_description":"AADSTS50027: echo %s %s %s","message":%q}`,
			form, req.Header.Get("X-IDENTITY-HEADER"), password, header)
		return &http.Response{StatusCode: http.StatusBadRequest, Status: "400 Bad Request", Body: io.NopCloser(strings.NewReader(body)), Request: req,
			Header: http.Header{"Content-Type": {"application/json"}}}, nil
	})
	cert, key := testCertificate(t, 0, "leaf")
	pfx, err := pkcs12.Modern.Encode(key, cert, nil, password)
	require.NoError(t, err)
	pfxFile := writeTemp(t, "c.pfx", pfx)

	for _, tt := range []struct {
		name      string
		configure func(*MicrosoftDefender)
		want      string
	}{
		{"client secret", func(m *MicrosoftDefender) {
			m.TenantID, m.ClientID, m.LoginEndpoint = "t", testClientID, "https://login.example.com"
			m.ClientSecret = config.NewSecret([]byte(testClientSecret))
		}, "token request to login.example.com failed: HTTP 400 Bad Request: invalid_client (AADSTS50027)"},
		{"refresh token", func(m *MicrosoftDefender) {
			m.TenantID, m.ClientID, m.LoginEndpoint = "t", testClientID, "https://login.example.com"
			m.ClientSecret = config.NewSecret([]byte(testClientSecret))
			m.AuthMethod, m.RefreshToken = methodRefreshToken, config.NewSecret([]byte(testRefreshToken))
		}, "token request to login.example.com failed: HTTP 400 Bad Request: invalid_client (AADSTS50027)"},
		{"workload identity", func(m *MicrosoftDefender) {
			m.TenantID, m.ClientID, m.LoginEndpoint = "t", testClientID, "https://login.example.com"
			m.AuthMethod, m.FederatedTokenFile = methodWorkloadIdentity, tokenFile
		}, "workload identity: token request to login.example.com failed: HTTP 400 Bad Request: invalid_client (AADSTS50027)"},
		{"managed identity", func(m *MicrosoftDefender) { m.AuthMethod = methodManagedIdentity },
			"managed identity: token request to 127.0.0.1:1 failed: HTTP 400 Bad Request: invalid_client (AADSTS50027). " + notAssigned},
		{"client certificate", func(m *MicrosoftDefender) {
			m.TenantID, m.ClientID, m.ClientCertificate, m.LoginEndpoint = "t", testClientID, pfxFile, "https://login.example.com"
			m.AuthMethod, m.ClientCertificatePassword = methodClientCertificate, config.NewSecret([]byte(password))
		}, "client certificate: token request to login.example.com failed: HTTP 400 Bad Request: invalid_client (AADSTS50027)"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			plugin := signInPlugin(t, echo, func(m *MicrosoftDefender) {
				m.Region = "eu"
				tt.configure(m)
			})
			_, err := plugin.tokens.token(t.Context())
			require.EqualError(t, err, tt.want)
		})
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(req *http.Request) (*http.Response, error) { return f(req) }

// A token endpoint whose error code is not an OAuth one (here the client
// secret, echoed) and a proxy's error page: neither is quoted.
func TestTokenAnswersThatAreNotOAuthErrorsAreNotQuoted(t *testing.T) {
	for _, tt := range []struct {
		name   string
		status int
		body   func(secret string) string
		want   string
	}{
		{"code echoing the secret", http.StatusBadRequest,
			func(secret string) string {
				return `{"error":"` + secret + `","error_description":"AADSTS7000215: ` + secret + `"}`
			},
			"HTTP 400 Bad Request (AADSTS7000215). The client secret is wrong, or is the secret's ID rather than its value: " +
				"create a new client secret for the app and set its value as client_secret"},
		{"proxy page", http.StatusBadGateway,
			func(secret string) string {
				return "<h1>Bad gateway</h1><pre>client_secret=" + url.QueryEscape(secret) + "</pre>"
			},
			"HTTP 502 Bad Gateway"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			server := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if err := r.ParseForm(); err != nil {
					t.Errorf("parsing the token request: %v", err)
				}
				w.WriteHeader(tt.status)
				respond(t, w, []byte(tt.body(r.PostForm.Get("client_secret"))))
			}))
			defer server.Close()
			logger := &testutil.CaptureLogger{}
			plugin := stubbedPlugin(t, server, logger)
			plugin.MaxRetries = 0
			msg, _ := gatherError(t, plugin, logger)
			require.Equal(t, "token request to "+strings.TrimPrefix(server.URL, "http://")+" failed: "+tt.want, msg)
		})
	}
}

const notAssigned = "The managed identity is not assigned to this resource: enable the system-assigned one, or assign the user-assigned one"

// A sign-in error says what fixes it where that is known: the AADSTS number (by method where it means more than one
// thing), a managed identity endpoint that does not answer or answers 400.
func TestTokenErrorsSayTheFix(t *testing.T) {
	aad := func(method string, status int, aadsts string) error {
		return &tokenError{method: method, host: "login", status: status, aadsts: aadsts,
			msg: fmt.Sprintf("HTTP %d %s: invalid_client (AADSTS%s)", status, http.StatusText(status), aadsts)}
	}
	const certificate = "Azure AD refused the certificate: register the one in client_certificate on the app (Certificates & secrets), " +
		"a new one if it expired, or set send_certificate_chain = true for subject name/issuer authentication"
	tests := []struct {
		name string
		err  error
		want string
	}{
		{"certificate not registered, expired or of another key", aad("client certificate", 401, "700027"),
			"client certificate: token request to login failed: HTTP 401 Unauthorized: invalid_client (AADSTS700027). " + certificate},
		{"federated token expired", aad("workload identity", 400, "700024"),
			"workload identity: token request to login failed: HTTP 400 Bad Request: invalid_client (AADSTS700024). " +
				"The federated token has expired: federated_token_file must be the token the kubelet rotates"},
		{"700024 of another method", aad("client certificate", 400, "700024"),
			"client certificate: token request to login failed: HTTP 400 Bad Request: invalid_client (AADSTS700024)"},
		{"no federated credential", aad("workload identity", 400, "70021"),
			"workload identity: token request to login failed: HTTP 400 Bad Request: invalid_client (AADSTS70021). " +
				"No federated credential of the app matches the token: add one with the cluster's OIDC issuer, the subject " +
				"system:serviceaccount:NAMESPACE:NAME and the audience api://AzureADTokenExchange"},
		{"unknown tenant", aad("workload identity", 400, "90002"),
			"workload identity: token request to login failed: HTTP 400 Bad Request: invalid_client (AADSTS90002). " +
				"The tenant does not exist: check tenant_id, and that login_endpoint (or region) is the tenant's cloud"},
		{"wrong client secret", aad("", 401, "7000215"),
			"token request to login failed: HTTP 401 Unauthorized: invalid_client (AADSTS7000215). The client secret is wrong, " +
				"or is the secret's ID rather than its value: create a new client secret for the app and set its value as client_secret"},
		{"expired client secret", aad("", 401, "7000222"),
			"token request to login failed: HTTP 401 Unauthorized: invalid_client (AADSTS7000222). The client secret has expired: " +
				"create a new client secret for the app and set its value as client_secret"},
		{"unknown app", aad("", 400, "700016"),
			"token request to login failed: HTTP 400 Bad Request: invalid_client (AADSTS700016). " +
				"No app with this client_id exists in the tenant: check client_id, and that tenant_id is the app's tenant"},
		{"another AADSTS number", aad("", 400, "50027"), "token request to login failed: HTTP 400 Bad Request: invalid_client (AADSTS50027)"},
		{"token file", &tokenError{method: "workload identity", msg: `reading federated_token_file "/t": no such file or directory`},
			`workload identity: reading federated_token_file "/t": no such file or directory`},
		{"identity not assigned", &tokenError{method: "managed identity", host: "imds", status: 400, msg: "HTTP 400 Bad Request"},
			"managed identity: token request to imds failed: HTTP 400 Bad Request. " + notAssigned},
		{"identity service failing", &tokenError{method: "managed identity", host: "imds", status: 500, msg: "HTTP 500 Internal Server Error"},
			"managed identity: token request to imds failed: HTTP 500 Internal Server Error"},
		{"no identity endpoint",
			&tokenError{method: "managed identity", host: "169.254.169.254", err: errors.New("dial tcp: i/o timeout")},
			"managed identity: token request to 169.254.169.254 failed: dial tcp: i/o timeout. No managed identity endpoint answered: " +
				"the plugin runs outside Azure, or a firewall or proxy blocks IMDS (169.254.169.254: add it to NO_PROXY); " +
				"on App Service, Functions or Arc IDENTITY_ENDPOINT must be set"},
		{"no sign-in endpoint", &tokenError{host: "login", err: errors.New("dial tcp: i/o timeout")},
			"token request to login failed: dial tcp: i/o timeout"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			require.EqualError(t, tt.err, tt.want)
		})
	}
}

// At a poll too, not only in the probe, a refused sign-in says what fixes it; the fix quotes nothing of the answer.
func TestGatherTokenErrorSaysTheFix(t *testing.T) {
	server := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := r.ParseForm(); err != nil {
			t.Errorf("parsing the token request: %v", err)
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		respond(t, w, []byte(`{"error":"invalid_client","error_description":"AADSTS7000222: The provided client secret keys for app '`+
			r.PostForm.Get("client_id")+`' are expired. `+r.PostForm.Get("client_secret")+`\r\nTrace ID: 1"}`))
	}))
	defer server.Close()
	logger := &testutil.CaptureLogger{}
	plugin := stubbedPlugin(t, server, logger)
	plugin.MaxRetries = 0
	msg, acc := gatherError(t, plugin, logger)
	require.Equal(t, "token request to "+strings.TrimPrefix(server.URL, "http://")+" failed: HTTP 401 Unauthorized: invalid_client "+
		"(AADSTS7000222). The client secret has expired: create a new client secret for the app and set its value as client_secret", msg)
	requirePollStatus(t, acc, "error")
}

// endless is a body that never ends; n counts the bytes read of it.
type endless struct{ n *atomic.Int64 }

func (e endless) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = 'a'
	}
	e.n.Add(int64(len(p)))
	return len(p), nil
}

func (endless) Close() error { return nil }

// signInMethods configures each method against login.example.com (a
// managed identity against IDENTITY_ENDPOINT 127.0.0.1:1), sending no
// request on its own.
func signInMethods(t *testing.T) map[string]func(*MicrosoftDefender) {
	t.Setenv("IDENTITY_ENDPOINT", "http://127.0.0.1:1/msi/token")
	t.Setenv("IDENTITY_HEADER", "header")
	cert, key := testCertificate(t, 0, "leaf")
	certFile := writeTemp(t, "c.pem", append(pemBlock("CERTIFICATE", cert.Raw), pemBlock("RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(key))...))
	tokenFile := writeTemp(t, "token", []byte("federated-token"))
	aad := func(m *MicrosoftDefender) {
		m.Region, m.TenantID, m.ClientID, m.LoginEndpoint = "eu", testTenant, testClientID, "https://login.example.com"
	}
	return map[string]func(*MicrosoftDefender){
		"client secret": func(m *MicrosoftDefender) { aad(m); m.ClientSecret = config.NewSecret([]byte(testClientSecret)) },
		"client certificate": func(m *MicrosoftDefender) {
			aad(m)
			m.AuthMethod, m.ClientCertificate = methodClientCertificate, certFile
		},
		"workload identity": func(m *MicrosoftDefender) {
			aad(m)
			m.AuthMethod, m.FederatedTokenFile = methodWorkloadIdentity, tokenFile
		},
		"managed identity": func(m *MicrosoftDefender) { m.Region, m.AuthMethod = "eu", methodManagedIdentity },
	}
}

// methodPrefix starts a sign-in error of method: the client secret's and the refresh token's have none.
func methodPrefix(method string) string {
	if method == "client secret" || method == "refresh token" {
		return ""
	}
	return method + ": "
}

// A sign-in answer that never ends is read up to 1 MiB and refused, for
// every method that signs in.
func TestEndlessSignInAnswerIsCapped(t *testing.T) {
	for method, configure := range signInMethods(t) {
		t.Run(method, func(t *testing.T) {
			var read atomic.Int64
			plugin := signInPlugin(t, roundTripFunc(func(req *http.Request) (*http.Response, error) {
				return &http.Response{StatusCode: http.StatusOK, Status: "200 OK", Header: http.Header{"Content-Type": {"application/json"}},
					Body: endless{&read}, Request: req}, nil
			}), configure)
			_, err := plugin.tokens.token(t.Context())
			host := "login.example.com"
			if method == "managed identity" {
				host = "127.0.0.1:1"
			}
			require.EqualError(t, err, methodPrefix(method)+"token request to "+host+" failed: its answer is larger than 1 MiB")
			require.Equal(t, int64(maxSignInAnswer+1), read.Load())
		})
	}
}

// A token that cannot be a header value is refused before it is cached, for
// every method that signs in: the next use asks again.
func TestAnsweredTokenIsCheckedBeforeItIsCached(t *testing.T) {
	for method, configure := range signInMethods(t) {
		t.Run(method, func(t *testing.T) {
			var requests atomic.Int32
			plugin := signInPlugin(t, roundTripFunc(func(req *http.Request) (*http.Response, error) {
				requests.Add(1)
				body := fmt.Sprintf(`{"token_type":"Bearer","expires_in":3599,"expires_on":"%d","resource":%q,"access_token":"evil\r\ntoken"}`,
					time.Now().Add(time.Hour).Unix(), defaultSIEMResource)
				return &http.Response{StatusCode: http.StatusOK, Status: "200 OK", Header: http.Header{"Content-Type": {"application/json"}},
					Body: io.NopCloser(strings.NewReader(body)), Request: req}, nil
			}), configure)
			host := "login.example.com"
			if method == "managed identity" {
				host = "127.0.0.1:1"
			}
			for try := int32(1); try <= 2; try++ {
				_, err := plugin.tokens.token(t.Context())
				require.EqualError(t, err, methodPrefix(method)+"token request to "+host+
					" failed: the access_token it answered cannot be sent: byte 4 is 0x0d, not allowed in a bearer token (RFC 6750)")
				require.Equal(t, try, requests.Load())
			}
		})
	}
}

// The client assertion and the federated token go only to the configured
// sign-in host and scheme: here a tenant "adfs" makes MSAL ask the sign-in
// host for its metadata, which names a token endpoint elsewhere, in plain
// http; nothing is sent there.
func TestSignInCredentialsGoOnlyToTheSignInHost(t *testing.T) {
	var elsewhere atomic.Int32
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		elsewhere.Add(1)
		w.WriteHeader(http.StatusBadRequest)
	}))
	defer other.Close()
	var login *httptest.Server
	login = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		respond(t, w, fmt.Appendf(nil, `{"token_endpoint":%q,"authorization_endpoint":%q,"issuer":%q}`,
			other.URL+"/token", login.URL+"/adfs/oauth2/authorize", login.URL+"/adfs"))
	}))
	defer login.Close()
	methods := signInMethods(t)
	for _, method := range []string{"client certificate", "workload identity"} {
		t.Run(method, func(t *testing.T) {
			plugin := signInPlugin(t, login.Client().Transport, func(m *MicrosoftDefender) {
				methods[method](m)
				m.TenantID, m.LoginEndpoint = "adfs", login.URL
			})
			_, err := plugin.tokens.token(t.Context())
			require.EqualError(t, err, method+": token request to "+strings.TrimPrefix(other.URL, "http://")+
				" failed: refused: sign-in credentials go only to "+origin(mustParse(t, login.URL)))
			require.Zero(t, elsewhere.Load())
		})
	}
}

// federated_token_file is read at each use, a regular file of at most
// 64 KiB that is not empty; no request is sent otherwise.
func TestFederatedTokenFileIsARegularSmallFile(t *testing.T) {
	dir := t.TempDir()
	large := writeTemp(t, "large", bytes.Repeat([]byte("a"), maxFederatedToken+1))
	empty := writeTemp(t, "empty", []byte(" \n"))
	for _, tt := range []struct {
		file, want string
	}{
		{dir, "a directory, not a regular file"},
		{large, "the file is larger than 64 KiB"},
		{empty, "the file is empty"},
		{filepath.Join(dir, "absent"), "no such file or directory"},
	} {
		recorder := &recordedRequests{}
		plugin := signInPlugin(t, recorder, func(m *MicrosoftDefender) {
			signInMethods(t)["workload identity"](m)
			m.FederatedTokenFile = tt.file
		})
		_, err := plugin.tokens.token(t.Context())
		require.EqualError(t, err, fmt.Sprintf("workload identity: reading federated_token_file %q: %s", tt.file, tt.want))
		require.Empty(t, recorder.requests)
	}
}
