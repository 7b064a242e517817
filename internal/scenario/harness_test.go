package scenario_test

import (
	"context"
	"encoding/json"
	"fmt"
	"html"
	"io"
	"log"
	"math"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/influxdata/telegraf"
	"github.com/influxdata/telegraf/config"
	"github.com/influxdata/telegraf/plugins/inputs"
	"github.com/influxdata/telegraf/testutil"

	simulator "github.com/sectelemetry/telegraf-defender/internal/sim"
	"github.com/sectelemetry/telegraf-defender/plugins/inputs/microsoft_defender"
)

// MicrosoftDefender is the plugin under test, driven through what it exports.
type MicrosoftDefender = microsoft_defender.MicrosoftDefender

const (
	testTenant       = "contoso-tenant"
	testClientID     = "00000000-aaaa-bbbb-cccc-000000000001"
	testClientSecret = "S3cr3t-Value~with/special+chars="
	testRefreshToken = "0.ARfresh-token-value-that-must-not-leak"

	// The plugin's measurements.
	measurementAlert    = "defender_alert"
	measurementCount    = "defender_alert_count"
	measurementIncident = "defender_incident"
	measurementPoll     = "defender_poll"

	graphAlertsPath    = "/v1.0/security/alerts_v2"
	graphIncidentsPath = "/v1.0/security/incidents"

	// simHost is where the plugin believes the simulator to be: plain http
	// is allowed to loopback only. No socket is opened; the connections are
	// in memory (see memListener).
	simHost = "127.0.0.1:8080"
	simURL  = "http://" + simHost
)

// fixedNow is where every scenario starts: a bubble's clock starts at
// 2000-01-01 00:00 UTC, and bubble sleeps to this time first, so that the
// scenarios' windows read as the fixtures' do.
var fixedNow = time.Date(2020, 9, 30, 15, 0, 0, 0, time.UTC)

// TestMain makes memguard's key, which config.Secret seals secrets with,
// before any bubble: its re-keying goroutine lives as long as the process,
// and one started inside a bubble would keep the bubble from ending.
func TestMain(m *testing.M) {
	secret := config.NewSecret([]byte("warm-up"))
	secret.Destroy()
	os.Exit(m.Run())
}

// bubble runs f in a synctest bubble whose clock reads fixedNow.
func bubble(t *testing.T, f func(t *testing.T)) {
	t.Helper()
	synctest.Test(t, func(t *testing.T) {
		time.Sleep(time.Until(fixedNow))
		f(t)
	})
}

// memListener is an in-memory network: each dial makes a net.Pipe whose
// server end Accept returns. Unlike a socket, a pipe blocks durably, so
// that a bubble's clock moves while the plugin waits for the simulator.
type memListener struct {
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
}

func newMemListener() *memListener {
	return &memListener{conns: make(chan net.Conn), done: make(chan struct{})}
}

