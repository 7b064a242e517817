// Command defender-sim serves a simulated Microsoft Defender tenant on
// loopback: the Azure AD token endpoint (client secrets, refresh tokens,
// certificates, federated tokens), a managed identity endpoint, and the
// SIEM and Graph alerts APIs.
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	simulator "github.com/sectelemetry/telegraf-defender/internal/sim"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:8089", "address to listen on (port 0 picks a free port)")
	addrFile := flag.String("addr-file", "", "write the base URL here once listening")
	cfg := simulator.Config{}
	flag.StringVar(&cfg.TenantID, "tenant", "sim-tenant", "tenant id the token endpoint accepts")
	flag.StringVar(&cfg.ClientID, "client-id", "sim-client", "client id the token endpoint accepts")
	flag.StringVar(&cfg.ClientSecret, "client-secret", "sim-secret", "client secret the token endpoint accepts")
	flag.StringVar(&cfg.RefreshToken, "refresh-token", "", "refresh token the token endpoint accepts (none when empty)")
	flag.DurationVar(&cfg.TokenLifetime, "token-lifetime", time.Hour, "lifetime of issued access tokens")
	flag.Uint64Var(&cfg.Seed, "seed", 1, "seed of the generated detections")
	flag.Float64Var(&cfg.Rate, "rate", 30, "detection events generated per minute")
	flag.DurationVar(&cfg.History, "history", 3*time.Hour, "how far back detections exist at start")
	flag.DurationVar(&cfg.MaxLag, "max-lag", 5*time.Minute, "longest delay before a detection becomes visible to the API")
	flag.Float64Var(&cfg.LagFraction, "lag-fraction", 0.2, "share of detections that become visible late")
	flag.DurationVar(&cfg.BurstEvery, "burst-every", 0, "add a burst of detections sharing one timestamp this often (0: no bursts)")
	flag.IntVar(&cfg.BurstSize, "burst-size", 200, "detections in each burst")
	faults := flag.String("faults", "", "faults injected at random, as fault=share pairs, e.g. \"429=0.1,500=0.05,reset=0.02\"; faults: "+faultNames())
	flag.DurationVar(&cfg.Faults.RetryAfter, "retry-after", 2*time.Second, "what a 429 asks to wait")
	flag.Float64Var(&cfg.Faults.PoisonRate, "poison-rate", 0, "share of detections served with one value of the wrong type (e.g. \"AlertPart\":1e400)")
	flag.Float64Var(&cfg.Faults.GiantRate, "giant-rate", 0, "share of detections served with an extra field of -giant-bytes")
	flag.IntVar(&cfg.Faults.GiantBytes, "giant-bytes", 1<<20, "size of the extra field of a giant detection, and of a giant Description")
	flag.Float64Var(&cfg.Faults.GiantDescriptionRate, "giant-description-rate", 0, "share of detections served with a Description of -giant-bytes")
	flag.Float64Var(&cfg.Faults.NoIDRate, "no-id-rate", 0, "share of detections served without FullId, AlertId and IocUniqueId")
	flag.IntVar(&cfg.IDBytes, "id-bytes", 0, "pad generated alert ids (SIEM AlertId and FullId, Graph id) to this many bytes, e.g. 60000 (0: as made)")
	flag.BoolVar(&cfg.SIEM.LimitOldest, "siem-limit-oldest", false, "SIEM: answer limit with the oldest matching detections, not the newest")
	flag.IntVar(&cfg.SIEM.MaxLimit, "siem-max-limit", 0, "SIEM: answer at most this many detections, whatever limit asks for (0: no most)")
	flag.BoolVar(&cfg.SignIn.Endless, "sign-in-endless", false,
		"sign-in: the token endpoints (Azure AD's, managed identity's) answer 200 with a body that never ends")
	flag.IntVar(&cfg.SignIn.TokenBytes, "sign-in-token-bytes", 0, "sign-in: pad issued access tokens to this many bytes, e.g. 200000000")
	flag.StringVar(&cfg.SignIn.AccessToken, "sign-in-access-token", "",
		"sign-in: issue this access token, which the APIs accept, instead of random ones: e.g. \"x\", \"evil token\" (Go escapes such as \\r\\n are read)")
	flag.StringVar(&cfg.SignIn.TokenEndpoint, "sign-in-token-endpoint", "",
		"sign-in: the token_endpoint the openid-configuration documents (v2.0 and ADFS) name, e.g. http://127.0.0.1:9/token")
	var auth authFlags
	flag.StringVar(&auth.caFile, "tls-ca-file", "", "serve https with a certificate of a CA made at start, and write the CA certificate (PEM) here "+
		"for the client's tls_ca; the Azure SDK signs in over https only")
	flag.StringVar(&auth.clientCertificateFile, "client-certificate-file", "", "make a client certificate and its key, "+
		"write them (PEM) here and register the certificate on the app")
	flag.StringVar(&auth.registerCertificate, "register-certificate", "", "register the certificate of this PEM file on the app (a key in the file is ignored)")
	flag.StringVar(&auth.managedIdentityHeader, "managed-identity-header", "",
		"serve a managed identity endpoint (App Service form, at "+simulator.ManagedIdentityPath+
			") with a system-assigned identity, expecting this X-IDENTITY-HEADER (IDENTITY_HEADER)")
	flag.StringVar(&auth.managedIdentityClientID, "managed-identity-client-id", "", "client id of a user-assigned identity of the managed identity endpoint")
	flag.StringVar(&auth.federatedTokenFile, "federated-token-file", "", "write a federated token here, as a cluster's OIDC issuer projects it, "+
		"renewed at half its lifetime, and accept it at the token endpoint")
	flag.StringVar(&auth.federatedIssuer, "federated-issuer", "https://oidc.defender-sim.invalid/", "issuer of the federated tokens")
	flag.StringVar(&auth.federatedSubject, "federated-subject", "system:serviceaccount:monitoring:telegraf", "subject of the federated tokens")
	flag.DurationVar(&auth.federatedLifetime, "federated-token-lifetime", time.Hour, "lifetime of the federated tokens")
	flag.StringVar(&cfg.Graph.Order, "graph-order", simulator.GraphOrderAsc,
		"Graph: what $orderby=lastUpdateDateTime asc does: asc (honoured), ignored (newest first), rejected (400), "+
			"unordered (no order of time, asked or not)")
	flag.StringVar(&cfg.Graph.NextLink, "graph-next-link", simulator.GraphLinkSkip,
		"Graph: the form of @odata.nextLink: skip ($skip), skiptoken (an opaque $skiptoken), none (never sent although more match)")
	flag.StringVar(&cfg.Graph.Count, "graph-count", simulator.GraphCountReturned,
		"Graph: what $count=true does: returned (@odata.count), ignored (no @odata.count), rejected (400), always (on every page, asked or not)")
	flag.IntVar(&cfg.Graph.CountOffset, "graph-count-offset", 0,
		"Graph: add this to every @odata.count sent (at least 0 is sent): -150 too low, 1000000000 inflated, -1000000000 always 0")
	flag.IntVar(&cfg.Graph.MaxSkip, "graph-max-skip", 0, "Graph: answer 400 to a page starting deeper than this many alerts, e.g. 500 (0: no limit)")
	flag.IntVar(&cfg.Graph.ChainEnd, "graph-chain-end", 0,
		"Graph: end a chain of pages silently, without a next link, once it reached this many alerts (0: never)")
	flag.IntVar(&cfg.Graph.MaxTop, "graph-max-top", 0, "Graph: clamp $top silently to this, e.g. 200 (0: honour $top up to 1000)")
	flag.IntVar(&cfg.Graph.ShortPages, "graph-short-pages", 0,
		"Graph: the first this many pages that would hold more than one alert hold one, with a next link to the rest")
	flag.BoolVar(&cfg.Graph.TrailingLink, "graph-trailing-link", false,
		"Graph: a next link on every page that holds alerts, the last one's leading to an empty page")
	flag.IntVar(&cfg.Graph.LateInChain, "graph-late-in-chain", 0,
		"Graph: when a page with a next link is first served, this many versions older than the chain's become visible (0: none)")
	flag.IntVar(&cfg.Graph.ExpandFailsAbove, "graph-expand-fails-above", 0,
		"Graph: answer 500 to a page of incidents with $expand=alerts that would hold more than this many (0: never)")
	latencyOf := flag.String("latency-of", "", "read this Telegraf file output (influx lines) as it grows and, at exit, print how long "+
		"the Graph alert versions that became visible after the start took to reach it (p50, p95, max)")
	flag.Parse()
	if err := cfg.Graph.Check(); err != nil {
		fmt.Fprintln(os.Stderr, "defender-sim:", err)
		os.Exit(2)
	}

	if token, err := strconv.Unquote(`"` + cfg.SignIn.AccessToken + `"`); err == nil {
		cfg.SignIn.AccessToken = token
	}
	rates, err := parseFaultRates(*faults)
	if err != nil {
		fmt.Fprintln(os.Stderr, "defender-sim: -faults:", err)
		os.Exit(2)
	}
	cfg.Faults.Rates = rates

	if err := run(*listen, *addrFile, *latencyOf, cfg, auth); err != nil {
		fmt.Fprintln(os.Stderr, "defender-sim:", err)
		os.Exit(1)
	}
}

