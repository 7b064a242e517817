package scenario_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/influxdata/telegraf/config"

	simulator "github.com/sectelemetry/telegraf-defender/internal/sim"
)

// Detections that become visible up to eight minutes after their
// LastProcessedTimeUtc, within delay + overlap, are all caught, once.
func TestScenarioLateArrivals(t *testing.T) {
	bubble(t, func(t *testing.T) {
		s := newScenario(t, simulator.Config{Seed: 11, Rate: 12, History: 2 * time.Hour, MaxLag: 8 * time.Minute, LagFraction: 0.5})
		p := s.plugin(nil)
		start := firstWindowStart(p)
		s.run(p, 5*time.Hour)
		// Once the lag has passed, everything up to the last window's end is in.
		s.run(p, 15*time.Minute)
		require.Equal(t, 315, s.polls)
		s.settled(p, start, 8*time.Minute)
		require.Empty(t, s.logger.Warnings())
	})
}

// Without the overlap the same stream loses detections: the scenario
// above is a test that can fail.
func TestScenarioLateArrivalsAreLostWithoutOverlap(t *testing.T) {
	bubble(t, func(t *testing.T) {
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
			if lpt.After(fixedNow.Add(-time.Hour)) && lpt.Before(time.Now().Add(-time.Hour)) && s.emitted[d.FullID] == 0 {
				missing++
			}
		}
		require.Positive(t, missing)
	})
}

// Bursts larger than limit and than max_alerts_per_gather, and instants
// holding more detections than limit, are walked through: nothing skipped,
// nothing repeated, and the backlog is worked off over several polls.
func TestScenarioBurstsLimitAndBudget(t *testing.T) {
	bubble(t, func(t *testing.T) {
		s := newScenario(t, simulator.Config{
			Seed: 5, Rate: 12, History: 3 * time.Hour, MaxLag: 3 * time.Minute, LagFraction: 0.3,
			BurstEvery: 37 * time.Minute, BurstSize: 60,
		})
		p := s.plugin(func(m *MicrosoftDefender) {
			m.PageSize = 25
			m.MaxAlertsPerGather = 150
			m.InitialLookback = config.Duration(3 * time.Hour)
		})
		start := firstWindowStart(p)
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
	})
}

// A first poll reaching days back is cut into max_window chunks and
// spread over polls of at most max_alerts_per_gather detections each.
func TestScenarioBackfillOfDays(t *testing.T) {
	bubble(t, func(t *testing.T) {
		s := newScenario(t, simulator.Config{Seed: 2, Rate: 4, History: 73 * time.Hour})
		stateFile := filepath.Join(t.TempDir(), "defender.state")
		p := s.plugin(func(m *MicrosoftDefender) {
			m.InitialLookback = config.Duration(72 * time.Hour)
			m.MaxAlertsPerGather = 2000
			m.StateFile = stateFile
		})
		start := firstWindowStart(p)

		acc := s.poll(p)
		alerts := 0
		for _, m := range acc.GetTelegrafMetrics() {
			if m.Name() != measurementPoll {
				alerts++
			}
		}
		require.Equal(t, 1, len(acc.GetTelegrafMetrics())-alerts, "one defender_poll")
		first := pollFields(t, acc)
		require.Equal(t, int64(2000), first["alerts_emitted"])
		require.Equal(t, true, first["backlog"])
		// The saved position: a few chunks are done, most of the window is
		// behind, and the lag is measured from it.
		require.Less(t, s.position, time.Now().Add(-60*time.Hour), "a few chunks are done, most of the window is behind")

		time.Sleep(time.Minute)
		s.run(p, 200*time.Minute)
		s.settled(p, start, 0)
		last := pollFields(t, s.poll(p))
		require.Equal(t, false, last["backlog"])
		require.InDelta(t, 0, last["lag_seconds"], 1)
		p.Stop()
		require.LessOrEqual(t, len(readStateFile(t, stateFile).Seen), 200, "only the overlap's identities are kept")
	})
}

