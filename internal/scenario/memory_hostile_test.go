package scenario_test

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/influxdata/telegraf/config"
	"github.com/influxdata/telegraf/testutil"

	simulator "github.com/sectelemetry/telegraf-defender/internal/sim"
)

// Services that answer with values of sizes Microsoft does not exclude
// (issue 23, item 11), played by the simulator.

// gatherAll polls n times, one interval apart, and returns what each poll
// emitted; no poll may fail.
func gatherAll(t *testing.T, p *MicrosoftDefender, n int) []*testutil.Accumulator {
	t.Helper()
	out := make([]*testutil.Accumulator, 0, n)
	for range n {
		var acc testutil.Accumulator
		require.NoError(t, p.Gather(&acc))
		require.Empty(t, acc.Errors)
		out = append(out, &acc)
		time.Sleep(pollInterval)
	}
	return out
}

// Alert ids of 60,000 bytes: every detection is emitted once, over polls
// whose overlap reads them again; each poll that meets them counts them
// in long_ids and warns once; the state holds each as a hash of 71 bytes.
// An older plugin held them whole, gigabytes in memory and in the state.
func TestSIEMAlertIDsOf60000Bytes(t *testing.T) {
	bubble(t, func(t *testing.T) {
		s := newScenario(t, simulator.Config{Seed: 9, Rate: 0.5, History: 30 * time.Minute, IDBytes: 60000})
		stateFile := filepath.Join(t.TempDir(), "state.json")
		p := s.plugin(func(m *MicrosoftDefender) {
			m.InitialLookback = config.Duration(30 * time.Minute)
			m.StateFile = stateFile
		})
		start := firstWindowStart(p)
		emitted := make(map[int64]int)
		var longIDs int64
		polls := gatherAll(t, p, 5)
		for _, acc := range polls {
			for _, m := range acc.GetTelegrafMetrics() {
				switch m.Name() {
				case measurementAlert:
					id, _ := m.GetField("report_id")
					emitted[id.(int64)]++
				case measurementPoll:
					n, ok := m.GetField("long_ids")
					require.True(t, ok, "defender_poll counts long_ids")
					longIDs += n.(int64)
				}
			}
		}
		p.Stop()
		want := make(map[int64]int)
		for _, d := range s.sim.All() {
			lpt, err := time.Parse(time.RFC3339Nano, d.LastProcessedTimeUtc)
			require.NoError(t, err)
			if !lpt.Before(start) && !lpt.After(time.Now().Add(-pollInterval)) {
				require.Greater(t, len(d.FullID), 60000)
				want[d.ReportID] = 1
			}
		}
		require.Equal(t, want, emitted)
		require.Len(t, want, 34)
		require.Equal(t, int64(74), longIDs, "each is counted each time it is read")
		var warned int
		for _, w := range s.logger.Warnings() {
			if strings.Contains(w, "has an identity longer than 512 bytes") {
				warned++
			}
		}
		require.Equal(t, len(polls), warned, "one warning a poll")
		st := readStateFile(t, stateFile)
		require.NotEmpty(t, st.Seen)
		for id := range st.Seen {
			require.Len(t, id, len("sha256:")+64)
		}
	})
}

// Graph alert ids of 60,000 bytes: every version is emitted once, each poll
// that meets them warns once.
func TestGraphAlertIDsOf60000Bytes(t *testing.T) {
	bubble(t, func(t *testing.T) {
		s := newScenario(t, simulator.Config{Seed: 9, Rate: 0.3, History: 3 * time.Hour, IDBytes: 60000})
		p := s.graphPlugin(func(m *MicrosoftDefender) { m.InitialLookback = config.Duration(3 * time.Hour) })
		start := firstWindowStart(p)
		s.run(p, 5*time.Minute)
		// alert_id is cut to 32,766 bytes, the ids' first bytes tell them apart.
		full := make(map[string]string)
		for _, a := range s.sim.AllGraph() {
			require.Greater(t, len(a.ID), 60000)
			full[a.ID[:32766]] = a.ID
		}
		emitted := make(map[string]int, len(s.emitted))
		for key, n := range s.emitted {
			id, at, _ := strings.Cut(key, "@")
			require.Contains(t, full, id)
			emitted[full[id]+"@"+at] += n
		}
		s.emitted = emitted
		s.requireGraphVersionsOnce(p, start)
		var warned int
		for _, w := range s.logger.Warnings() {
			if strings.Contains(w, "has an identity longer than 512 bytes") {
				warned++
			}
		}
		require.Equal(t, s.polls, warned, "one warning a poll")
	})
}

