package microsoft_defender

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/influxdata/telegraf/config"
	"github.com/influxdata/telegraf/testutil"

	simulator "github.com/sectelemetry/telegraf-defender/internal/sim"
)

// scenario runs plugins against a simulator that shares their clock.
type scenario struct {
	t       testing.TB
	clock   time.Time
	sim     *simulator.Server
	server  *httptest.Server
	emitted map[string]int // full_id -> times emitted
	polls   int
	backlog int // polls that ended with a backlog
	logger  *testutil.CaptureLogger
	// allowErrors lets polls report errors, which are collected in errors.
	allowErrors bool
	errors      []string
	pollTimes   []time.Time
	pollEnds    []time.Time // when each poll of pollTimes ended
	pollBehind  []bool      // whether it ended with a backlog
	// handling counts the simulator's handlers at work: they read clock,
	// which the test moves only once they are done (see settle).
	handling sync.WaitGroup
}

// track counts the handlers at work. A request whose client has given up
// (a timeout) is not served: its handler would read the clock late.
func (s *scenario) track(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.handling.Add(1)
		defer s.handling.Done()
		if r.Context().Err() != nil {
			return
		}
		h.ServeHTTP(w, r)
	})
}

// settle waits for the simulator's handlers to finish, so that the test
// may move the clock they read.
func (s *scenario) settle() {
	s.handling.Wait()
}

func newScenario(t testing.TB, cfg simulator.Config) *scenario {
	t.Helper()
	s := &scenario{t: t, clock: fixedNow, emitted: make(map[string]int), logger: &testutil.CaptureLogger{}}
	cfg.TenantID, cfg.ClientID, cfg.ClientSecret, cfg.RefreshToken = testTenant, testClientID, testClientSecret, testRefreshToken
	// The plugin renews tokens by the wall clock, the simulator expires them
	// by the scenario's clock, which runs hours ahead.
	cfg.TokenLifetime = 10000 * time.Hour
	cfg.Now = func() time.Time { return s.clock }
	s.sim = simulator.New(cfg)
	s.server = httptest.NewServer(s.track(s.sim.Handler()))
	t.Cleanup(s.server.Close)
	return s
}

// plugin returns an initialised plugin reading the simulator.
func (s *scenario) plugin(configure func(*MicrosoftDefender)) *MicrosoftDefender {
	s.t.Helper()
	p := withDefaults(&MicrosoftDefender{
		EndpointURL:   s.server.URL + "/api/alerts",
		LoginEndpoint: s.server.URL,
		TenantID:      testTenant,
		ClientID:      testClientID,
		ClientSecret:  config.NewSecret([]byte(testClientSecret)),
		Log:           s.logger,
		now:           func() time.Time { return s.clock },
		sleep: func(ctx context.Context, d time.Duration) error {
			s.settle()
			s.clock = s.clock.Add(d)
			return ctx.Err()
		},
	})
	if configure != nil {
		configure(p)
	}
	require.NoError(s.t, p.Init())
	return p
}

// poll runs one Gather, which must succeed, and records what it emitted.
func (s *scenario) poll(p *MicrosoftDefender) *testutil.Accumulator {
	s.t.Helper()
	var acc testutil.Accumulator
	s.pollTimes = append(s.pollTimes, s.clock)
	require.NoError(s.t, p.Gather(&acc))
	s.settle()
	s.pollEnds = append(s.pollEnds, s.clock)
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
		case measurementAlert:
			if id, ok := m.GetField("full_id"); ok {
				s.emitted[id.(string)]++
			} else {
				// A Graph alert version: (id, lastUpdateDateTime).
				id, _ := m.GetField("alert_id")
				field, _ := m.GetField("last_update_date_time")
				updated, _ := field.(string) // none when it did not parse
				s.emitted[id.(string)+"@"+updated]++
			}
		case measurementPoll:
			backlog, ok := m.GetField("backlog")
			if ok && backlog.(bool) {
				s.backlog++
			}
			s.pollBehind = append(s.pollBehind, ok && backlog.(bool))
		}
	}
}