// A clean stop and start with state_file repeats nothing and loses nothing.
func TestScenarioCleanRestart(t *testing.T) {
	bubble(t, func(t *testing.T) {
		s := newScenario(t, simulator.Config{Seed: 9, Rate: 15, History: 3 * time.Hour, MaxLag: 5 * time.Minute, LagFraction: 0.4})
		stateFile := filepath.Join(t.TempDir(), "defender.state")
		configure := func(m *MicrosoftDefender) {
			m.StateFile = stateFile
			m.MaxAlertsPerGather = 300
		}
		p := s.plugin(configure)
		start := firstWindowStart(p)
		for range 3 {
			s.run(p, 7*time.Minute)
			p.Stop()
			p = s.plugin(configure) // a new process: everything but the state file is gone
		}
		s.run(p, 20*time.Minute)
		s.settled(p, start, 5*time.Minute)
		p.Stop()
	})
}

// After a crash, which skips Stop, the state file holds the state before
// the last poll: that poll is repeated, and nothing is lost.
func TestScenarioCrashRepeatsAtMostTheLastPoll(t *testing.T) {
	bubble(t, func(t *testing.T) {
		s := newScenario(t, simulator.Config{Seed: 4, Rate: 15, History: 3 * time.Hour})
		stateFile := filepath.Join(t.TempDir(), "defender.state")
		configure := func(m *MicrosoftDefender) {
			m.StateFile = stateFile
			m.MaxAlertsPerGather = 400
		}
		p := s.plugin(configure)
		start := firstWindowStart(p)
		s.run(p, 3*time.Minute)
		lastPoll := s.poll(p)
		require.Len(t, emittedIDs(lastPoll), 400)

		stateFile = crash(t, p, stateFile)
		p = s.plugin(configure)
		repeated := s.poll(p)
		require.Equal(t, emittedIDs(lastPoll), emittedIDs(repeated), "exactly the last poll is repeated")
		for _, id := range emittedIDs(repeated) {
			s.emitted[id]--
		}
		s.run(p, 30*time.Minute)
		s.settled(p, start, 0)
		p.Stop()
	})
}

// A state file that does not parse, of another version or of another
// stream is a first run: the first poll reads initial_lookback, and Stop
// writes the file anew, from which the next start reads on.
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
			bubble(t, func(t *testing.T) {
				stateFile := filepath.Join(t.TempDir(), "defender.state")
				require.NoError(t, os.WriteFile(stateFile, []byte(tt.content), 0o600))
				s := newScenario(t, simulator.Config{Seed: 1, Rate: 2, History: 3 * time.Hour})
				p := s.plugin(func(m *MicrosoftDefender) { m.StateFile = stateFile })
				warning := strings.ReplaceAll(strings.ReplaceAll(tt.warning, "PATH", stateFile), "%q", `"`+stateFile+`"`)
				require.Equal(t, []string{"W! [] " + warning}, s.logger.Warnings())

				// The first poll reads initial_lookback; Stop rewrites the file.
				s.poll(p)
				require.Equal(t, firstRunWindows, windows(s.sim, 0))
				p.Stop()
				data, err := os.ReadFile(stateFile)
				require.NoError(t, err)
				require.Contains(t, string(data), `"version":1`)

				// The next start reads on from the window's end, less the overlap.
				time.Sleep(pollInterval)
				p = s.plugin(func(m *MicrosoftDefender) { m.StateFile = stateFile })
				s.poll(p)
				require.Equal(t, []string{"2020-09-30T14:50:00.0000000Z 2020-09-30T15:01:00.0000000Z"}, windows(s.sim, len(firstRunWindows)))
				p.Stop()
			})
		})
	}
}

func TestMissingStateFileMeansAFirstRun(t *testing.T) {
	bubble(t, func(t *testing.T) {
		stateFile := filepath.Join(t.TempDir(), "defender.state")
		s := newScenario(t, simulator.Config{Seed: 1, Rate: 2, History: 3 * time.Hour})
		p := s.plugin(func(m *MicrosoftDefender) { m.StateFile = stateFile })
		require.Empty(t, s.logger.Warnings())
		s.poll(p)
		require.Equal(t, firstRunWindows, windows(s.sim, 0))
		p.Stop()
	})
}