func (l *memListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *memListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (*memListener) Addr() net.Addr { return memAddr{} }

func (l *memListener) dial(ctx context.Context, network, _ string) (net.Conn, error) {
	client, server := net.Pipe()
	reset := new(atomic.Bool)
	select {
	case l.conns <- &memConn{Conn: server, reset: reset}:
		return &memConn{Conn: client, reset: reset}, nil
	case <-l.done:
	case <-ctx.Done():
	}
	client.Close()
	server.Close()
	return nil, &net.OpError{Op: "dial", Net: network, Addr: memAddr{}, Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}
}

type memAddr struct{}

func (memAddr) Network() string { return "tcp" }
func (memAddr) String() string  { return simHost }

// memConn is one end of a pipe. The simulator's connection reset
// (SetLinger(0), then Close, as on a *net.TCPConn) makes the other end's
// next read fail as a reset does.
type memConn struct {
	net.Conn
	reset        *atomic.Bool // shared by both ends
	resetOnClose bool
}

func (c *memConn) SetLinger(sec int) error {
	c.resetOnClose = sec == 0
	return nil
}

func (c *memConn) Close() error {
	if c.resetOnClose {
		c.reset.Store(true)
	}
	return c.Conn.Close()
}

func (c *memConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if err != nil && c.reset.Load() {
		err = &net.OpError{Op: "read", Net: "tcp", Addr: memAddr{}, Err: os.NewSyscallError("read", syscall.ECONNRESET)}
	}
	return n, err
}

// arrival is a request the simulator received, and when.
type arrival struct {
	at   time.Time
	path string
}

// scenario runs plugins against a simulator; both read the bubble's clock.
type scenario struct {
	t       *testing.T
	sim     *simulator.Server
	emitted map[string]int // full_id (SIEM) or id@lastUpdateDateTime (Graph) -> times emitted
	polls   int
	backlog int // polls that ended with a backlog
	logger  *testutil.CaptureLogger
	// allowErrors lets polls report errors, which are collected in errors.
	allowErrors bool
	errors      []string
	pollTimes   []time.Time
	pollEnds    []time.Time // when each poll of pollTimes ended
	pollBehind  []bool      // whether it ended with a backlog
	// position is where the plugin stood after the last poll: the poll's
	// time minus its lag_seconds, the one place the plugin tells it.
	position time.Time

	mu       sync.Mutex
	arrivals []arrival
	// wrap, when set before serve, changes the simulator's handler.
	wrap func(http.Handler) http.Handler
}

func newScenario(t *testing.T, cfg simulator.Config) *scenario {
	t.Helper()
	s := &scenario{emitted: make(map[string]int), logger: &testutil.CaptureLogger{}}
	s.serve(t, cfg)
	return s
}

// serve starts a simulator for the bubble of t, which ends it: a scenario
// that spans bubbles serves a new simulator in each, whose stream is the
// same for the same seed and time.
func (s *scenario) serve(t *testing.T, cfg simulator.Config) {
	t.Helper()
	s.t = t
	cfg.TenantID, cfg.ClientID, cfg.ClientSecret, cfg.RefreshToken = testTenant, testClientID, testClientSecret, testRefreshToken
	// Tokens outlive every scenario, as they did when the plugin and the
	// simulator had clocks of their own; the token tests set it.
	if cfg.TokenLifetime == 0 {
		cfg.TokenLifetime = 10000 * time.Hour
	}
	s.sim = simulator.New(cfg)
	handler := s.sim.Handler()
	if s.wrap != nil {
		handler = s.wrap(handler)
	}
	listener := newMemListener()
	server := &http.Server{
		Handler:           s.recordArrivals(handler),
		ReadHeaderTimeout: time.Minute,
		// The simulator's hijacked faults make the server complain.
		ErrorLog: log.New(io.Discard, "", 0),
	}
	go server.Serve(listener) //nolint:errcheck // ends with Close
	// The plugin clones http.DefaultTransport at Init.
	saved := http.DefaultTransport
	http.DefaultTransport = &http.Transport{DialContext: listener.dial, MaxIdleConns: 100, IdleConnTimeout: 90 * time.Second}
	t.Cleanup(func() {
		http.DefaultTransport = saved
		// Closes every connection, idle ones included, so that the
		// plugin's transport leaves the bubble free to end.
		server.Close()
		listener.Close()
	})
}

func (s *scenario) recordArrivals(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.arrivals = append(s.arrivals, arrival{at: time.Now().UTC(), path: r.URL.Path})
		s.mu.Unlock()
		next.ServeHTTP(w, r)
	})
}

// arrivalsTo returns when each request to a path ending in suffix arrived.
func (s *scenario) arrivalsTo(suffix string) []time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []time.Time
	for _, a := range s.arrivals {
		if strings.HasSuffix(a.path, suffix) {
			out = append(out, a.at)
		}
	}
	return out
}

// newPlugin is the plugin as Telegraf creates it, with its defaults,
// reading the SIEM API, whose answers the scenarios check most simply.
func newPlugin() *MicrosoftDefender {
	p := inputs.Inputs["microsoft_defender"]().(*MicrosoftDefender)
	p.API = "siem"
	return p
}

