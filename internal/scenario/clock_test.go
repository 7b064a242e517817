package scenario_test

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/influxdata/telegraf/config"
	"github.com/influxdata/telegraf/testutil"

	simulator "github.com/sectelemetry/telegraf-defender/internal/sim"
)

// A bubble has one clock, which never goes back; a host clock that runs
// ahead of the API's, then is set right, takes three bubbles: the API
// (a simulator, whose stream depends only on its seed and the time)
// behind the host in the second, and a plugin restarted on its state file
// in each.

// A host clock a day ahead for three polls, then set right: the windows
// end at the API's time (its Date header), so the saved position never
// passes what the API has processed, and every detection arrives once.
func TestScenarioHostClockAheadOfTheAPI(t *testing.T) {
	cfg := simulator.Config{Seed: 7, Rate: 12, History: 3 * time.Hour}
	stateFile := filepath.Join(t.TempDir(), "defender.state")
	configure := func(m *MicrosoftDefender) { m.StateFile = stateFile }
	s := &scenario{emitted: make(map[string]int), logger: &testutil.CaptureLogger{}}
	var start time.Time
	bubble(t, func(t *testing.T) {
		s.serve(t, cfg)
		p := s.plugin(configure)
		start = firstWindowStart(p)
		s.run(p, 10*pollInterval)
		p.Stop()
	})
	bubble(t, func(t *testing.T) {
		// The host's clock jumps a day ahead; the API's goes on.
		const ahead = 24 * time.Hour
		time.Sleep(10*pollInterval + ahead)
		behind := cfg
		behind.Now = func() time.Time { return time.Now().Add(-ahead) }
		s.serve(t, behind)
		p := s.plugin(configure)
		s.run(p, 3*pollInterval)
		require.LessOrEqual(t, s.position, time.Now().Add(-ahead-time.Duration(p.Delay)+time.Second),
			"the position is not beyond the API's time")
		require.Contains(t, s.logger.Warnings()[0], "The host clock runs 24h0m0s ahead of the API's (Date: ")
		p.Stop()
	})
	bubble(t, func(t *testing.T) {
		// Set right.
		time.Sleep(13 * pollInterval)
		s.serve(t, cfg)
		p := s.plugin(configure)
		s.run(p, 3*time.Hour)
		s.settled(p, start, 0)
		p.Stop()
	})
}

// The same for Graph, whose walk pages upward and forgets what it passed:
// with the host clock ahead, what it forgets stops at the API's time, so
// the next window repeats nothing.
func TestScenarioGraphHostClockAheadOfTheAPI(t *testing.T) {
	// Each simulator serves the stream from the first one's start on.
	cfg := simulator.Config{Seed: 17, Rate: 110}
	stateFile := filepath.Join(t.TempDir(), "defender.state")
	configure := func(m *MicrosoftDefender) {
		m.PageSize = 100
		m.InitialLookback = config.Duration(time.Minute)
		m.MaxRequestsPerMinute = 600
		m.StateFile = stateFile
	}
	s := &scenario{emitted: make(map[string]int), logger: &testutil.CaptureLogger{}}
	bubble(t, func(t *testing.T) {
		s.serve(t, cfg)
		p := s.graphPlugin(configure)
		s.run(p, 5*pollInterval)
		p.Stop()
	})
	bubble(t, func(t *testing.T) {
		const ahead = 10 * time.Minute
		time.Sleep(5*pollInterval + ahead)
		behind := cfg
		behind.Now = func() time.Time { return time.Now().Add(-ahead) }
		behind.History = 5 * pollInterval
		s.serve(t, behind)
		p := s.graphPlugin(configure)
		s.run(p, 5*pollInterval)
		p.Stop()
	})
	bubble(t, func(t *testing.T) {
		time.Sleep(10 * pollInterval)
		set := cfg
		set.History = 10 * pollInterval
		s.serve(t, set)
		p := s.graphPlugin(configure)
		s.run(p, 10*pollInterval)
		p.Stop()
	})
	require.NotEmpty(t, s.emitted)
	for version, n := range s.emitted {
		require.Equal(t, 1, n, "%s emitted %d times", version, n)
	}
}
