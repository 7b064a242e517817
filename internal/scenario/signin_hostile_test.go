package scenario_test

import (
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"io"
	"log"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/influxdata/telegraf/config"
	"github.com/influxdata/telegraf/testutil"

	simulator "github.com/sectelemetry/telegraf-defender/internal/sim"
)

// Token endpoints that answer in ways Microsoft does not exclude (issue 23,
// items 7 and 14), played by the simulator for every method that signs in.

const federatedIssuer, federatedSubject = "https://oidc.example/", "system:serviceaccount:monitoring:telegraf"

// signInMethod makes the simulator able to sign the method in and returns
// how the plugin is configured for it, and the prefix of its sign-in
// errors. It runs in the bubble: the keys and tokens it makes are valid
// on the bubble's clock.
type signInMethod func(t *testing.T, cfg *simulator.Config) (configure func(s *simulator.Server, m *MicrosoftDefender), prefix string)

var signInMethods = map[string]signInMethod{
	"client secret": func(*testing.T, *simulator.Config) (func(*simulator.Server, *MicrosoftDefender), string) {
		return func(*simulator.Server, *MicrosoftDefender) {}, ""
	},
	"refresh token": func(*testing.T, *simulator.Config) (func(*simulator.Server, *MicrosoftDefender), string) {
		return func(_ *simulator.Server, m *MicrosoftDefender) {
			m.AuthMethod, m.RefreshToken = "refresh_token", config.NewSecret([]byte(testRefreshToken))
		}, ""
	},
	"client certificate": func(t *testing.T, cfg *simulator.Config) (func(*simulator.Server, *MicrosoftDefender), string) {
		ca, err := simulator.NewTestCA()
		require.NoError(t, err)
		cert, key, err := ca.Issue(&x509.Certificate{Subject: pkix.Name{CommonName: "telegraf"}})
		require.NoError(t, err)
		file := filepath.Join(t.TempDir(), "client.pem")
		require.NoError(t, os.WriteFile(file, simulator.CertificatePEM(cert, key), 0o600))
		cfg.ClientCertificates = []*x509.Certificate{cert}
		return func(_ *simulator.Server, m *MicrosoftDefender) {
			m.AuthMethod, m.ClientCertificate, m.ClientSecret = "client_certificate", file, config.Secret{}
		}, "client certificate: "
	},
	"workload identity": func(t *testing.T, cfg *simulator.Config) (func(*simulator.Server, *MicrosoftDefender), string) {
		cfg.FederatedCredentials = []simulator.FederatedCredential{{Issuer: federatedIssuer, Subject: federatedSubject}}
		file := filepath.Join(t.TempDir(), "token")
		return func(s *simulator.Server, m *MicrosoftDefender) {
			token := s.FederatedToken(federatedIssuer, federatedSubject, time.Now(), time.Now().Add(time.Hour))
			require.NoError(t, os.WriteFile(file, []byte(token), 0o600))
			m.AuthMethod, m.FederatedTokenFile, m.ClientSecret = "workload_identity", file, config.Secret{}
		}, "workload identity: "
	},
	"managed identity": func(t *testing.T, cfg *simulator.Config) (func(*simulator.Server, *MicrosoftDefender), string) {
		cfg.ManagedIdentity = &simulator.ManagedIdentity{Header: "identity-header", SystemAssigned: true}
		t.Setenv("IDENTITY_ENDPOINT", simURL+simulator.ManagedIdentityPath)
		t.Setenv("IDENTITY_HEADER", "identity-header")
		return func(_ *simulator.Server, m *MicrosoftDefender) {
			m.AuthMethod, m.TenantID, m.ClientID, m.ClientSecret, m.LoginEndpoint = "managed_identity", "", "", config.Secret{}, ""
		}, "managed identity: "
	},
}

// Each method signs in with the simulator as it behaves: the control for
// the cases below.
func TestSignInMethodsWithTheSimulator(t *testing.T) {
	for name, method := range signInMethods {
		t.Run(name, func(t *testing.T) {
			bubble(t, func(t *testing.T) {
				var cfg simulator.Config
				configure, _ := method(t, &cfg)
				s := newScenario(t, cfg)
				p := s.plugin(func(m *MicrosoftDefender) { configure(s.sim, m) })
				s.poll(p)
				require.Len(t, requestsTo(s.sim, "/api/alerts"), 3)
			})
		})
	}
}

