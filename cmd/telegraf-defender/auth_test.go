package main

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"software.sslmate.com/src/go-pkcs12"

	"github.com/influxdata/telegraf/plugins/inputs"
	"github.com/influxdata/telegraf/testutil"

	simulator "github.com/sectelemetry/telegraf-defender/internal/sim"
	"github.com/sectelemetry/telegraf-defender/plugins/inputs/microsoft_defender"
)

// The modes built on azidentity against the simulator: over TLS with a CA
// made for the test, as the Azure SDK signs in over https only. Each case
// runs -check, which names the failed step, what the service said and the
// likely fix; no key, password or token may appear in its output.

const (
	simTenant   = "contoso"
	simClientID = "11111111-2222-3333-4444-555555555555"
	pfxPassword = "pfx-pass-must-not-leak"
	miHeader    = "identity-header-must-not-leak"
	oidcIssuer  = "https://oidc.prod-aks.example/tenant/cluster/"
	podSubject  = "system:serviceaccount:monitoring:telegraf"
)

type tlsSim struct {
	sim    *simulator.Server
	server *httptest.Server
	ca     *simulator.TestCA
	caFile string
	dir    string
}

var (
	caOnce      sync.Once
	sharedCA    *simulator.TestCA
	sharedTLS   *tls.Config
	errSharedCA error
)

// testCA is one CA and server certificate for all tests: RSA keys take a
// while to make.
func testCA(t *testing.T) *simulator.TestCA {
	t.Helper()
	caOnce.Do(func() {
		if sharedCA, errSharedCA = simulator.NewTestCA(); errSharedCA == nil {
			sharedTLS, errSharedCA = sharedCA.ServerTLS()
		}
	})
	require.NoError(t, errSharedCA)
	return sharedCA
}

func startTLSSim(t *testing.T, ca *simulator.TestCA, cfg simulator.Config) *tlsSim {
	t.Helper()
	cfg.TenantID, cfg.ClientID, cfg.ClientSecret = simTenant, simClientID, "unused-secret"
	cfg.Rate, cfg.History = 10, time.Hour
	sim := simulator.New(cfg)
	server := httptest.NewUnstartedServer(sim.Handler())
	server.TLS = sharedTLS.Clone()
	server.StartTLS()
	t.Cleanup(server.Close)
	dir := t.TempDir()
	caFile := filepath.Join(dir, "ca.pem")
	require.NoError(t, os.WriteFile(caFile, ca.CertPEM(), 0o600))
	return &tlsSim{sim: sim, server: server, ca: ca, caFile: caFile, dir: dir}
}

// conf is a configuration for the simulator's SIEM API with the given
// authentication lines.
func (s *tlsSim) conf(auth string) string {
	return fmt.Sprintf("[[inputs.microsoft_defender]]\n  api = \"siem\"\n  endpoint_url = %q\n  tls_ca = %q\n%s\n", s.server.URL+"/api/alerts", s.caFile, auth)
}

// graphConf is the same for the simulator's Graph API.
func (s *tlsSim) graphConf(auth string) string {
	return fmt.Sprintf("[[inputs.microsoft_defender]]\n  api = \"graph\"\n  endpoint_url = %q\n  tls_ca = %q\n"+
		"  scopes = [\"https://graph.microsoft.com/.default\"]\n%s\n", s.server.URL+"/v1.0/security/alerts_v2", s.caFile, auth)
}

func (s *tlsSim) signIn() string {
	return fmt.Sprintf("  login_endpoint = %q\n  tenant_id = %q\n  client_id = %q\n", s.server.URL, simTenant, simClientID)
}

func (s *tlsSim) writeFile(t *testing.T, name string, data []byte) string {
	t.Helper()
	path := filepath.Join(s.dir, name)
	require.NoError(t, os.WriteFile(path, data, 0o600))
	return path
}

type checkCase struct {
	name string
	conf string
	ok   bool
	want []string
}

