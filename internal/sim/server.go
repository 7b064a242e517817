// Package sim simulates, on loopback, the Microsoft services the
// microsoft_defender input talks to: the Azure AD token endpoint (and the
// managed identity endpoint), the Defender SIEM alerts API and Microsoft
// Graph's security/alerts_v2 and security/incidents, with the faults and paging behaviours the
// plugin must survive. The scenario tests (internal/scenario), the
// execd binary's tests, the end-to-end tests, the demo (cmd/defender-sim)
// and the benchmarks use it; the plugin itself does not, and its directory
// imports nothing of this module, as Telegraf's tree requires.
package sim

import (
	"crypto/rsa"
	"crypto/x509"
	"math/rand/v2"
	"net/http"
	"sync"
	"time"
)

// Config describes one simulated tenant.
type Config struct {
	TenantID     string
	ClientID     string
	ClientSecret string
	// RefreshToken is accepted by the refresh_token grant.
	RefreshToken string
	// TokenLifetime is how long issued access tokens stay valid.
	TokenLifetime time.Duration

	// Seed makes the generated detections reproducible.
	Seed uint64
	// Rate is the number of detections generated per minute of simulated
	// time; zero disables generation, so only added detections are served.
	Rate float64
	// History is how far before the simulator's start detections are
	// generated, so that a first poll finds a backlog.
	History time.Duration
	// MaxLag is the longest delay between a detection's
	// LastProcessedTimeUtc and the moment the API starts returning it.
	MaxLag time.Duration
	// LagFraction is the share of generated detections that become visible
	// late (uniformly up to MaxLag); the others are visible at once.
	LagFraction float64
	// BurstEvery adds, at every multiple of it, BurstSize detections that
	// share one LastProcessedTimeUtc; zero disables bursts.
	BurstEvery time.Duration
	BurstSize  int

	// ClientCertificates are the certificates registered on the app: a
	// client assertion signed with one of them (found by its x5t or
	// x5t#S256 thumbprint) is accepted while it is valid.
	ClientCertificates []*x509.Certificate
	// SubjectNameIssuer and SubjectName allow subject name/issuer
	// authentication: an assertion whose x5c chain leads to this CA, for a
	// certificate of this common name, is accepted without registration.
	SubjectNameIssuer *x509.Certificate
	SubjectName       string
	// FederatedCredentials are the app's federated identity credentials,
	// for tokens made with FederatedToken.
	FederatedCredentials []FederatedCredential
	// ManagedIdentity enables the managed identity endpoint.
	ManagedIdentity *ManagedIdentity

	// Faults shapes the faults injected with Inject or at random.
	Faults FaultConfig
	// Graph is how alerts_v2 orders, counts and pages.
	Graph GraphBehaviour
	// SIEM is how the SIEM API answers limit.
	SIEM SIEMBehaviour
	// SignIn is how the token endpoints (Azure AD's and the managed
	// identity one) answer.
	SignIn SignInBehaviour
	// IDBytes pads the id of each generated alert (a detection's AlertId,
	// hence its FullId, and the Graph alert's id) to this many bytes; 0
	// leaves them as the service makes them.
	IDBytes int

	// Now is the simulator's clock; nil means time.Now.
	Now func() time.Time
}

// Server is a running simulator. Its handler serves every endpoint.
type Server struct {
	cfg Config

	mu         sync.Mutex
	tokens     map[string]issuedToken
	detections []stored  // sorted by LastProcessedTimeUtc
	generated  time.Time // detections are generated up to here
	requests   []*http.Request
	injected   []Fault
	graph      map[string][]graphVersion    // alert id -> versions, oldest first
	graphShort int                          // short pages served (GraphBehaviour.ShortPages)
	graphLate  bool                         // the versions of GraphBehaviour.LateInChain were added
	incidents  map[string][]incidentVersion // incident id -> versions, oldest first
	faultRNG   *rand.Rand
	usedJTIs   map[string]time.Time // jti of accepted client assertions -> their expiry
	miFailures []int                // statuses of the next managed identity answers

	federatedOnce sync.Once
	federatedKey  *rsa.PrivateKey
}

// New returns a simulator for the given tenant.
func New(cfg Config) *Server {
	if cfg.TokenLifetime <= 0 {
		cfg.TokenLifetime = time.Hour
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Faults.RetryAfter <= 0 {
		cfg.Faults.RetryAfter = 2 * time.Second
	}
	if cfg.Faults.TrickleDelay <= 0 {
		cfg.Faults.TrickleDelay = 50 * time.Millisecond
	}
	if cfg.Faults.PadBytes <= 0 {
		cfg.Faults.PadBytes = 64 * 1024
	}
	s := &Server{cfg: cfg, tokens: make(map[string]issuedToken), usedJTIs: make(map[string]time.Time), faultRNG: newFaultRNG(cfg.Seed)}
	s.generated = cfg.Now().Add(-cfg.History)
	return s
}

// Handler returns the HTTP handler for all simulated endpoints.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /{tenant}/oauth2/token", s.serveToken)
	mux.HandleFunc("POST /{tenant}/oauth2/v2.0/token", s.serveToken)
	mux.HandleFunc("GET /{tenant}/v2.0/.well-known/openid-configuration", s.serveOpenIDConfiguration)
	mux.HandleFunc("GET /adfs/.well-known/openid-configuration", s.serveADFSConfiguration)
	mux.HandleFunc("GET "+ManagedIdentityPath, s.serveManagedIdentity)
	mux.HandleFunc("GET /api/{resource}", s.serveAlerts)
	mux.HandleFunc("GET /v1.0/security/alerts_v2", s.serveGraphAlerts)
	mux.HandleFunc("GET /v1.0/security/incidents", s.serveGraphIncidents)
	return s.recordRequests(mux)
}

// Requests returns copies of the requests received so far, oldest first.
func (s *Server) Requests() []*http.Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*http.Request(nil), s.requests...)
}

func (s *Server) recordRequests(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := r.ParseForm(); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		s.mu.Lock()
		s.requests = append(s.requests, r.Clone(r.Context()))
		s.mu.Unlock()
		// The service's own time, which a plugin with a wrong clock can
		// learn from.
		w.Header().Set("Date", s.now().Format(http.TimeFormat))
		next.ServeHTTP(w, r)
	})
}

func (s *Server) now() time.Time {
	return s.cfg.Now().UTC()
}