// A token endpoint that answers without end, or with a token of 2 MiB, is
// read up to 1 MiB and refused; a token holding CR/LF or a space is refused
// before it is cached or sent. Each poll asks again, once, and no API
// request goes out. An older plugin read such answers whole (gigabytes),
// and cached and sent such tokens.
func TestSignInAnswersThatCannotBeUsed(t *testing.T) {
	const host = "token request to 127.0.0.1:8080 failed: "
	for _, tt := range []struct {
		name   string
		signIn simulator.SignInBehaviour
		want   string
	}{
		{"an endless answer", simulator.SignInBehaviour{Endless: true}, "its answer is larger than 1 MiB"},
		{"a token of 2 MiB", simulator.SignInBehaviour{TokenBytes: 2 << 20}, "its answer is larger than 1 MiB"},
		{"a token with CR/LF", simulator.SignInBehaviour{AccessToken: "evil\r\ntoken"},
			"the access_token it answered cannot be sent: byte 4 is 0x0d, not allowed in a bearer token (RFC 6750)"},
		{"a token with a space", simulator.SignInBehaviour{AccessToken: "evil token"},
			"the access_token it answered cannot be sent: byte 4 is 0x20, not allowed in a bearer token (RFC 6750)"},
	} {
		for name, method := range signInMethods {
			t.Run(tt.name+", "+name, func(t *testing.T) {
				bubble(t, func(t *testing.T) {
					cfg := simulator.Config{SignIn: tt.signIn}
					configure, prefix := method(t, &cfg)
					s := newScenario(t, cfg)
					p := s.plugin(func(m *MicrosoftDefender) { configure(s.sim, m) })
					for poll := 1; poll <= 2; poll++ {
						var acc testutil.Accumulator
						require.NoError(t, p.Gather(&acc))
						require.Len(t, acc.Errors, 1)
						require.Equal(t, prefix+host+tt.want, acc.Errors[0].Error())
						tokenRequests := len(requestsTo(s.sim, "/token"))
						require.Equal(t, poll, tokenRequests, "one sign-in a poll")
						time.Sleep(pollInterval)
					}
					require.Empty(t, requestsTo(s.sim, "/api/alerts"))
				})
			})
		}
	}
}

// A one-character access token, "e", is redacted from the quoted answer of
// a failing API once: the line grows by the markers, not without bound. An
// older plugin redacted its own markers again, to lines of kilobytes.
func TestOneCharacterAccessTokenIsRedactedOnce(t *testing.T) {
	bubble(t, func(t *testing.T) {
		s := newScenario(t, simulator.Config{SignIn: simulator.SignInBehaviour{AccessToken: "e"}})
		s.allowErrors = true
		p := s.plugin(nil)
		s.sim.Inject(simulator.FaultServerError, 4)
		s.poll(p)
		answer := `SIEM API at 127.0.0.1:8080 answered 500 Internal Server Error (service error): ` +
			`body "<html><body><h1>500 - Int[redacted]rnal s[redacted]rv[redacted]r [redacted]rror.</h1></body></html>"`
		require.Equal(t, []string{answer}, s.errors)
		require.Equal(t, []string{
			"W! [] Retry 1 of 3 in … (backing off): " + answer,
			"W! [] Retry 2 of 3 in … (backing off): " + answer,
			"W! [] Retry 3 of 3 in … (backing off): " + answer,
		}, retryWarnings(s.logger))
	})
}

// An openid-configuration that names a token endpoint on another origin (a
// plain-http listener on another port): the client assertion and the
// federated token are not posted there. An older plugin posted them where
// the document said.
func TestSignInDocumentNamingAnotherTokenEndpoint(t *testing.T) {
	for _, name := range []string{"client certificate", "workload identity"} {
		t.Run(name, func(t *testing.T) {
			bubble(t, func(t *testing.T) {
				cfg := simulator.Config{SignIn: simulator.SignInBehaviour{TokenEndpoint: "http://127.0.0.1:9/token"}}
				configure, prefix := signInMethods[name](t, &cfg)
				s, caFile := newTLSScenario(t, cfg)
				p := s.plugin(func(m *MicrosoftDefender) {
					configure(s.sim, m)
					m.TenantID, m.LoginEndpoint, m.EndpointURL, m.TLSCA = "adfs", "https://"+simHost, "https://"+simHost+"/api/alerts", caFile
				})
				var acc testutil.Accumulator
				require.NoError(t, p.Gather(&acc))
				require.Len(t, acc.Errors, 1)
				require.Equal(t, prefix+"token request to 127.0.0.1:9 failed: refused: sign-in credentials go only to https://127.0.0.1:8080",
					acc.Errors[0].Error())
				require.Len(t, requestsTo(s.sim, "/adfs/.well-known/openid-configuration"), 1, "the document was read")
				for _, r := range s.sim.Requests() {
					require.False(t, r.PostForm.Has("client_assertion"), "%s %s", r.Method, r.URL)
				}
			})
		})
	}
}

// newTLSScenario is newScenario over https, with a CA made for it whose
// certificate file it returns, for tls_ca.
func newTLSScenario(t *testing.T, cfg simulator.Config) (*scenario, string) {
	t.Helper()
	ca, err := simulator.NewTestCA()
	require.NoError(t, err)
	serverTLS, err := ca.ServerTLS()
	require.NoError(t, err)
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	require.NoError(t, os.WriteFile(caFile, ca.CertPEM(), 0o600))
	s := &scenario{emitted: make(map[string]int), logger: &testutil.CaptureLogger{}}
	s.serve(t, cfg)
	// serve's listener is replaced by one that speaks TLS.
	listener := newMemListener()
	server := &http.Server{Handler: s.sim.Handler(), ReadHeaderTimeout: time.Minute, ErrorLog: log.New(io.Discard, "", 0)}
	go server.Serve(tls.NewListener(listener, serverTLS)) //nolint:errcheck // ends with Close
	http.DefaultTransport = &http.Transport{DialContext: listener.dial}
	t.Cleanup(func() {
		server.Close()
		listener.Close()
	})
	return s, caFile
}
