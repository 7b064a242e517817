package microsoft_defender

import (
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
	"os"
	"path/filepath"
	"strings"
	"sync"
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
		{"key of another certificate", "c.pem",
			append(pemBlock("CERTIFICATE", cert.Raw), pemBlock("RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(otherKey))...), "",
			"the private key does not match the certificate", 0},
		{"no key", "c.pem", pemBlock("CERTIFICATE", cert.Raw), "", "no PRIVATE KEY block: the file must hold the certificate and its key", 0},
		{"no certificate", "c.pem", pemBlock("PRIVATE KEY", pkcs8), "", "no CERTIFICATE block", 0},
		{"encrypted key", "c.pem", append(pemBlock("CERTIFICATE", cert.Raw), pemBlock("ENCRYPTED PRIVATE KEY", []byte{1})...), "",
			"the key is encrypted: use an unencrypted PEM key, or a PKCS#12 file with client_certificate_password", 0},
		{"EC key", "c.pem", append(pemBlock("CERTIFICATE", cert.Raw), pemBlock("EC PRIVATE KEY", ecDER)...), "",
			"the key is a EC PRIVATE KEY, Azure AD's client assertions need an RSA key", 0},
		{"password for a PEM file", "c.pem", append(pemBlock("CERTIFICATE", cert.Raw), pemBlock("PRIVATE KEY", pkcs8)...), "p4ss-w0rd",
			"client_certificate_password is for PKCS#12 files; the key of a PEM file must not be encrypted", 0},
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

// signInPlugin is a plugin of one azidentity mode whose sign-in requests
// go to recorder instead of the network.
func signInPlugin(t *testing.T, recorder *recordedRequests, configure func(*MicrosoftDefender)) (*MicrosoftDefender, error) {
	t.Helper()
	plugin := withDefaults(&MicrosoftDefender{Log: testutil.Logger{}, now: func() time.Time { return fixedNow }})
	configure(plugin)
	if err := plugin.Init(); err != nil {
		return nil, err
	}
	plugin.tokens.(*cachedToken).source.(*azureSource).client = &http.Client{Transport: recorder}
	return plugin, nil
}

type recordedRequests struct {
	mu       sync.Mutex
	requests []*http.Request
}

func (r *recordedRequests) RoundTrip(req *http.Request) (*http.Response, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.requests = append(r.requests, req)
	return nil, errors.New("no network in this test")
}

// Each mode signs in where the region's cloud has its Azure AD, or where
// login_endpoint says; managed identity asks the host's endpoint (IMDS
// when the environment names no other).
func TestAzureModesSignInToTheRegionsCloud(t *testing.T) {
	cert, key := testCertificate(t, 0, "leaf")
	certFile := writeTemp(t, "c.pem", append(pemBlock("CERTIFICATE", cert.Raw), pemBlock("RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(key))...))
	tokenFile := writeTemp(t, "token", []byte("federated-token"))
	for _, env := range []string{"IDENTITY_ENDPOINT", "IDENTITY_HEADER", "IMDS_ENDPOINT", "MSI_ENDPOINT", "MSI_SECRET", envAuthorityHost} {
		t.Setenv(env, "")
	}
	certificate := func(api, region string) func(*MicrosoftDefender) {
		return func(m *MicrosoftDefender) {
			m.API, m.Region, m.TenantID, m.ClientID, m.ClientCertificate = api, region, testTenant, testClientID, certFile
		}
	}
	tests := []struct {
		name      string
		configure func(*MicrosoftDefender)
		want      string
	}{
		{"SIEM us", certificate("siem", "us"), "https://login.microsoftonline.com/" + testTenant + "/v2.0/.well-known/openid-configuration"},
		{"SIEM gcc-high", certificate("siem", "gcc-high"), "https://login.microsoftonline.us/" + testTenant + "/v2.0/.well-known/openid-configuration"},
		{"Graph global", certificate("graph", ""), "https://login.microsoftonline.com/" + testTenant + "/v2.0/.well-known/openid-configuration"},
		{"Graph dod", certificate("graph", "dod"), "https://login.microsoftonline.us/" + testTenant + "/v2.0/.well-known/openid-configuration"},
		{"Graph china", certificate("graph", "china"), "https://login.partner.microsoftonline.cn/" + testTenant + "/v2.0/.well-known/openid-configuration"},
		{"login_endpoint", func(m *MicrosoftDefender) {
			certificate("graph", "china")(m)
			m.LoginEndpoint = "https://login.example.com/"
		}, "https://login.example.com/" + testTenant + "/v2.0/.well-known/openid-configuration"},
		{"workload identity, Graph gcc-high", func(m *MicrosoftDefender) {
			m.API, m.Region, m.TenantID, m.ClientID = "graph", "gcc-high", testTenant, testClientID
			m.UseWorkloadIdentity, m.FederatedTokenFile = true, tokenFile
		}, "https://login.microsoftonline.us/" + testTenant + "/v2.0/.well-known/openid-configuration"},
		{"managed identity, SIEM", func(m *MicrosoftDefender) { m.Region, m.UseManagedIdentity = "eu", true },
			"http://169.254.169.254/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https%3A%2F%2Fgraph.windows.net"},
		{"managed identity by client id, Graph gcc-high", func(m *MicrosoftDefender) {
			m.API, m.Region, m.UseManagedIdentity, m.ManagedIdentityClientID = "graph", "gcc-high", true, "mi-client"
		}, "http://169.254.169.254/metadata/identity/oauth2/token?api-version=2018-02-01&client_id=mi-client&resource=https%3A%2F%2Fgraph.microsoft.us"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			recorder := &recordedRequests{}
			plugin, err := signInPlugin(t, recorder, tt.configure)
			require.NoError(t, err)
			_, err = plugin.tokens.token(t.Context())
			require.ErrorContains(t, err, "no network in this test")
			require.NotEmpty(t, recorder.requests)
			require.Equal(t, tt.want, strings.TrimSuffix(recorder.requests[0].URL.String(), "?"))
		})
	}
}

func TestAzureModesRejectBadCombinations(t *testing.T) {
	cert, key := testCertificate(t, 0, "leaf")
	certFile := writeTemp(t, "c.pem", append(pemBlock("CERTIFICATE", cert.Raw), pemBlock("RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(key))...))
	for _, env := range []string{envTenantID, envClientID, envFederatedTokenFile, envAuthorityHost} {
		t.Setenv(env, "")
	}
	tests := []struct {
		name      string
		configure func(*MicrosoftDefender)
		err       string
	}{
		{"certificate and secret", func(m *MicrosoftDefender) { m.ClientCertificate = certFile },
			"client_secret: not used with client_certificate"},
		{"certificate and managed identity", func(m *MicrosoftDefender) {
			m.ClientSecret, m.ClientCertificate, m.UseManagedIdentity = config.Secret{}, certFile, true
		}, "client_certificate, use_managed_identity cannot be combined: set one authentication mode"},
		{"certificate with token_url and refresh_token", func(m *MicrosoftDefender) {
			m.ClientSecret, m.ClientCertificate, m.TokenURL = config.Secret{}, certFile, "https://login.example.com/t/oauth2/v2.0/token"
			m.RefreshToken = config.NewSecret([]byte(testRefreshToken))
		}, "refresh_token, token_url (use login_endpoint): not used with client_certificate"},
		{"certificate with a static token", func(m *MicrosoftDefender) {
			m.ClientSecret, m.ClientCertificate, m.AccessToken = config.Secret{}, certFile, config.NewSecret([]byte("x"))
		}, "access_token: not used with client_certificate"},
		{"certificate without client id", func(m *MicrosoftDefender) {
			m.ClientSecret, m.ClientCertificate, m.ClientID = config.Secret{}, certFile, ""
		}, "client_certificate needs client_id"},
		{"certificate with resource and scopes", func(m *MicrosoftDefender) {
			m.ClientSecret, m.ClientCertificate = config.Secret{}, certFile
			m.Resource, m.Scopes = "https://graph.windows.net", []string{"https://graph.windows.net/.default"}
		}, "resource and scopes cannot both be set: resource selects the Azure AD v1 token form, scopes the v2 form"},
		{"certificate keys without a certificate", func(m *MicrosoftDefender) {
			m.ClientCertificatePassword, m.SendCertificateChain = config.NewSecret([]byte("p")), true
		}, "client_certificate_password, send_certificate_chain: only used with client_certificate"},
		{"managed identity with a secret", func(m *MicrosoftDefender) {
			m.TenantID, m.ClientID, m.UseManagedIdentity = "", "", true
		}, "client_secret: not used with use_managed_identity"},
		{"managed identity with two scopes", func(m *MicrosoftDefender) {
			m.TenantID, m.ClientID, m.ClientSecret, m.UseManagedIdentity = "", "", config.Secret{}, true
			m.Scopes = []string{"https://graph.windows.net/.default", "openid"}
		}, "use_managed_identity takes one scope, got 2"},
		{"workload identity file without the mode", func(m *MicrosoftDefender) { m.FederatedTokenFile = "/var/run/token" },
			"federated_token_file: only used with use_workload_identity = true"},
		{"workload identity without a file", func(m *MicrosoftDefender) {
			m.ClientSecret, m.UseWorkloadIdentity = config.Secret{}, true
		}, "use_workload_identity needs federated_token_file (or AZURE_FEDERATED_TOKEN_FILE)"},
		{"workload identity on plain http", func(m *MicrosoftDefender) {
			m.ClientSecret, m.UseWorkloadIdentity, m.FederatedTokenFile, m.LoginEndpoint = config.Secret{}, true, "/var/run/token", "http://127.0.0.1:8089"
		}, `login_endpoint (or AZURE_AUTHORITY_HOST) "http://127.0.0.1:8089" must be an https URL: the Azure SDK signs in over https only`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			plugin := validPlugin()
			plugin.Log = testutil.Logger{}
			tt.configure(plugin)
			require.EqualError(t, plugin.Init(), tt.err)
		})
	}
}

func TestExpiredCertificateIsReportedAtStart(t *testing.T) {
	cert, key := testCertificate(t, 0, "leaf")
	certFile := writeTemp(t, "c.pem", append(pemBlock("CERTIFICATE", cert.Raw), pemBlock("RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(key))...))
	logger := &testutil.CaptureLogger{}
	plugin := validPlugin()
	plugin.Log, plugin.ClientSecret, plugin.ClientCertificate = logger, config.Secret{}, certFile
	plugin.now = func() time.Time { return cert.NotAfter.Add(time.Second) }
	require.NoError(t, plugin.Init())
	require.Equal(t, []string{"W! [] The certificate in client_certificate expired on " + cert.NotAfter.UTC().Format(time.RFC3339) +
		": Azure AD refuses it until a new one is registered and configured"}, logger.Warnings())
}

// A sign-in service echoing the request back: the federated token, the
// managed identity header and the certificate password never reach a
// message.
func TestAzureErrorsHoldNoSecret(t *testing.T) {
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
		if strings.HasSuffix(req.URL.Path, "openid-configuration") {
			body = fmt.Sprintf(`{"token_endpoint":"https://%[1]s/t/oauth2/v2.0/token",`+
				`"authorization_endpoint":"https://%[1]s/t/oauth2/v2.0/authorize","issuer":"https://%[1]s/t/v2.0"}`, req.URL.Host)
			return &http.Response{StatusCode: http.StatusOK, Status: "200 OK", Body: io.NopCloser(strings.NewReader(body)), Request: req,
				Header: http.Header{"Content-Type": {"application/json"}}}, nil
		}
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
		secrets   []string
	}{
		{"workload identity", func(m *MicrosoftDefender) {
			m.TenantID, m.ClientID, m.LoginEndpoint = "t", testClientID, "https://login.example.com"
			m.UseWorkloadIdentity, m.FederatedTokenFile = true, tokenFile
		}, []string{federated, "client_assertion=eyJ"}},
		{"managed identity", func(m *MicrosoftDefender) { m.UseManagedIdentity = true }, []string{header}},
		{"client certificate", func(m *MicrosoftDefender) {
			m.TenantID, m.ClientID, m.ClientCertificate, m.LoginEndpoint = "t", testClientID, pfxFile, "https://login.example.com"
			m.ClientCertificatePassword = config.NewSecret([]byte(password))
		}, []string{password, "client_assertion=eyJ"}},
	} {
		name, configure := tt.name, tt.configure
		t.Run(name, func(t *testing.T) {
			plugin := withDefaults(&MicrosoftDefender{Region: "eu", Log: testutil.Logger{}, now: func() time.Time { return fixedNow }})
			configure(plugin)
			require.NoError(t, plugin.Init())
			plugin.tokens.(*cachedToken).source.(*azureSource).client = &http.Client{Transport: echo}
			_, err := plugin.tokens.token(t.Context())
			require.Error(t, err)
			msg := plugin.redactSecrets(err.Error())
			require.Contains(t, msg, name+": token request to ")
			require.Contains(t, msg, "[redacted]")
			for _, secret := range tt.secrets {
				require.NotContains(t, err.Error(), secret)
				require.NotContains(t, msg, secret)
			}
		})
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(req *http.Request) (*http.Response, error) { return f(req) }

func TestAzureAdvice(t *testing.T) {
	aad := func(mode azureMode, status int, description string) error {
		return &azureTokenError{mode: mode, tok: &tokenError{host: "login", status: status, code: "invalid_client", description: description}}
	}
	tests := []struct {
		name string
		err  error
		want string
	}{
		{"certificate not registered",
			aad(modeCertificate, 401, "AADSTS700027: The certificate with identifier used to sign the client assertion is not registered on application."),
			"The certificate in client_certificate is not registered on the app (AADSTS700027)"},
		{"certificate expired",
			aad(modeCertificate, 401, "AADSTS700027: The certificate with identifier used to sign the client assertion is expired on application."),
			"The certificate registered for the app has expired (AADSTS700027)"},
		{"signature", aad(modeCertificate, 401, "AADSTS700027: Client assertion failed signature validation."),
			"the key in client_certificate is not the key of the registered certificate"},
		{"another app", aad(modeCertificate, 400, "AADSTS700021: Client assertion application identifier doesn't match 'client_id' parameter."),
			"The client assertion is for another app (AADSTS700021)"},
		{"clock", aad(modeCertificate, 400, "AADSTS700024: Client assertion is not within its valid time range."),
			"correct this host's clock (NTP)"},
		{"federated token expired", aad(modeWorkloadIdentity, 400, "AADSTS700024: Client assertion is not within its valid time range."),
			"The federated token has expired (AADSTS700024)"},
		{"no federated credential", aad(modeWorkloadIdentity, 400, "AADSTS70021: No matching federated identity record found for presented assertion."),
			"No federated credential of the app matches the token (AADSTS70021)"},
		{"unknown tenant", aad(modeWorkloadIdentity, 400, "AADSTS90002: Tenant 'x' not found."), "The tenant does not exist (AADSTS90002)"},
		{"token file", &azureTokenError{mode: modeWorkloadIdentity, file: true, msg: `"/t": no such file or directory`},
			"The federated token file cannot be read: on AKS, label the pod"},
		{"Arc challenge file", &azureTokenError{mode: modeManagedIdentity,
			msg: `ManagedIdentityCredential: failed to read "/var/opt/azcmagent/tokens/x.key" due to error: open ...: permission denied`},
			"add the user Telegraf runs as to the himds group"},
		{"identity not assigned", aad(modeManagedIdentity, 400, "Unable to load the proper Managed Identity."),
			"The managed identity is not assigned to this resource"},
		{"no identity service", aad(modeManagedIdentity, 404, "not found"), "The managed identity endpoint has no token service at this address (HTTP 404)"},
		{"identity service failing", aad(modeManagedIdentity, 500, "error"), "The managed identity endpoint is throttling or failing for now"},
		{"no identity endpoint",
			&azureTokenError{mode: modeManagedIdentity, tok: &tokenError{host: "169.254.169.254", err: errors.New("dial tcp: i/o timeout")}},
			"No managed identity endpoint answered: the plugin runs outside Azure, or IMDS (169.254.169.254) is blocked"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			require.Contains(t, advice(&probeError{step: stepToken, err: tt.err}, "siem"), tt.want)
		})
	}
}