// runChecks runs -check on each case and returns nothing: secrets are the
// values that must not appear in any output.
func runChecks(t *testing.T, cases []checkCase, secrets ...string) {
	t.Helper()
	for _, tt := range cases {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "defender.conf")
			require.NoError(t, os.WriteFile(path, []byte(tt.conf), 0o600))
			var out bytes.Buffer
			require.Equal(t, tt.ok, check(&out, path), out.String())
			for _, want := range tt.want {
				require.Contains(t, out.String(), want)
			}
			for _, secret := range secrets {
				require.NotContains(t, out.String(), secret)
			}
			require.NotContains(t, out.String(), "simtok-")
		})
	}
}

// keyLines are lines of a PEM key: none may appear in a message.
func keyLines(pemData []byte) []string {
	var lines []string
	for _, l := range strings.Split(string(pemData), "\n") {
		if len(l) == 64 {
			lines = append(lines, l)
		}
	}
	return lines
}

func TestCheckClientCertificate(t *testing.T) {
	ca := testCA(t)
	registered, key, err := ca.Issue(&x509.Certificate{Subject: pkix.Name{CommonName: "telegraf-defender"}})
	require.NoError(t, err)
	expired, expiredKey, err := ca.Issue(&x509.Certificate{Subject: pkix.Name{CommonName: "telegraf-defender"},
		NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-time.Hour)})
	require.NoError(t, err)
	unregistered, unregisteredKey, err := ca.Issue(&x509.Certificate{Subject: pkix.Name{CommonName: "telegraf-defender.sni"}})
	require.NoError(t, err)

	s := startTLSSim(t, ca, simulator.Config{
		ClientCertificates: []*x509.Certificate{registered, expired},
		SubjectNameIssuer:  ca.Cert, SubjectName: "telegraf-defender.sni",
	})
	pemFile := s.writeFile(t, "client.pem", simulator.CertificatePEM(registered, key))
	modern, err := pkcs12.Modern.Encode(key, registered, []*x509.Certificate{ca.Cert}, pfxPassword)
	require.NoError(t, err)
	legacy, err := pkcs12.LegacyDES.Encode(key, registered, nil, pfxPassword)
	require.NoError(t, err)
	modernFile := s.writeFile(t, "client.pfx", modern)
	legacyFile := s.writeFile(t, "legacy.p12", legacy)
	expiredFile := s.writeFile(t, "expired.pem", simulator.CertificatePEM(expired, expiredKey))
	sniPEM := append(simulator.CertificatePEM(unregistered, unregisteredKey), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Cert.Raw})...)
	sniFile := s.writeFile(t, "sni.pem", sniPEM)
	mismatched := s.writeFile(t, "mismatched.pem", append(
		pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: registered.Raw}),
		pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(unregisteredKey)})...))
	host := strings.TrimPrefix(s.server.URL, "https://")
	cert := func(file string, extra ...string) string {
		return s.conf(s.signIn() + fmt.Sprintf("  auth_method = \"client_certificate\"\n  client_certificate = %q\n", file) + strings.Join(extra, "\n"))
	}

	secrets := append(keyLines(simulator.CertificatePEM(registered, key)), pfxPassword)
	secrets = append(secrets, keyLines(simulator.CertificatePEM(unregistered, unregisteredKey))...)
	runChecks(t, []checkCase{
		{"PEM file", cert(pemFile), true, []string{"  token          ok", "A poll would succeed."}},
		{"PKCS#12 file of OpenSSL 3 (AES, PBKDF2)", cert(modernFile, fmt.Sprintf("  client_certificate_password = %q", pfxPassword)), true,
			[]string{"A poll would succeed."}},
		{"PKCS#12 file with 3DES", cert(legacyFile, fmt.Sprintf("  client_certificate_password = %q", pfxPassword)), true,
			[]string{"A poll would succeed."}},
		{"wrong PKCS#12 password", cert(modernFile, `  client_certificate_password = "wrong-pass"`), false, []string{
			"  configuration  client_certificate \"" + modernFile + "\": the PKCS#12 file's password is wrong or missing: check client_certificate_password",
			"  token          skipped",
		}},
		{"Graph API", s.graphConf(s.signIn() + fmt.Sprintf("  auth_method = \"client_certificate\"\n  client_certificate = %q", pemFile)), true,
			[]string{"A poll would succeed."}},
		{"certificate not registered", cert(sniFile), false, []string{
			"  token          failed: client certificate: token request to " + host + " failed: HTTP 401 Unauthorized: invalid_client (AADSTS700027). " +
				"Azure AD refused the certificate: register the one in client_certificate on the app (Certificates & secrets), " +
				"a new one if it expired, or set send_certificate_chain = true for subject name/issuer authentication\n",
			"  request        skipped",
		}},
		{"subject name/issuer with the chain", cert(sniFile, "  send_certificate_chain = true"), true, []string{"A poll would succeed."}},
		{"expired certificate", cert(expiredFile), false, []string{
			"  token          failed: client certificate: token request to " + host + " failed: HTTP 401 Unauthorized: invalid_client (AADSTS700027). " +
				"Azure AD refused the certificate: register the one in client_certificate on the app (Certificates & secrets), " +
				"a new one if it expired, or set send_certificate_chain = true for subject name/issuer authentication\n",
		}},
		{"key not matching the certificate", cert(mismatched), false, []string{
			"  configuration  client_certificate \"" + mismatched + "\": the private key does not match the certificate",
		}},
		{"missing file", cert(filepath.Join(s.dir, "absent.pem")), false, []string{
			"  configuration  client_certificate \"" + filepath.Join(s.dir, "absent.pem") + "\": no such file or directory",
		}},
		{"wrong app", strings.Replace(cert(pemFile), simClientID, "99999999-2222-3333-4444-555555555555", 1), false, []string{
			"  token          failed: client certificate: token request to " + host + " failed: HTTP 400 Bad Request: unauthorized_client " +
				"(AADSTS700016). No app with this client_id exists in the tenant: check client_id, and that tenant_id is the app's tenant\n",
		}},
		{"wrong tenant", strings.Replace(cert(pemFile), `tenant_id = "contoso"`, `tenant_id = "fabrikam"`, 1), false, []string{
			"  token          failed: client certificate: token request to " + host + " failed: HTTP 400 Bad Request: invalid_request " +
				"(AADSTS90002). The tenant does not exist: check tenant_id, and that login_endpoint (or region) is the tenant's cloud\n",
		}},
		{"plain http sign-in off loopback", strings.Replace(cert(pemFile), "login_endpoint = \""+s.server.URL, "login_endpoint = \"http://10.0.0.1", 1), false,
			[]string{`  configuration  login_endpoint "http://10.0.0.1" uses plain http to a host that is not loopback: use https`}},
		{"with a client secret", cert(pemFile, `  client_secret = "x"`), false, []string{
			`  configuration  client_secret: only used with auth_method = "client_secret" or "refresh_token"`,
		}},
	}, secrets...)
}