// plugin returns an initialised plugin reading the simulator.
func (s *scenario) plugin(configure func(*MicrosoftDefender)) *MicrosoftDefender {
	s.t.Helper()
	p := newPlugin()
	p.EndpointURL = simURL + "/api/alerts"
	p.LoginEndpoint = simURL
	p.TenantID = testTenant
	p.ClientID = testClientID
	p.ClientSecret = config.NewSecret([]byte(testClientSecret))
	p.Log = s.logger
	if configure != nil {
		configure(p)
	}
	require.NoError(s.t, p.Init())
	return p
}

// graphPlugin points a plugin with api = "graph" at the simulator.
func (s *scenario) graphPlugin(configure func(*MicrosoftDefender)) *MicrosoftDefender {
	s.t.Helper()
	return s.plugin(func(m *MicrosoftDefender) {
		m.API = "graph"
		m.EndpointURL = simURL + graphAlertsPath
		m.Scopes = []string{"https://graph.microsoft.com/.default"}
		if configure != nil {
			configure(m)
		}
	})
}

// poll runs one Gather, which must succeed, and records what it emitted.
func (s *scenario) poll(p *MicrosoftDefender) *testutil.Accumulator {
	s.t.Helper()
	var acc testutil.Accumulator
	s.pollTimes = append(s.pollTimes, time.Now())
	require.NoError(s.t, p.Gather(&acc))
	synctest.Wait() // the simulator's handlers are done
	s.pollEnds = append(s.pollEnds, time.Now())
	for _, err := range acc.Errors {
		s.errors = append(s.errors, err.Error())
	}
	if !s.allowErrors {
		require.Empty(s.t, acc.Errors)
	}
	s.record(&acc)
	return &acc
}

// record counts a poll and what it emitted.
func (s *scenario) record(acc *testutil.Accumulator) {
	s.polls++
	for _, m := range acc.GetTelegrafMetrics() {
		switch m.Name() {
		case measurementAlert, measurementIncident:
			s.emitted[versionKey(m)]++
		case measurementPoll:
			backlog, ok := m.GetField("backlog")
			if ok && backlog.(bool) {
				s.backlog++
			}
			s.pollBehind = append(s.pollBehind, ok && backlog.(bool))
			lag, _ := m.GetField("lag_seconds")
			s.position = m.Time().Add(-time.Duration(math.Round(lag.(float64) * float64(time.Second))))
		}
	}
}

// versionKey names what a defender_alert or defender_incident is an event
// of: a SIEM detection's full_id, a Graph version's id@lastUpdateDateTime.
func versionKey(m telegraf.Metric) string {
	if id, ok := m.GetField("full_id"); ok {
		return id.(string)
	}
	id, ok := m.GetField("alert_id")
	if !ok {
		id, _ = m.GetField("incident_id")
	}
	field, _ := m.GetField("last_update_date_time")
	updated, _ := field.(string) // none when it did not parse
	return id.(string) + "@" + updated
}

// pollInterval is how often the scenarios poll.
const pollInterval = time.Minute

// run polls every pollInterval for the given time.
func (s *scenario) run(p *MicrosoftDefender, duration time.Duration) {
	for end := time.Now().Add(duration); time.Now().Before(end); time.Sleep(pollInterval) {
		s.poll(p)
	}
}