// Detections whose Description is 100 KiB, one in five: each is emitted
// once with its Description cut to 32,766 bytes, and the warnings about
// cut fields are at most ten a poll.
func TestSIEMGiantDescriptions(t *testing.T) {
	bubble(t, func(t *testing.T) {
		s := newScenario(t, simulator.Config{Seed: 9, Rate: 2, History: 30 * time.Minute,
			Faults: simulator.FaultConfig{GiantDescriptionRate: 0.2, GiantBytes: 100 << 10}})
		p := s.plugin(func(m *MicrosoftDefender) { m.InitialLookback = config.Duration(30 * time.Minute) })
		start := firstWindowStart(p)
		var giants int
		warnings := make([]int, 0, 3) // after each poll
		for range 3 {
			acc := s.poll(p)
			warnings = append(warnings, len(s.logger.Warnings()))
			for _, m := range acc.GetTelegrafMetrics() {
				if d, ok := m.GetField("description"); ok {
					id, _ := m.GetField("full_id")
					if s.sim.HasGiantDescription(id.(string)) {
						require.Len(t, d, 32766)
						giants++
					} else {
						require.Less(t, len(d.(string)), 200)
					}
				}
			}
			time.Sleep(pollInterval)
		}
		s.settled(p, start, 0)
		require.Greater(t, giants, 10)
		var cut, more int
		for _, w := range s.logger.Warnings() {
			switch {
			case strings.HasSuffix(w, "fields description longer than 32766 bytes were cut to that length"):
				cut++
			case strings.HasPrefix(w, "W! [] More records with problems in this poll are only counted"):
				more++
			default:
				t.Errorf("unexpected warning %q", w)
			}
		}
		require.Equal(t, 11, warnings[0], "ten and the note that more are only counted")
		require.Equal(t, 12, cut, "ten in the first poll, then the new ones")
		require.Equal(t, 1, more)
	})
}

// A Description of 300 KiB, above max_body_size: the instants that hold
// one are skipped, each with one warning naming it; every other detection
// is emitted once.
func TestSIEMDescriptionLargerThanTheBodyCap(t *testing.T) {
	bubble(t, func(t *testing.T) {
		s := newScenario(t, simulator.Config{Seed: 9, Rate: 1, History: 30 * time.Minute,
			Faults: simulator.FaultConfig{GiantDescriptionRate: 0.1, GiantBytes: 300 << 10}})
		p := s.plugin(func(m *MicrosoftDefender) {
			m.InitialLookback = config.Duration(30 * time.Minute)
			m.MaxBodySize = 256 << 10
		})
		start := firstWindowStart(p)
		s.run(p, 5*time.Minute)
		readUpTo := s.position // what was read whole
		giantAt := make(map[string]bool)
		all := s.sim.All()
		for _, d := range all {
			if s.sim.HasGiantDescription(d.FullID) {
				giantAt[d.LastProcessedTimeUtc] = true
			}
		}
		skipped := make(map[string]bool)
		for _, d := range all {
			lpt, err := time.Parse(time.RFC3339Nano, d.LastProcessedTimeUtc)
			require.NoError(t, err)
			if lpt.Before(start) || lpt.After(readUpTo) {
				continue
			}
			if giantAt[d.LastProcessedTimeUtc] {
				require.LessOrEqual(t, s.emitted[d.FullID], 1, d.FullID)
				require.False(t, s.sim.HasGiantDescription(d.FullID) && s.emitted[d.FullID] > 0)
				skipped[lpt.UTC().Format(time.RFC3339)] = true
				continue
			}
			require.Equal(t, 1, s.emitted[d.FullID], d.FullID)
		}
		require.NotEmpty(t, skipped)
		reported := make(map[string]int)
		for _, w := range s.logger.Warnings() {
			if at, ok := strings.CutPrefix(w, "W! [] The records the SIEM API holds at "); ok {
				at, _, _ = strings.Cut(at, " ")
				reported[at]++
			}
		}
		for at := range skipped {
			require.Equal(t, 1, reported[at], "the instant %s is reported once", at)
		}
	})
}