// newPlugin is the plugin as Telegraf makes it, with the documented
// defaults.
func newPlugin(t *testing.T, configure func(*microsoft_defender.MicrosoftDefender)) *microsoft_defender.MicrosoftDefender {
	t.Helper()
	plugin := inputs.Inputs["microsoft_defender"]().(*microsoft_defender.MicrosoftDefender)
	plugin.Log = &testutil.CaptureLogger{}
	plugin.API = "siem"
	// Polls follow each other at once here: the rate limit would postpone them.
	plugin.MaxRequestsPerMinute = 6000
	configure(plugin)
	require.NoError(t, plugin.Init())
	t.Cleanup(plugin.Stop)
	return plugin
}

func gather(t *testing.T, plugin *microsoft_defender.MicrosoftDefender) {
	t.Helper()
	var acc testutil.Accumulator
	require.NoError(t, plugin.Gather(&acc))
	require.Empty(t, acc.Errors)
	require.NotEmpty(t, acc.GetTelegrafMetrics())
}

func tokenRequests(sim *simulator.Server, path string) []*http.Request {
	var out []*http.Request
	for _, r := range sim.Requests() {
		if strings.HasSuffix(r.URL.Path, path) {
			out = append(out, r)
		}
	}
	return out
}

// A certificate token is cached until the API refuses it; then one new
// assertion, with a new jti, gets a new token.
func TestCertificateTokenIsCachedAndRenewedAfter401(t *testing.T) {
	ca := testCA(t)
	cert, key, err := ca.Issue(&x509.Certificate{Subject: pkix.Name{CommonName: "telegraf-defender"}})
	require.NoError(t, err)
	s := startTLSSim(t, ca, simulator.Config{ClientCertificates: []*x509.Certificate{cert}})
	file := s.writeFile(t, "client.pem", simulator.CertificatePEM(cert, key))
	plugin := newPlugin(t, func(p *microsoft_defender.MicrosoftDefender) {
		p.EndpointURL, p.LoginEndpoint, p.TenantID, p.ClientID = s.server.URL+"/api/alerts", s.server.URL, simTenant, simClientID
		p.AuthMethod, p.ClientCertificate, p.TLSCA = "client_certificate", file, s.caFile
	})
	gather(t, plugin)
	gather(t, plugin)
	require.Len(t, tokenRequests(s.sim, "/oauth2/v2.0/token"), 1)
	s.sim.ExpireTokens()
	gather(t, plugin)
	requests := tokenRequests(s.sim, "/oauth2/v2.0/token")
	require.Len(t, requests, 2)
	for _, r := range requests {
		require.Equal(t, "client_credentials", r.PostForm.Get("grant_type"))
		require.Equal(t, "urn:ietf:params:oauth:client-assertion-type:jwt-bearer", r.PostForm.Get("client_assertion_type"))
		require.Equal(t, "https://graph.windows.net/.default openid offline_access profile", r.PostForm.Get("scope"))
		require.Empty(t, r.PostForm.Get("client_secret"))
	}
	require.NotEqual(t, requests[0].PostForm.Get("client_assertion"), requests[1].PostForm.Get("client_assertion"))
}

