package main

import (
	"bytes"
	"context"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/influxdata/telegraf"
	"github.com/influxdata/telegraf/config"
	"github.com/influxdata/telegraf/metric"
	"github.com/influxdata/telegraf/plugins/inputs"
	"github.com/influxdata/telegraf/plugins/parsers/influx"
	"github.com/influxdata/telegraf/testutil"

	simulator "github.com/sectelemetry/telegraf-defender/internal/sim"
	"github.com/sectelemetry/telegraf-defender/plugins/inputs/microsoft_defender"
)

// TestMain makes memguard's key, which config.Secret seals secrets with,
// before any bubble: its re-keying goroutine lives as long as the process,
// and one started inside a bubble would keep the bubble from ending.
// A test that runs the command (TestBrokenStdoutEndsTheRunThroughStop) sets
// runMainEnv: the test binary then runs main with its command line.
func TestMain(m *testing.M) {
	if os.Getenv(runMainEnv) != "" {
		main()
		os.Exit(0)
	}
	secret := config.NewSecret([]byte("warm-up"))
	secret.Destroy()
	os.Exit(m.Run())
}

const runMainEnv = "TELEGRAF_DEFENDER_RUN_MAIN"

// A clean stop right after a poll, while stdout has not yet taken its
// lines, writes them and saves the state past them: the next start emits
// what came since, and none of the lines of the first run again. Together
// the two runs wrote every alert once: what a run without state reading
// the whole stretch writes.
func TestCleanStopRepeatsNothing(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		serveSim(t, simulator.Config{Seed: 7, Rate: 0.2, History: 3 * time.Hour})
		stateFile := filepath.Join(t.TempDir(), "defender.state")
		start := time.Now()

		// Stdout takes nothing until the run is stopping: then the lines of
		// the poll are all still to be written.
		stdout := &gatedWriter{open: make(chan struct{})}
		runOnePoll(t, stateFile, stdout, func(r *run) {
			require.NoError(t, r.stdin.Close())
			synctest.Wait() // the run is stopping, and stdout has taken nothing
			close(stdout.open)
		})

		time.Sleep(30 * time.Minute)
		polled := time.Now()
		var again bytes.Buffer
		runOnePoll(t, stateFile, &again, func(r *run) { require.NoError(t, r.stdin.Close()) })
		var whole bytes.Buffer
		runOnePoll(t, "", &whole, func(r *run) { require.NoError(t, r.stdin.Close()) }, func(m *microsoft_defender.MicrosoftDefender) {
			m.InitialLookback = config.Duration(time.Since(start) + 2*time.Hour)
		})

		first, second := splitRun(t, stdout.String()), splitRun(t, again.String())
		require.NotEmpty(t, first.alerts)
		require.NotEmpty(t, second.alerts)
		require.Equal(t, splitRun(t, whole.String()).alerts, append(first.alerts, second.alerts...), "each alert once, in order")
		// Alerts are counted once confirmed: all of each run before its Stop.
		require.Equal(t, int64(len(first.alerts)), first.counted)
		require.Equal(t, int64(len(second.alerts)), second.counted)
		// The second run read the first one's last overlap (10m) again, and
		// dropped it.
		overlapped := 0
		for _, m := range first.metrics {
			field, _ := m.GetField("last_processed_time_utc")
			processed, err := time.Parse(time.RFC3339Nano, field.(string))
			require.NoError(t, err)
			if !processed.Before(start.Add(-10 * time.Minute)) {
				overlapped++
			}
		}
		require.Positive(t, overlapped)
		emitted := len(second.alerts)
		testutil.RequireMetricsEqual(t, []telegraf.Metric{metric.New("defender_poll", map[string]string{"api": "siem", "status": "ok"},
			map[string]any{
				"requests":           1,
				"alerts_received":    emitted + overlapped,
				"alerts_emitted":     emitted,
				"duplicates_dropped": overlapped,
				"alerts_unconfirmed": emitted,
				"errors":             0,
				"alerts_skipped":     0,
				"invalid_fields":     0,
				"out_of_window":      0,
				"long_ids":           0,
				"forgotten_ids":      0,
				"duration_seconds":   0.0,
				"lag_seconds":        0.0,
				"backlog":            false,
			}, polled)}, []telegraf.Metric{second.poll})
	})
}

