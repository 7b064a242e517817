package scenario_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	simulator "github.com/sectelemetry/telegraf-defender/internal/sim"
)

// What a backlog of 20,000 alert versions, spread over the two hours of
// initial_lookback, costs with the default settings and a poll a minute,
// under the service peers assume, each documented uncertainty alone, and
// all at once: the requests and polls it takes to work it off, every
// version once. The plugin's README gives this table. It was a benchmark
// (BenchmarkGraphBacklog, whose figures were counts, not times); on the
// bubble's clock the counts are exact, and a benchmark cannot make a
// bubble (synctest.Test takes a *testing.T).
func TestGraphBacklogCosts(t *testing.T) {
	tests := []struct {
		name            string
		behaviour       simulator.GraphBehaviour
		requests, polls int
	}{
		{"as_peers_assume", simulator.GraphBehaviour{}, 50, 3},
		{"orderby_ignored", simulator.GraphBehaviour{Order: simulator.GraphOrderIgnored}, 57, 4},
		{"orderby_rejected", simulator.GraphBehaviour{Order: simulator.GraphOrderRejected}, 58, 4},
		{"skiptoken", simulator.GraphBehaviour{NextLink: simulator.GraphLinkSkipToken}, 50, 3},
		{"no_next_link", simulator.GraphBehaviour{NextLink: simulator.GraphLinkNone}, 78, 4},
		{"skip_over_500_is_400", simulator.GraphBehaviour{MaxSkip: 500}, 77, 4},
		{"chain_ends_at_6000", simulator.GraphBehaviour{ChainEnd: 6000}, 65, 3},
		{"top_clamped_to_200", simulator.GraphBehaviour{MaxTop: 200}, 130, 4},
		{"no_count", simulator.GraphBehaviour{Count: simulator.GraphCountIgnored}, 78, 4},
		{"harshest", simulator.GraphBehaviour{Order: simulator.GraphOrderRejected, NextLink: simulator.GraphLinkSkipToken,
			Count: simulator.GraphCountRejected, MaxSkip: 500, ChainEnd: 6000, MaxTop: 200}, 224, 8},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			bubble(t, func(t *testing.T) {
				s := newScenario(t, simulator.Config{Graph: tt.behaviour})
				require.NoError(t, s.sim.AddGraph(graphAlertsAt(time.Now().Add(-2*time.Hour), 20000, 2*time.Hour/20000)...))
				p := s.graphPlugin(nil)
				// Until a poll reads its window whole and its position lies
				// within one interval of delay before now.
				for s.polls < 100 {
					s.poll(p)
					time.Sleep(pollInterval)
					if !s.pollBehind[len(s.pollBehind)-1] && !time.Now().Add(-time.Duration(p.Delay)).After(s.position.Add(pollInterval)) {
						break
					}
				}
				require.Len(t, s.emitted, 20000)
				for version, n := range s.emitted {
					require.Equal(t, 1, n, version)
				}
				requests := len(requestsTo(s.sim, graphAlertsPath))
				pages := 20000 / 500
				if tt.behaviour.MaxTop > 0 {
					pages = 20000 / tt.behaviour.MaxTop
				}
				t.Logf("%s: %d requests (%d beyond the %d pages), %d polls", tt.name, requests, requests-pages, pages, s.polls)
				require.Equal(t, tt.requests, requests)
				require.Equal(t, tt.polls, s.polls)
			})
		})
	}
}