// A renewed certificate written over client_certificate is used at the next
// sign-in, without a restart, as a rotated federated token file is.
func TestRenewedCertificateIsUsedWithoutARestart(t *testing.T) {
	ca := testCA(t)
	old, oldKey, err := ca.Issue(&x509.Certificate{Subject: pkix.Name{CommonName: "telegraf-defender-2025"}})
	require.NoError(t, err)
	renewed, renewedKey, err := ca.Issue(&x509.Certificate{Subject: pkix.Name{CommonName: "telegraf-defender-2026"}})
	require.NoError(t, err)
	s := startTLSSim(t, ca, simulator.Config{ClientCertificates: []*x509.Certificate{renewed}})
	file := s.writeFile(t, "client.pem", simulator.CertificatePEM(old, oldKey))
	plugin := newPlugin(t, func(p *microsoft_defender.MicrosoftDefender) {
		p.EndpointURL, p.LoginEndpoint, p.TenantID, p.ClientID = s.server.URL+"/api/alerts", s.server.URL, simTenant, simClientID
		p.AuthMethod, p.ClientCertificate, p.TLSCA = "client_certificate", file, s.caFile
	})
	var acc testutil.Accumulator
	require.NoError(t, plugin.Gather(&acc))
	require.Len(t, acc.Errors, 1)
	require.ErrorContains(t, acc.Errors[0], "AADSTS700027", "the old certificate is not registered")

	s.writeFile(t, "client.pem", simulator.CertificatePEM(renewed, renewedKey))
	gather(t, plugin)
}

const notAssigned = "The managed identity is not assigned to this resource: enable the system-assigned one, or assign the user-assigned one\n"

