package scenario_test

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	simulator "github.com/sectelemetry/telegraf-defender/internal/sim"
)

// At the default settings a version is emitted by the first poll after it
// becomes visible: with Telegraf's ticks every 10 s, two alerts a second
// and one in five visible up to a minute late, every version is emitted,
// by the end of its poll, within 10 s and that poll's time of becoming
// visible, the late ones too, and each once.
func TestDefaultsEmitWithinOneInterval(t *testing.T) {
	bubble(t, func(t *testing.T) {
		const interval = 10 * time.Second
		s := newScenario(t, simulator.Config{Seed: 25, Rate: 120, MaxLag: time.Minute, LagFraction: 0.2})
		p := s.graphPlugin(nil)
		start := time.Now()
		emittedAt := make(map[string]time.Time)
		var longestPoll time.Duration
		for tick := start; tick.Before(start.Add(20 * time.Minute)); tick = tick.Add(interval) {
			if time.Now().After(tick) {
				continue // Telegraf skips a tick while the poll before runs
			}
			time.Sleep(time.Until(tick))
			acc := s.poll(p)
			polled := time.Now()
			longestPoll = max(longestPoll, polled.Sub(tick))
			for _, key := range emittedKeys(acc) {
				id, updated, _ := strings.Cut(key, "@")
				at, err := time.Parse(time.RFC3339Nano, updated)
				require.NoError(t, err)
				emittedAt[id+"@"+at.UTC().Format(time.RFC3339Nano)] = polled
			}
		}
		lastPoll := s.pollTimes[len(s.pollTimes)-1]
		var late, versions int
		var longest time.Duration
		for _, a := range s.sim.AllGraph() {
			updated, err := time.Parse(time.RFC3339Nano, a.LastUpdateDateTime)
			require.NoError(t, err)
			visible := updated
			if a.VisibleAt.After(updated) {
				visible = a.VisibleAt
			}
			if visible.Before(start) || !visible.Before(lastPoll) {
				continue
			}
			key := a.ID + "@" + updated.UTC().Format(time.RFC3339Nano)
			at, ok := emittedAt[key]
			require.True(t, ok, "%s, visible at %s, never emitted", key, visible)
			require.LessOrEqual(t, at.Sub(visible), interval+longestPoll, key)
			longest = max(longest, at.Sub(visible))
			versions++
			if visible.After(updated) {
				late++
			}
		}
		require.Greater(t, late, 200, "versions visible late")
		require.Len(t, emittedAt, versions, "no version that was not visible")
		for key, n := range s.emitted {
			require.Equal(t, 1, n, key)
		}
		t.Logf("%d versions (%d late), the longest from visible to emitted %s, the longest poll %s; %d requests in %d polls",
			versions, late, longest, longestPoll, len(requestsTo(s.sim, graphAlertsPath)), s.polls)
		require.LessOrEqual(t, longestPoll, 2*time.Second, "a poll reads the overlap in a few requests")
	})
}