// requireExactlyOnce checks that every detection the simulator holds with
// LastProcessedTimeUtc in [from, complete] was emitted once, and that
// nothing else was emitted but detections up to readUpTo, each once.
// Between complete and readUpTo lie detections that may still be invisible.
func (s *scenario) requireExactlyOnce(from, complete, readUpTo time.Time) {
	s.t.Helper()
	want := make(map[string]bool)
	allowed := make(map[string]bool)
	all := s.sim.All()
	for i := range all {
		d := &all[i]
		lpt, err := time.Parse(time.RFC3339Nano, d.LastProcessedTimeUtc)
		require.NoError(s.t, err)
		if lpt.Before(from) || lpt.After(readUpTo) {
			continue
		}
		allowed[d.FullID] = true
		if !lpt.After(complete) {
			want[d.FullID] = true
		}
	}
	require.NotEmpty(s.t, want)
	var duplicated, missing, unexpected []string
	for id, n := range s.emitted {
		switch {
		case !allowed[id]:
			unexpected = append(unexpected, id)
		case n > 1:
			duplicated = append(duplicated, id)
		}
	}
	for id := range want {
		if s.emitted[id] == 0 {
			missing = append(missing, id)
		}
	}
	require.Empty(s.t, missing, "detections never emitted")
	require.Empty(s.t, duplicated, "detections emitted more than once")
	require.Empty(s.t, unexpected, "detections emitted that are not in the window")
}

// firstWindowStart is where a plugin's first poll, at the current time,
// starts reading.
func firstWindowStart(p *MicrosoftDefender) time.Time {
	return time.Now().Add(-time.Duration(p.Delay) - time.Duration(p.InitialLookback))
}

// settled checks exactly-once delivery for a scenario whose last poll ran
// one interval ago: everything its window covered must be in, except the
// last maxLag, whose detections may still be invisible.
func (s *scenario) settled(p *MicrosoftDefender, from time.Time, maxLag time.Duration) {
	s.t.Helper()
	readUpTo := time.Now().Add(-pollInterval - time.Duration(p.Delay))
	s.requireExactlyOnce(from, readUpTo.Add(-maxLag), readUpTo)
}

// crash ends a plugin as a killed process ends: Stop never runs, so the
// state of its last poll is not saved, and the next process finds the state
// file as it was. The operating system releases the locks of a process
// that dies; the crashed plugin of the test process keeps its lock, so the
// next process reads a copy of the file the crash left. crash returns the
// copy's path; the crashed plugin is stopped, on its own file, at the end.
func crash(t *testing.T, p *MicrosoftDefender, stateFile string) string {
	t.Helper()
	data, err := os.ReadFile(stateFile)
	require.NoError(t, err)
	copied := filepath.Join(t.TempDir(), filepath.Base(stateFile))
	require.NoError(t, os.WriteFile(copied, data, 0o600))
	t.Cleanup(p.Stop)
	return copied
}

// requestsTo returns the requests to a path ending in pathSuffix.
func requestsTo(sim *simulator.Server, pathSuffix string) []*http.Request {
	var out []*http.Request
	for _, r := range sim.Requests() {
		if strings.HasSuffix(r.URL.Path, pathSuffix) {
			out = append(out, r)
		}
	}
	return out
}

// windows returns the sinceTimeUtc and untilTimeUtc of the SIEM requests
// from the n-th on.
func windows(sim *simulator.Server, from int) []string {
	requests := requestsTo(sim, "/api/alerts")[from:]
	out := make([]string, 0, len(requests))
	for _, r := range requests {
		q := r.URL.Query()
		out = append(out, q.Get("sinceTimeUtc")+" "+q.Get("untilTimeUtc"))
	}
	return out
}

// firstRunWindows are the SIEM windows of a first poll at fixedNow with
// the default settings: initial_lookback (2h) up to now (delay 0), in
// chunks of max_window (1h) that overlap by overlap (10m).
var firstRunWindows = []string{
	"2020-09-30T13:00:00.0000000Z 2020-09-30T14:00:00.0000000Z",
	"2020-09-30T13:50:00.0000000Z 2020-09-30T14:50:00.0000000Z",
	"2020-09-30T14:40:00.0000000Z 2020-09-30T15:00:00.0000000Z",
}

// pollFields are the fields of the poll's defender_poll metric.
func pollFields(t *testing.T, acc *testutil.Accumulator) map[string]interface{} {
	t.Helper()
	for _, m := range acc.GetTelegrafMetrics() {
		if m.Name() == measurementPoll {
			return m.Fields()
		}
	}
	t.Fatal("no defender_poll metric")
	return nil
}