// runLines is what a run of one poll wrote.
type runLines struct {
	alerts  []string          // the defender_alert lines, in order
	metrics []telegraf.Metric // the same, parsed
	poll    telegraf.Metric
	counted int64 // the sum of the defender_alert_count counts
}

func splitRun(t *testing.T, out string) runLines {
	t.Helper()
	parser := &influx.Parser{}
	require.NoError(t, parser.Init())
	var r runLines
	for _, line := range strings.SplitAfter(strings.TrimSuffix(out, "\n"), "\n") {
		m, err := parser.ParseLine(line)
		require.NoError(t, err)
		switch m.Name() {
		case "defender_alert":
			r.alerts, r.metrics = append(r.alerts, line), append(r.metrics, m)
		case "defender_poll":
			require.Nil(t, r.poll, "one defender_poll")
			r.poll = m
		case "defender_alert_count":
			count, _ := m.GetField("count")
			r.counted += count.(int64)
		default:
			require.Failf(t, "unexpected line", "%q", line)
		}
	}
	return r
}

// runOnePoll runs the plugin, reading the simulator with stateFile, for
// one poll, which stop then ends.
func runOnePoll(t *testing.T, stateFile string, stdout io.Writer, stop func(r *run), configure ...func(*microsoft_defender.MicrosoftDefender)) {
	t.Helper()
	plugin := inputs.Inputs["microsoft_defender"]().(*microsoft_defender.MicrosoftDefender)
	plugin.API = "siem"
	plugin.EndpointURL = simURL + "/api/alerts"
	plugin.LoginEndpoint = simURL
	plugin.TenantID, plugin.ClientID = simTenant, simClientID
	plugin.ClientSecret = config.NewSecret([]byte(simSecret))
	plugin.StateFile = stateFile
	logger := &testutil.CaptureLogger{}
	plugin.Log = logger
	for _, c := range configure {
		c(plugin)
	}
	require.NoError(t, plugin.Init())
	input := &signalledInput{MicrosoftDefender: plugin, gathered: make(chan struct{})}
	var stderr bytes.Buffer
	r := startRun(context.Background(), input, stdout, &stderr)
	r.poll(t, 1, input.gathered)
	stop(r)
	require.NoError(t, <-r.done)
	require.Empty(t, stderr.String())
	require.Empty(t, logger.Errors())
}

// signalledInput is the plugin, which reports the end of each Gather.
type signalledInput struct {
	*microsoft_defender.MicrosoftDefender
	gathered chan struct{}
}

func (s *signalledInput) Gather(acc telegraf.Accumulator) error {
	defer func() { s.gathered <- struct{}{} }()
	return s.MicrosoftDefender.Gather(acc)
}

// gatedWriter holds every write until open is closed, as a stdout nobody
// reads.
type gatedWriter struct {
	open chan struct{}
	bytes.Buffer
}

func (g *gatedWriter) Write(p []byte) (int, error) {
	<-g.open
	return g.Buffer.Write(p)
}

const (
	// simHost is where the plugin believes the simulator to be: plain http
	// is allowed to loopback only. The connections are in memory.
	simHost   = "127.0.0.1:8080"
	simURL    = "http://" + simHost
	simSecret = "sim-secret"
)

// serveSim serves a simulator for the bubble of t to the plugins it
// initialises, through connections in memory: unlike a socket's, their
// waits are durable, so that synctest.Wait sees when a run is idle.
func serveSim(t *testing.T, cfg simulator.Config) *simulator.Server {
	t.Helper()
	cfg.TenantID, cfg.ClientID, cfg.ClientSecret = simTenant, simClientID, simSecret
	sim := simulator.New(cfg)
	listener := &memListener{conns: make(chan net.Conn), done: make(chan struct{})}
	server := &http.Server{Handler: sim.Handler(), ReadHeaderTimeout: time.Minute, ErrorLog: log.New(io.Discard, "", 0)}
	go server.Serve(listener) //nolint:errcheck // ends with Close
	// The plugin clones http.DefaultTransport at Init.
	saved := http.DefaultTransport
	http.DefaultTransport = &http.Transport{DialContext: listener.dial}
	t.Cleanup(func() {
		http.DefaultTransport = saved
		server.Close()
		listener.Close()
	})
	return sim
}

// memListener is an in-memory network: each dial makes a net.Pipe whose
// server end Accept returns.
type memListener struct {
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
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
	select {
	case l.conns <- server:
		return client, nil
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
