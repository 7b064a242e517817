package scenario_test

import (
	"cmp"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	simulator "github.com/sectelemetry/telegraf-defender/internal/sim"
)

// Services that page in ways Microsoft does not exclude, each of which made
// an earlier reader, one that trusted @odata.count and chains of next
// links, lose versions, crawl or stall: read with the plugin's defaults,
// every version is emitted once, in at most four times the pages a reader
// that knew the service would need.

// pollUntilCaughtUp polls every interval until a poll reads its window
// whole and its position lies within one interval of delay before now,
// for at most 100 polls.
func (s *scenario) pollUntilCaughtUp(p *MicrosoftDefender) {
	for s.polls < 100 {
		s.poll(p)
		time.Sleep(pollInterval)
		if !s.pollBehind[len(s.pollBehind)-1] && !time.Now().Add(-time.Duration(p.Delay)).After(s.position.Add(pollInterval)) {
			return
		}
	}
}

// requireEachOnce checks that exactly the versions of alerts were emitted,
// each once.
func (s *scenario) requireEachOnce(alerts []simulator.GraphAlert) {
	s.t.Helper()
	want := make(map[string]int, len(alerts))
	for _, a := range alerts {
		at, err := time.Parse(time.RFC3339Nano, a.LastUpdateDateTime)
		require.NoError(s.t, err)
		want[a.ID+"@"+at.UTC().Format(time.RFC3339Nano)] = 1
	}
	require.Equal(s.t, want, s.emitted)
}

// alertsBefore is n versions one every step up to ten minutes before now.
func alertsBefore(n int, step time.Duration) []simulator.GraphAlert {
	return graphAlertsAt(time.Now().Add(-10*time.Minute-time.Duration(n)*step), n, step)
}

// backlogOf is n versions spread over the two hours of initial_lookback.
func backlogOf(n int) []simulator.GraphAlert {
	return graphAlertsAt(time.Now().Add(-2*time.Hour), n, 2*time.Hour/time.Duration(n))
}

func TestGraphServicesThatCannotBeTrusted(t *testing.T) {
	for _, tt := range []struct {
		name      string
		behaviour simulator.GraphBehaviour
		alerts    func() []simulator.GraphAlert // made in the bubble, on its clock
		pageSize  int                           // 0: the default, 500
		page      int                           // alerts a page holds
		perPage   int                           // requests a page may cost; 0: 4
	}{
		// Newest first, $skip links, the count computed per request.
		{"count 0 on every page", simulator.GraphBehaviour{
			Order: simulator.GraphOrderIgnored, Count: simulator.GraphCountAlways, CountOffset: -1e9,
		}, func() []simulator.GraphAlert { return alertsBefore(1000, 3*time.Second) }, 100, 100, 0},
		{"count 150 low", simulator.GraphBehaviour{
			Order: simulator.GraphOrderIgnored, Count: simulator.GraphCountAlways, CountOffset: -150,
		}, func() []simulator.GraphAlert { return alertsBefore(1000, 3*time.Second) }, 100, 100, 0},
		{"count 10^9 on a full page", simulator.GraphBehaviour{
			Order: simulator.GraphOrderIgnored, Count: simulator.GraphCountAlways, CountOffset: 1e9,
		}, func() []simulator.GraphAlert { return alertsBefore(1000, 3*time.Second) }, 100, 100, 0},
		{"one short page with a next link, no count", simulator.GraphBehaviour{
			Order: simulator.GraphOrderIgnored, Count: simulator.GraphCountIgnored, ShortPages: 1,
		}, func() []simulator.GraphAlert { return alertsBefore(400, 9*time.Second) }, 100, 100, 0},
		// Each part costs its page and the empty one behind it.
		{"a next link on every page, the last one's to an empty page", simulator.GraphBehaviour{
			Order: simulator.GraphOrderIgnored, TrailingLink: true,
		}, func() []simulator.GraphAlert { return alertsBefore(1000, 3*time.Second) }, 100, 100, 5},
		// A backlog over the two hours of initial_lookback.
		{"$top above 200 served as 200, next links, count", simulator.GraphBehaviour{
			MaxTop: 200, Count: simulator.GraphCountAlways,
		}, func() []simulator.GraphAlert { return backlogOf(8355) }, 0, 200, 0},
		{"$skiptoken chains ending after 6,000 alerts", simulator.GraphBehaviour{
			NextLink: simulator.GraphLinkSkipToken, ChainEnd: 6000, Count: simulator.GraphCountAlways,
		}, func() []simulator.GraphAlert { return backlogOf(20000) }, 0, 500, 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			bubble(t, func(t *testing.T) {
				s := newScenario(t, simulator.Config{Graph: tt.behaviour})
				alerts := tt.alerts()
				require.NoError(t, s.sim.AddGraph(alerts...))
				p := s.graphPlugin(func(m *MicrosoftDefender) {
					if tt.pageSize > 0 {
						m.PageSize = tt.pageSize
					}
				})
				s.pollUntilCaughtUp(p)
				s.requireEachOnce(alerts)
				requests := len(requestsTo(s.sim, graphAlertsPath))
				pages := (len(alerts) + tt.page - 1) / tt.page
				t.Logf("%d requests for %d pages, %d polls", requests, pages, s.polls)
				require.LessOrEqual(t, requests, cmp.Or(tt.perPage, 4)*pages)
				require.Empty(t, s.logger.Warnings())
			})
		})
	}
}

// Five versions last updated before the 400 of a part become visible after
// its first page (newest first, $skip links, the count computed per
// request; the simulator's LateInChain): a chain of 100 a page reaches the
// count of its first page, 400, one page short of them, and no later window
// reaches back to them. They are read with the rest.
func TestGraphVersionsVisibleLateDuringAChain(t *testing.T) {
	bubble(t, func(t *testing.T) {
		// The second chunk, [13:49, 14:49), holds 400 versions from 13:55 on.
		alerts := graphAlertsAt(time.Now().Add(-65*time.Minute), 400, 8*time.Second)
		s := newScenario(t, simulator.Config{Graph: simulator.GraphBehaviour{
			Order: simulator.GraphOrderIgnored, Count: simulator.GraphCountAlways, LateInChain: 5,
		}})
		require.NoError(t, s.sim.AddGraph(alerts...))
		p := s.graphPlugin(func(m *MicrosoftDefender) { m.PageSize = 100 })
		s.pollUntilCaughtUp(p)
		all := s.sim.AllGraph()
		require.Len(t, all, 405)
		s.requireEachOnce(all)
		requests := len(requestsTo(s.sim, graphAlertsPath))
		t.Logf("%d requests for 5 pages, %d polls", requests, s.polls)
		require.LessOrEqual(t, requests, 4*5)
		require.Empty(t, s.logger.Warnings())
	})
}
