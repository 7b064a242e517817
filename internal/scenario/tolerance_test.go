package scenario_test

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/influxdata/telegraf/config"

	simulator "github.com/sectelemetry/telegraf-defender/internal/sim"
)

// Three hours of detections (two of backlog) of which one in twenty carries a value of the
// wrong type and one in two hundred is larger than max_body_size: every
// other detection arrives once, the poisoned ones without the bad value,
// the giants are skipped with a warning naming their instant, and no poll
// fails.
func TestScenarioPoisonedAndGiantRecords(t *testing.T) {
	bubble(t, func(t *testing.T) {
		s := newScenario(t, simulator.Config{Seed: 5, Rate: 12, History: 2 * time.Hour,
			Faults: simulator.FaultConfig{PoisonRate: 0.05, GiantRate: 0.005, GiantBytes: 300 * 1024}})
		p := s.plugin(func(m *MicrosoftDefender) { m.MaxBodySize = config.Size(256 * 1024) })
		start := firstWindowStart(p)
		var invalid int
		for end := time.Now().Add(time.Hour); time.Now().Before(end); time.Sleep(pollInterval) {
			acc := s.poll(p)
			for _, m := range acc.GetTelegrafMetrics() {
				id, _ := m.GetField("full_id")
				if names, ok := m.GetField("invalid_field_names"); ok && m.Name() == measurementAlert {
					key, poisoned := s.sim.IsPoisoned(id.(string))
					require.True(t, poisoned, "%s", id)
					require.Equal(t, key, names)
					invalid++
				}
			}
		}

		// The giants, and what shares their 100 ns instant, cannot be read.
		giantAt := make(map[string]bool)
		all := s.sim.All()
		for _, d := range all {
			if s.sim.IsGiant(d.FullID) {
				giantAt[d.LastProcessedTimeUtc] = true
			}
		}
		require.NotEmpty(t, giantAt)
		// Polls wait for the rate limit on the scenario's clock: what is read
		// whole ends at the saved position.
		readUpTo := s.position
		require.Greater(t, readUpTo, start.Add(2*time.Hour))
		var missing, duplicated, poisoned []string
		giantsRead := make(map[string]bool)
		for _, d := range all {
			lpt, err := time.Parse(time.RFC3339Nano, d.LastProcessedTimeUtc)
			require.NoError(t, err)
			n := s.emitted[d.FullID]
			if lpt.Before(start) || lpt.After(readUpTo) {
				if _, ok := s.sim.IsPoisoned(d.FullID); ok && n > 0 { // read by a last poll its deadline left partial
					poisoned = append(poisoned, d.FullID)
				}
				continue
			}
			switch {
			case s.sim.IsGiant(d.FullID):
				require.Zero(t, n, "%s is a giant", d.FullID)
				giantsRead[d.LastProcessedTimeUtc] = true
			case giantAt[d.LastProcessedTimeUtc]:
				// Shares the instant of a giant: emitted if an answer held it
				// before the giant, never twice.
				require.LessOrEqual(t, n, 1, d.FullID)
			case n == 0:
				missing = append(missing, d.FullID)
			case n > 1:
				duplicated = append(duplicated, d.FullID)
			}
			if _, ok := s.sim.IsPoisoned(d.FullID); ok && !giantAt[d.LastProcessedTimeUtc] {
				poisoned = append(poisoned, d.FullID)
			}
		}
		require.Empty(t, missing)
		require.Empty(t, duplicated)
		require.NotEmpty(t, poisoned)
		require.Len(t, poisoned, invalid, "every poisoned detection is flagged, once")
		var giantWarnings int
		for _, w := range s.logger.Warnings() {
			if strings.Contains(w, "cannot be read (larger than max_body_size, 262144 bytes, alone or together, or not JSON): they are skipped") {
				giantWarnings++
			}
		}
		require.Equal(t, len(giantsRead), giantWarnings, "each giant's instant is reported once")
	})
}

// A Graph alert larger than max_body_size is no wall: the parts that hold
// it are split down to its 100 ns instant, which is skipped with one
// warning naming it and counted in alerts_skipped; every other version
// arrives once, and no poll fails.
func TestGraphAlertLargerThanTheBodyCapIsSkipped(t *testing.T) {
	bubble(t, func(t *testing.T) {
		s := newScenario(t, simulator.Config{})
		alerts := graphAlertsAt(time.Now().Add(-time.Hour), 300, 10*time.Second)
		giantAt := alerts[150].LastUpdateDateTime
		alerts[150].ID = "giant"
		alerts[150].Title = strings.Repeat("x", 300*1024)
		require.NoError(t, s.sim.AddGraph(alerts...))
		p := s.graphPlugin(func(m *MicrosoftDefender) {
			m.PageSize = 100
			m.MaxBodySize = config.Size(256 * 1024)
			m.MaxRequestsPerMinute = 600
		})
		s.run(p, 5*pollInterval)
		require.Len(t, s.emitted, 299)
		for version, n := range s.emitted {
			require.Equal(t, 1, n, version)
		}
		require.Empty(t, s.errors)
		at, err := time.Parse(time.RFC3339Nano, giantAt)
		require.NoError(t, err)
		require.Contains(t, s.logger.Warnings(), "W! [] The records the Graph API holds at "+at.UTC().Format(time.RFC3339Nano)+
			" cannot be read (larger than max_body_size, 262144 bytes, alone or together, or not JSON): they are skipped; "+
			"raise max_body_size if they are large")
	})
}