func TestCheckManagedIdentity(t *testing.T) {
	ca := testCA(t)
	const resourceID = "/subscriptions/s/resourceGroups/g/providers/Microsoft.ManagedIdentity/userAssignedIdentities/telegraf"
	s := startTLSSim(t, ca, simulator.Config{ManagedIdentity: &simulator.ManagedIdentity{
		Header: miHeader, SystemAssigned: true,
		UserAssigned: []simulator.UserAssignedIdentity{{ClientID: "aaaaaaaa-0000-0000-0000-000000000001", ResourceID: resourceID}},
	}})
	// The App Service form of the endpoint: what azidentity finds in the
	// environment on App Service, Functions and Container Apps.
	t.Setenv("IDENTITY_ENDPOINT", s.server.URL+simulator.ManagedIdentityPath)
	t.Setenv("IDENTITY_HEADER", miHeader)
	host := strings.TrimPrefix(s.server.URL, "https://")
	mi := func(extra string) string { return s.conf("  auth_method = \"managed_identity\"\n" + extra) }

	runChecks(t, []checkCase{
		{"system-assigned", mi(""), true, []string{"A poll would succeed."}},
		{"Graph API", s.graphConf("  auth_method = \"managed_identity\""), true, []string{"A poll would succeed."}},
		{"user-assigned by client id", mi(`  client_id = "aaaaaaaa-0000-0000-0000-000000000001"`), true, []string{"A poll would succeed."}},
		{"user-assigned by resource id", mi(`  managed_identity_resource_id = "` + resourceID + `"`), true, []string{"A poll would succeed."}},
		{"identity not assigned", mi(`  client_id = "bbbbbbbb-0000-0000-0000-000000000002"`), false, []string{
			"  token          failed: managed identity: token request to " + host + " failed: HTTP 400 Bad Request. " + notAssigned,
		}},
		{"both identity keys", mi("  client_id = \"a\"\n  managed_identity_resource_id = \"b\""), false, []string{
			"  configuration  client_id and managed_identity_resource_id cannot both be set",
		}},
		{"with tenant and login endpoint", s.conf(s.signIn() + "  auth_method = \"managed_identity\""), false, []string{
			`  configuration  tenant_id: only used with auth_method = "client_secret", "client_certificate", "workload_identity" or "refresh_token"; ` +
				`login_endpoint: only used with auth_method = "client_secret", "client_certificate", "workload_identity" or "refresh_token"`,
		}},
		{"identity key without the method", s.conf(`  managed_identity_resource_id = "a"`), false, []string{
			`  configuration  managed_identity_resource_id: only used with auth_method = "managed_identity"`,
		}},
	}, miHeader)

	// Failures of the endpoint itself.
	for _, tt := range []struct {
		status int
		want   []string
	}{
		{http.StatusBadRequest, []string{"  token          failed: managed identity: token request to " + host +
			" failed: HTTP 400 Bad Request. " + notAssigned}},
		{http.StatusNotFound, []string{"  token          failed: managed identity: token request to " + host +
			" failed: HTTP 404 Not Found\n  request        skipped\n"}},
		{http.StatusInternalServerError, []string{"  token          failed: managed identity: token request to " + host +
			" failed: HTTP 500 Internal Server Error\n  request        skipped\n"}},
	} {
		s.sim.FailManagedIdentity(tt.status, 1)
		runChecks(t, []checkCase{{fmt.Sprintf("endpoint answers %d", tt.status), mi(""), false, tt.want}}, miHeader)
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	downHost := ln.Addr().String()
	down := "https://" + downHost + simulator.ManagedIdentityPath
	require.NoError(t, ln.Close())
	t.Setenv("IDENTITY_ENDPOINT", down)
	runChecks(t, []checkCase{{"endpoint down", mi(""), false, []string{
		"  token          failed: managed identity: token request to " + downHost + " failed: dial tcp " + downHost + ": connect: connection " +
			"refused. No managed identity endpoint answered: the plugin runs outside Azure, or a firewall or proxy blocks IMDS " +
			"(169.254.169.254: add it to NO_PROXY); on App Service, Functions or Arc IDENTITY_ENDPOINT must be set\n",
	}}}, miHeader)
}

// A managed identity endpoint failing once (500) is retried within the
// poll; the token then serves until the API refuses it.
func TestManagedIdentityRetriesAndRenews(t *testing.T) {
	ca := testCA(t)
	s := startTLSSim(t, ca, simulator.Config{ManagedIdentity: &simulator.ManagedIdentity{Header: miHeader, SystemAssigned: true}})
	t.Setenv("IDENTITY_ENDPOINT", s.server.URL+simulator.ManagedIdentityPath)
	t.Setenv("IDENTITY_HEADER", miHeader)
	plugin := newPlugin(t, func(p *microsoft_defender.MicrosoftDefender) {
		p.EndpointURL, p.TLSCA, p.AuthMethod = s.server.URL+"/api/alerts", s.caFile, "managed_identity"
	})
	s.sim.FailManagedIdentity(http.StatusInternalServerError, 1)
	gather(t, plugin)
	gather(t, plugin)
	requests := tokenRequests(s.sim, simulator.ManagedIdentityPath)
	require.Len(t, requests, 2) // the 500, then the token
	s.sim.ExpireTokens()
	gather(t, plugin)
	requests = tokenRequests(s.sim, simulator.ManagedIdentityPath)
	require.Len(t, requests, 3)
	for _, r := range requests {
		require.Equal(t, "api-version=2019-08-01&resource=https%3A%2F%2Fgraph.windows.net", r.URL.RawQuery)
		require.Equal(t, miHeader, r.Header.Get("X-IDENTITY-HEADER"))
	}
}

func TestCheckWorkloadIdentity(t *testing.T) {
	ca := testCA(t)
	s := startTLSSim(t, ca, simulator.Config{FederatedCredentials: []simulator.FederatedCredential{{Issuer: oidcIssuer, Subject: podSubject}}})
	now := time.Now()
	valid := s.sim.FederatedToken(oidcIssuer, podSubject, now.Add(-time.Minute), now.Add(time.Hour))
	expired := s.sim.FederatedToken(oidcIssuer, podSubject, now.Add(-2*time.Hour), now.Add(-time.Hour))
	stranger := s.sim.FederatedToken(oidcIssuer, "system:serviceaccount:default:other", now.Add(-time.Minute), now.Add(time.Hour))
	validFile := s.writeFile(t, "token", []byte(valid))
	expiredFile := s.writeFile(t, "expired", []byte(expired))
	strangerFile := s.writeFile(t, "stranger", []byte(stranger))
	absent := filepath.Join(s.dir, "absent")
	host := strings.TrimPrefix(s.server.URL, "https://")
	wi := func(file string) string {
		return s.conf(s.signIn() + fmt.Sprintf("  auth_method = \"workload_identity\"\n  federated_token_file = %q", file))
	}

	runChecks(t, []checkCase{
		{"federated token file", wi(validFile), true, []string{"A poll would succeed."}},
		{"Graph API", s.graphConf(s.signIn() + fmt.Sprintf("  auth_method = \"workload_identity\"\n  federated_token_file = %q", validFile)), true,
			[]string{"A poll would succeed."}},
		{"federated token expired", wi(expiredFile), false, []string{
			"  token          failed: workload identity: token request to " + host + " failed: HTTP 400 Bad Request: invalid_client " +
				"(AADSTS700024). The federated token has expired: federated_token_file must be the token the kubelet rotates\n",
		}},
		{"no federated credential for the subject", wi(strangerFile), false, []string{
			"  token          failed: workload identity: token request to " + host + " failed: HTTP 400 Bad Request: invalid_client " +
				"(AADSTS70021). No federated credential of the app matches the token: add one with the cluster's OIDC issuer, the " +
				"subject system:serviceaccount:NAMESPACE:NAME and the audience api://AzureADTokenExchange\n",
		}},
		{"federated token file missing", wi(absent), false, []string{
			"  token          failed: workload identity: reading federated_token_file \"" + absent + "\": no such file or directory\n" +
				"  request        skipped\n",
		}},
		{"no tenant", s.conf("  auth_method = \"workload_identity\""), false, []string{
			`  configuration  auth_method = "workload_identity" needs tenant_id, client_id, federated_token_file ` +
				"(or AZURE_TENANT_ID, AZURE_CLIENT_ID, AZURE_FEDERATED_TOKEN_FILE)",
		}},
		{"file without the method", s.conf(s.signIn() + fmt.Sprintf("  federated_token_file = %q\n  client_secret = \"x\"", validFile)), false, []string{
			`  configuration  federated_token_file: only used with auth_method = "workload_identity"`,
		}},
	}, valid, expired, stranger)

	// What AKS projects into the pod.
	t.Setenv("AZURE_FEDERATED_TOKEN_FILE", validFile)
	t.Setenv("AZURE_CLIENT_ID", simClientID)
	t.Setenv("AZURE_TENANT_ID", simTenant)
	t.Setenv("AZURE_AUTHORITY_HOST", s.server.URL+"/")
	runChecks(t, []checkCase{{"the pod's environment", s.conf("  auth_method = \"workload_identity\""), true, []string{"A poll would succeed."}}}, valid)
}

// The kubelet rotates the projected token: once the API refuses the token
// got with the old one, the plugin reads the file again.
func TestRotatedFederatedTokenIsRead(t *testing.T) {
	ca := testCA(t)
	s := startTLSSim(t, ca, simulator.Config{FederatedCredentials: []simulator.FederatedCredential{{Issuer: oidcIssuer, Subject: podSubject}}})
	now := time.Now()
	first := s.sim.FederatedToken(oidcIssuer, podSubject, now.Add(-time.Minute), now.Add(time.Hour))
	file := s.writeFile(t, "token", []byte(first))
	plugin := newPlugin(t, func(p *microsoft_defender.MicrosoftDefender) {
		p.EndpointURL, p.LoginEndpoint, p.TenantID, p.ClientID = s.server.URL+"/api/alerts", s.server.URL, simTenant, simClientID
		p.AuthMethod, p.FederatedTokenFile, p.TLSCA = "workload_identity", file, s.caFile
	})
	gather(t, plugin)
	rotated := s.sim.FederatedToken(oidcIssuer, podSubject, now, now.Add(2*time.Hour))
	require.NoError(t, os.WriteFile(file, []byte(rotated+"\n"), 0o600))
	s.sim.ExpireTokens()
	gather(t, plugin)
	requests := tokenRequests(s.sim, "/oauth2/v2.0/token")
	require.Len(t, requests, 2)
	require.Equal(t, first, requests[0].PostForm.Get("client_assertion"))
	require.Equal(t, rotated, requests[1].PostForm.Get("client_assertion"))
	require.Equal(t, simClientID, requests[1].PostForm.Get("client_id"))

	// Neither token appears in a failure's message.
	require.NoError(t, os.WriteFile(file, []byte(first), 0o600))
	s.sim.ExpireTokens()
	s.sim.Inject(simulator.FaultTokenDown, 10)
	var acc testutil.Accumulator
	require.NoError(t, plugin.Gather(&acc))
	messages := plugin.Log.(*testutil.CaptureLogger).Messages()
	require.NotEmpty(t, messages)
	for _, e := range acc.Errors {
		messages = append(messages, testutil.Entry{Text: e.Error()})
	}
	found := false
	for _, e := range messages {
		found = found || strings.Contains(e.Text, "workload identity: token request to "+strings.TrimPrefix(s.server.URL, "https://")+" failed: HTTP 503")
		require.NotContains(t, e.Text, first)
		require.NotContains(t, e.Text, rotated)
	}
	require.True(t, found, "%v", messages)
}