func run(listen, addrFile, latencyOf string, cfg simulator.Config, auth authFlags) error {
	tlsCfg, err := auth.configure(&cfg)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return err
	}
	base := "http://" + ln.Addr().String()
	if tlsCfg != nil {
		base = "https://" + ln.Addr().String()
		ln = tls.NewListener(ln, tlsCfg)
	}
	if addrFile != "" {
		if err := os.WriteFile(addrFile, []byte(base+"\n"), 0o600); err != nil {
			return err
		}
	}
	fmt.Printf("defender-sim: tenant %q listening on %s (alerts: %s/api/alerts, token: %s/%s/oauth2/token)\n",
		cfg.TenantID, base, base, base, cfg.TenantID)

	sim := simulator.New(cfg)
	// A minute: a thousand clients handshaking at once on a busy machine.
	srv := &http.Server{Handler: sim.Handler(), ReadHeaderTimeout: time.Minute}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if auth.federatedTokenFile != "" {
		if err := auth.writeFederatedToken(sim); err != nil {
			return err
		}
		go auth.renewFederatedToken(ctx, sim)
	}
	go func() {
		<-ctx.Done()
		srv.Shutdown(context.Background()) //nolint:errcheck // exiting anyway
	}()
	if latencyOf != "" {
		watch, done := newLatencyWatch(sim, latencyOf), make(chan struct{})
		go func() { watch.run(ctx); close(done) }()
		defer func() { <-done; fmt.Println(watch.report()) }()
	}
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

func faultNames() string {
	names := make([]string, 0, len(simulator.Faults))
	for _, f := range simulator.Faults {
		names = append(names, string(f))
	}
	return strings.Join(names, ", ")
}

// parseFaultRates reads "fault=share,..." pairs.
func parseFaultRates(spec string) (map[simulator.Fault]float64, error) {
	rates := make(map[simulator.Fault]float64)
	if spec == "" {
		return rates, nil
	}
	known := make(map[simulator.Fault]bool, len(simulator.Faults))
	for _, f := range simulator.Faults {
		known[f] = true
	}
	for _, pair := range strings.Split(spec, ",") {
		name, share, ok := strings.Cut(strings.TrimSpace(pair), "=")
		if !ok || !known[simulator.Fault(name)] {
			return nil, fmt.Errorf("%q is not fault=share with a fault among %s", pair, faultNames())
		}
		v, err := strconv.ParseFloat(share, 64)
		if err != nil || v < 0 || v > 1 {
			return nil, fmt.Errorf("%q: the share must be a number from 0 to 1", pair)
		}
		rates[simulator.Fault(name)] = v
	}
	return rates, nil
}