// pollInterval is how often the scenarios poll.
const pollInterval = time.Minute

// run polls every pollInterval for the given time.
func (s *scenario) run(p *MicrosoftDefender, duration time.Duration) {
	for end := s.clock.Add(duration); s.clock.Before(end); s.clock = s.clock.Add(pollInterval) {
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

// firstWindowStart is where a plugin's first poll, at the scenario's
// current time, starts reading.
func (s *scenario) firstWindowStart(p *MicrosoftDefender) time.Time {
	return s.clock.Add(-time.Duration(p.Delay) - time.Duration(p.InitialLookback))
}

// settled checks exactly-once delivery for a scenario whose last poll ran
// one interval ago: everything its window covered must be in, except the
// last maxLag, whose detections may still be invisible.
func (s *scenario) settled(p *MicrosoftDefender, from time.Time, maxLag time.Duration) {
	s.t.Helper()
	readUpTo := s.clock.Add(-pollInterval - time.Duration(p.Delay))
	s.requireExactlyOnce(from, readUpTo.Add(-maxLag), readUpTo)
}

// Detections that become visible up to eight minutes after their
// LastProcessedTimeUtc, within delay + overlap, are all caught, once.
func TestScenarioLateArrivals(t *testing.T) {
	s := newScenario(t, simulator.Config{Seed: 11, Rate: 12, History: 2 * time.Hour, MaxLag: 8 * time.Minute, LagFraction: 0.5})
	p := s.plugin(nil)
	start := s.firstWindowStart(p)
	s.run(p, 5*time.Hour)
	// Once the lag has passed, everything up to the last window's end is in.
	s.run(p, 15*time.Minute)
	require.Equal(t, 315, s.polls)
	s.settled(p, start, 8*time.Minute)
	require.Empty(t, s.logger.Warnings())
}

// Without the overlap the same stream loses detections: the scenario
// above is a test that can fail.
func TestScenarioLateArrivalsAreLostWithoutOverlap(t *testing.T) {
	s := newScenario(t, simulator.Config{Seed: 11, Rate: 12, History: 2 * time.Hour, MaxLag: 8 * time.Minute, LagFraction: 0.5})
	p := s.plugin(func(m *MicrosoftDefender) {
		m.Delay = config.Duration(0)
		m.Overlap = config.Duration(time.Nanosecond)
	})
	s.run(p, 2*time.Hour)
	var missing int
	for _, d := range s.sim.All() {
		lpt, err := time.Parse(time.RFC3339Nano, d.LastProcessedTimeUtc)
		require.NoError(t, err)
		if lpt.After(fixedNow.Add(-time.Hour)) && lpt.Before(s.clock.Add(-time.Hour)) && s.emitted[d.FullID] == 0 {
			missing++
		}
	}
	require.Positive(t, missing)
}

// Bursts larger than limit and than max_alerts_per_gather, and instants
// holding more detections than limit, are walked through: nothing skipped,
// nothing repeated, and the backlog is worked off over several polls.
func TestScenarioBurstsLimitAndBudget(t *testing.T) {
	s := newScenario(t, simulator.Config{
		Seed: 5, Rate: 12, History: 3 * time.Hour, MaxLag: 3 * time.Minute, LagFraction: 0.3,
		BurstEvery: 37 * time.Minute, BurstSize: 60,
	})
	p := s.plugin(func(m *MicrosoftDefender) {
		m.Limit = 25
		m.MaxAlertsPerGather = 150
		m.InitialLookback = config.Duration(3 * time.Hour)
	})
	start := s.firstWindowStart(p)
	s.run(p, 4*time.Hour)
	s.settled(p, start, 3*time.Minute)
	require.Positive(t, s.backlog, "the first polls had more than max_alerts_per_gather to read")

	var stuck int
	for _, w := range s.logger.Warnings() {
		if strings.Contains(w, "detections share LastProcessedTimeUtc") {
			stuck++
		}
	}
	require.Positive(t, stuck, "bursts of 60 on one instant exceed limit 25 and are read without a limit")
}

// A first poll reaching days back is cut into max_window chunks and
// spread over polls of at most max_alerts_per_gather detections each.
func TestScenarioBackfillOfDays(t *testing.T) {
	s := newScenario(t, simulator.Config{Seed: 2, Rate: 4, History: 73 * time.Hour})
	p := s.plugin(func(m *MicrosoftDefender) {
		m.InitialLookback = config.Duration(72 * time.Hour)
		m.MaxAlertsPerGather = 2000
	})
	start := s.firstWindowStart(p)

	acc := s.poll(p)
	alerts := len(acc.GetTelegrafMetrics()) - len(detectionMetrics(acc))
	require.Equal(t, 1, alerts, "one defender_poll")
	first := pollFields(t, acc)
	require.Equal(t, int64(2000), first["alerts_emitted"])
	require.Equal(t, true, first["backlog"])
	require.Less(t, p.cursor.watermark, s.clock.Add(-60*time.Hour), "a few chunks are done, most of the window is behind")
	require.InDelta(t, s.clock.Sub(p.cursor.watermark).Seconds(), first["lag_seconds"], 0)

	s.clock = s.clock.Add(time.Minute)
	s.run(p, 200*time.Minute)
	s.settled(p, start, 0)
	last := pollFields(t, s.poll(p))
	require.Equal(t, false, last["backlog"])
	require.InDelta(t, time.Minute.Seconds(), last["lag_seconds"], 1)
	require.LessOrEqual(t, len(p.cursor.seen), 200, "only the overlap's identities are kept")
}

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

// A clean stop and start with state_file repeats nothing and loses nothing.
func TestScenarioCleanRestart(t *testing.T) {
	s := newScenario(t, simulator.Config{Seed: 9, Rate: 15, History: 3 * time.Hour, MaxLag: 5 * time.Minute, LagFraction: 0.4})
	stateFile := filepath.Join(t.TempDir(), "defender.state")
	configure := func(m *MicrosoftDefender) {
		m.StateFile = stateFile
		m.MaxAlertsPerGather = 300
	}
	p := s.plugin(configure)
	start := s.firstWindowStart(p)
	for range 3 {
		s.run(p, 7*time.Minute)
		p.Stop()
		p = s.plugin(configure) // a new process: everything but the state file is gone
	}
	s.run(p, 20*time.Minute)
	s.settled(p, start, 5*time.Minute)
}

// After a crash, which skips Stop, the state file holds the state before
// the last poll: that poll is repeated, and nothing is lost.
func TestScenarioCrashRepeatsAtMostTheLastPoll(t *testing.T) {
	s := newScenario(t, simulator.Config{Seed: 4, Rate: 15, History: 3 * time.Hour})
	stateFile := filepath.Join(t.TempDir(), "defender.state")
	configure := func(m *MicrosoftDefender) {
		m.StateFile = stateFile
		m.MaxAlertsPerGather = 400
	}
	p := s.plugin(configure)
	start := s.firstWindowStart(p)
	s.run(p, 3*time.Minute)
	lastPoll := s.poll(p)
	require.Len(t, emittedIDs(lastPoll), 400)

	crash(p)
	p = s.plugin(configure)
	repeated := s.poll(p)
	require.Equal(t, emittedIDs(lastPoll), emittedIDs(repeated), "exactly the last poll is repeated")
	for _, id := range emittedIDs(repeated) {
		s.emitted[id]--
	}
	s.run(p, 30*time.Minute)
	s.settled(p, start, 0)
}

// crash ends a plugin as a killed process ends: Stop never runs, so the
// state of the last poll is not saved. The operating system releases the
// locks of a process that dies, state_file's included; within the test
// process the plugin's lock is released by hand to the same effect.
func crash(p *MicrosoftDefender) {
	p.releaseStateLock()
}

func TestCorruptOrForeignStateFileMeansAFirstRun(t *testing.T) {
	tests := []struct {
		name    string
		content string
		warning string
	}{
		{"not json", "{\"version\":1,\"watermark\":",
			`State file %q is corrupt (unexpected end of JSON input): moved it to "PATH.corrupt-20200930T150000Z", starting as on a first run`},
		{"other version", `{"version":99}`, "Ignoring state file %q, starting as on a first run: its version is 99, this plugin reads version 1"},
		{"other tenant", `{"version":1,"source":"api=siem endpoint=https://x tenant=other"}`,
			"Ignoring state file %q, starting as on a first run: it belongs to another stream (api=siem endpoint=https://x tenant=other)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			stateFile := filepath.Join(t.TempDir(), "defender.state")
			require.NoError(t, os.WriteFile(stateFile, []byte(tt.content), 0o600))
			s := newScenario(t, simulator.Config{Seed: 1, Rate: 2, History: 3 * time.Hour})
			p := s.plugin(func(m *MicrosoftDefender) { m.StateFile = stateFile })
			warning := strings.ReplaceAll(strings.ReplaceAll(tt.warning, "PATH", stateFile), "%q", `"`+stateFile+`"`)
			require.Equal(t, []string{"W! [] " + warning}, s.logger.Warnings())
			require.True(t, p.cursor.watermark.IsZero())

			// The first poll reads initial_lookback; Stop rewrites the file.
			s.poll(p)
			p.Stop()
			data, err := os.ReadFile(stateFile)
			require.NoError(t, err)
			require.Contains(t, string(data), `"version":1`)
			require.Equal(t, fixedNow.Add(-time.Minute), p.cursor.watermark)
		})
	}
}

func TestMissingStateFileMeansAFirstRun(t *testing.T) {
	stateFile := filepath.Join(t.TempDir(), "defender.state")
	s := newScenario(t, simulator.Config{Seed: 1, Rate: 2, History: 3 * time.Hour})
	p := s.plugin(func(m *MicrosoftDefender) { m.StateFile = stateFile })
	require.Empty(t, s.logger.Warnings())
	require.True(t, p.cursor.watermark.IsZero())
}

// Telegraf's own state file: GetState's value survives a JSON round trip
// into SetState, as Telegraf's persister does it, and the restored plugin
// repeats nothing.
func TestTelegrafStatefulPluginRoundTrip(t *testing.T) {
	s := newScenario(t, simulator.Config{Seed: 8, Rate: 10, History: 3 * time.Hour})
	p := s.plugin(nil)
	start := s.firstWindowStart(p)
	s.run(p, 10*time.Minute)

	restored := s.plugin(nil)
	require.Equal(t, p.ID(), restored.ID())
	state := roundTripState(t, p.GetState())
	require.NoError(t, restored.SetState(state))
	s.run(restored, 20*time.Minute)
	s.settled(restored, start, 0)
}

func TestIDChangesOnlyWithTheStream(t *testing.T) {
	base := validPlugin()
	require.NoError(t, base.Init())
	unrelated := validPlugin()
	unrelated.Timeout = config.Duration(time.Minute)
	unrelated.Limit = 100
	unrelated.ClientSecret = config.NewSecret([]byte("rotated"))
	unrelated.MachineGroups = nil
	require.NoError(t, unrelated.Init())
	require.Equal(t, base.ID(), unrelated.ID())

	for name, change := range map[string]func(*MicrosoftDefender){
		"region":         func(m *MicrosoftDefender) { m.Region = "uk" },
		"tenant":         func(m *MicrosoftDefender) { m.TenantID = "fabrikam.onmicrosoft.com" },
		"machine groups": func(m *MicrosoftDefender) { m.MachineGroups = []string{"Servers"} },
	} {
		other := validPlugin()
		change(other)
		require.NoError(t, other.Init())
		require.NotEqual(t, base.ID(), other.ID(), name)
	}
}