// pollStatus is the status tag of the poll's defender_poll metric.
func pollStatus(t *testing.T, acc *testutil.Accumulator) string {
	t.Helper()
	for _, m := range acc.GetTelegrafMetrics() {
		if m.Name() == measurementPoll {
			return m.Tags()["status"]
		}
	}
	t.Fatal("no defender_poll metric")
	return ""
}

// emittedIDs are the full_id of the defender_alert metrics, in order.
func emittedIDs(acc *testutil.Accumulator) []string {
	metrics := acc.GetTelegrafMetrics()
	ids := make([]string, 0, len(metrics))
	for _, m := range metrics {
		if m.Name() != measurementAlert {
			continue
		}
		id, _ := m.GetField("full_id")
		ids = append(ids, id.(string))
	}
	return ids
}

// emittedKeys are the full_id of the SIEM defender_alert metrics and the
// id@lastUpdateDateTime of the Graph ones, in order.
func emittedKeys(acc *testutil.Accumulator) []string {
	var keys []string
	for _, m := range acc.GetTelegrafMetrics() {
		if m.Name() != measurementAlert {
			continue
		}
		if id, ok := m.GetField("full_id"); ok {
			keys = append(keys, id.(string))
			continue
		}
		id, _ := m.GetField("alert_id")
		updated, _ := m.GetField("last_update_date_time")
		keys = append(keys, fmt.Sprint(id, "@", updated))
	}
	return keys
}

// savedState is what state_file holds.
type savedState struct {
	Version   int                  `json:"version"`
	Watermark time.Time            `json:"watermark"`
	Pending   json.RawMessage      `json:"pending"` // a chunk left open, if any
	Seen      map[string]time.Time `json:"seen"`
}

// readStateFile reads the state file a plugin left.
func readStateFile(t *testing.T, path string) savedState {
	t.Helper()
	data, err := os.ReadFile(path)
	require.NoError(t, err)
	var st savedState
	require.NoError(t, json.Unmarshal(data, &st))
	return st
}

// containsAny reports whether a message holds want.
func containsAny(messages []string, want string) bool {
	for _, m := range messages {
		if strings.Contains(m, want) {
			return true
		}
	}
	return false
}

func requireNoSecret(t *testing.T, s string) {
	t.Helper()
	for _, secret := range []string{testClientSecret, testRefreshToken} {
		require.NotContains(t, s, secret)
		require.NotContains(t, s, url.QueryEscape(secret))
		require.NotContains(t, s, url.PathEscape(secret))
		require.NotContains(t, unescapeAll(s), secret, "%s", s)
	}
}

var (
	escapeSequence = regexp.MustCompile(`\\u[0-9a-fA-F]{4}|\\x[0-9a-fA-F]{2}|\\["\\/'bfnrt]|%[0-9a-fA-F]{2}`)
	markupSequence = regexp.MustCompile(`(?s)<!--.*?-->|<[^<>]*>`)
)

// unescapeAll undoes what a reader of a message could undo: JSON, C and
// percent escapes and HTML entities until none is left, then markup.
func unescapeAll(s string) string {
	for {
		prev := s
		s = escapeSequence.ReplaceAllStringFunc(s, func(e string) string {
			switch {
			case e[0] == '%', e[1] == 'x':
				v, _ := strconv.ParseUint(e[len(e)-2:], 16, 8) //nolint:errcheck // the pattern holds two hex digits
				return string([]byte{byte(v)})
			case e[1] == 'u':
				v, _ := strconv.ParseUint(e[2:], 16, 16) //nolint:errcheck // the pattern holds four hex digits
				return string(rune(v))
			}
			unquoted, err := strconv.Unquote(`"` + e + `"`)
			if err != nil {
				return e[1:] // \' and \/ are not Go escapes
			}
			return unquoted
		})
		s = html.UnescapeString(s)
		if s == prev {
			return markupSequence.ReplaceAllString(s, "")
		}
	}
}
