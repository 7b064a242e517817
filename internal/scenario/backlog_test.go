package scenario_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	simulator "github.com/sectelemetry/telegraf-defender/internal/sim"
)

// What a backlog of 20,000 alert versions, spread over the two hours of
// initial_lookback, costs with the default settings and a poll a minute,
// under the service as documented, each way of paging Microsoft does not
// exclude, and all at once: the requests and polls it takes to work it off,
// every version once. The plugin's README gives this table. On the
// bubble's clock the counts are exact.
func TestGraphBacklogCosts(t *testing.T) {
	tests := []struct {
		name            string
		behaviour       simulator.GraphBehaviour
		pageSize        int // 0: the default, 500
		requests, polls int
	}{
		{"documented", simulator.GraphBehaviour{}, 0, 94, 5},
		{"unordered", simulator.GraphBehaviour{Order: simulator.GraphOrderNone}, 0, 93, 5},
		{"skiptoken", simulator.GraphBehaviour{NextLink: simulator.GraphLinkSkipToken}, 0, 94, 5},
		{"no_next_link", simulator.GraphBehaviour{NextLink: simulator.GraphLinkNone}, 0, 94, 5},
		{"skip_over_500_is_400", simulator.GraphBehaviour{MaxSkip: 500}, 0, 94, 5},
		{"chain_ends_at_6000", simulator.GraphBehaviour{ChainEnd: 6000}, 0, 94, 5},
		{"top_clamped_to_200", simulator.GraphBehaviour{MaxTop: 200}, 0, 224, 8},
		{"top_clamped_to_200_page_size_200", simulator.GraphBehaviour{MaxTop: 200}, 200, 221, 8},
		{"count_0", simulator.GraphBehaviour{Count: simulator.GraphCountAlways, CountOffset: -1e9}, 0, 94, 5},
		{"count_inflated", simulator.GraphBehaviour{Count: simulator.GraphCountAlways, CountOffset: 1e9}, 0, 94, 5},
		{"short_pages", simulator.GraphBehaviour{ShortPages: 20}, 0, 112, 5},
		{"trailing_link", simulator.GraphBehaviour{TrailingLink: true}, 0, 175, 7},
		{"harshest", simulator.GraphBehaviour{Order: simulator.GraphOrderNone, NextLink: simulator.GraphLinkSkipToken,
			Count: simulator.GraphCountAlways, CountOffset: 1e9, MaxSkip: 500, ChainEnd: 6000, MaxTop: 200, ShortPages: 20}, 0, 233, 7},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			bubble(t, func(t *testing.T) {
				s := newScenario(t, simulator.Config{Graph: tt.behaviour})
				require.NoError(t, s.sim.AddGraph(graphAlertsAt(time.Now().Add(-2*time.Hour), 20000, 2*time.Hour/20000)...))
				s.pollUntilCaughtUp(s.graphPlugin(func(m *MicrosoftDefender) {
					if tt.pageSize > 0 {
						m.PageSize = tt.pageSize
					}
				}))
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
