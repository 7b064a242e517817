package microsoft_defender

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/influxdata/telegraf/config"
	"github.com/influxdata/telegraf/testutil"

	"github.com/sectelemetry/telegraf-defender/internal/defendersim"
)

// graphRun is what one Graph scenario needed.
type graphRun struct {
	requests, polls int
	inWindow        int // versions the scenario's window held
	readable        int // versions a poll could have read
}

// runGraphBehaviour runs the plugin against a simulated Graph that orders,
// counts and pages as behaviour says: alerts created and updated all the
// while (so that versions move while they are paged), a share of them
// visible only minutes late, a crash (no Stop: the state file holds the
// state before the last poll, which is repeated), a clean restart after an
// outage of seventy minutes (a backlog of thousands of versions in one
// chunk, well past every cap) and polls until the backlog is worked off.
// Every version that was readable is emitted once, the crash's repeat
// aside, and the last polls keep up.
func runGraphBehaviour(t *testing.T, behaviour defendersim.GraphBehaviour, configure func(*MicrosoftDefender)) (*scenario, graphRun) {
	t.Helper()
	s := newScenario(t, defendersim.Config{Seed: 17, Rate: 30, MaxLag: 4 * time.Minute, LagFraction: 0.3, Graph: behaviour})
	stateFile := filepath.Join(t.TempDir(), "defender.state")
	setup := func(m *MicrosoftDefender) {
		m.PageSize = 500
		m.MaxAlertsPerGather = 1000
		m.InitialLookback = config.Duration(time.Minute)
		m.MaxRequestsPerMinute = 600
		m.StateFile = stateFile
		if configure != nil {
			configure(m)
		}
	}
	start := s.clock.Add(-2 * time.Minute)
	p := s.graphPlugin(setup)
	s.run(p, 10*time.Minute)

	crashed := s.poll(p)
	s.clock = s.clock.Add(pollInterval)
	p = s.graphPlugin(setup) // the crashed process never ran Stop
	s.run(p, 10*time.Minute)

	p.Stop()
	s.clock = s.clock.Add(70 * time.Minute)
	p = s.graphPlugin(setup)
	s.run(p, 40*time.Minute)

	// The crash repeats at most its last poll.
	for _, m := range crashed.GetTelegrafMetrics() {
		if m.Name() != measurementAlert {
			continue
		}
		id, _ := m.GetField("alert_id")
		updated, _ := m.GetField("last_update_date_time")
		if version := id.(string) + "@" + updated.(string); s.emitted[version] == 2 {
			s.emitted[version]--
		}
	}
	var run graphRun
	run.inWindow, run.readable = s.requireGraphVersionsOnce(p, start)
	require.Greater(t, run.readable, 4000, "versions well past every cap")
	run.requests = len(requestsTo(s.sim, graphAlertsPath))
	run.polls = s.polls

	// No stall: the last polls read up to now - delay.
	last := pollFields(t, s.poll(p))
	require.Equal(t, false, last["backlog"])
	require.LessOrEqual(t, last["lag_seconds"], (2 * time.Minute).Seconds())
	return s, run
}

// requestsWith counts the alerts_v2 requests whose query holds the key.
func requestsWith(s *scenario, key string) int {
	n := 0
	for _, r := range requestsTo(s.sim, graphAlertsPath) {
		if r.URL.Query().Has(key) {
			n++
		}
	}
	return n
}

// Honoured ascending order, next links with $skip, no depth limit, $top
// honoured, @odata.count: the service as a peer integration assumes it.
func TestGraphPagingAsDocumentedByPeers(t *testing.T) {
	s, _ := runGraphBehaviour(t, defendersim.GraphBehaviour{}, nil)
	require.Positive(t, requestsWith(s, "$skip"), "next links are followed")
	require.Empty(t, s.logger.Warnings())
}

// $orderby ignored (newest first), an opaque $skiptoken, 400 past $skip
// 500, $top clamped to 200.
func TestGraphPagingNewestFirstSkipTokenDepth400Clamped(t *testing.T) {
	s, _ := runGraphBehaviour(t, defendersim.GraphBehaviour{
		Order: defendersim.GraphOrderIgnored, NextLink: defendersim.GraphLinkSkipToken, MaxSkip: 500, MaxTop: 200,
	}, nil)
	require.Positive(t, requestsWith(s, "$skiptoken"), "next links are followed as they come")
	require.Zero(t, requestsWith(s, "$skip"), "no $skip is ever made up")
	require.Empty(t, s.logger.Warnings())
	require.Contains(t, infos(s.logger), "I! [] The Graph API refused a next link after 600 alerts (Graph API at 127.0.0.1")
}

// $orderby rejected with 400, no next links at all, $top honoured: the
// count tells that a page was not all.
func TestGraphPagingOrderRejectedNoNextLinks(t *testing.T) {
	s, _ := runGraphBehaviour(t, defendersim.GraphBehaviour{Order: defendersim.GraphOrderRejected, NextLink: defendersim.GraphLinkNone}, nil)
	// Once for each of the scenario's three processes.
	require.Equal(t, 3, requestsWith(s, "$orderby"), "dropped after the first refusal")
	warnings := s.logger.Warnings()
	require.Len(t, warnings, 3)
	for _, w := range warnings {
		require.Equal(t, `W! [] The Graph API refused $orderby (Graph API at `+strings.TrimPrefix(s.server.URL, "http://")+
			` answered 400 Bad Request (the query was refused: check service_sources and severities): body `+
			`"{\"error\":{\"code\":\"BadRequest\",\"message\":\"Invalid OrderBy clause: OrderBy is not supported on this resource.\"}}"): `+
			`querying without it from now on; the plugin does not depend on the order`, w)
	}
}

// A chain that ends silently after 1,500 alerts with next links carrying
// $skip, $top clamped, newest first.
func TestGraphPagingChainEndsSilently(t *testing.T) {
	s, _ := runGraphBehaviour(t, defendersim.GraphBehaviour{Order: defendersim.GraphOrderIgnored, ChainEnd: 1500, MaxTop: 200}, nil)
	require.Empty(t, s.logger.Warnings())
	require.Contains(t, infos(s.logger), "I! [] A chain of Graph pages ended after 1600 alerts although @odata.count said")
}

// Without @odata.count no chain of pages is trusted: next links are never
// followed, every part fits one page.
func TestGraphPagingWithoutCount(t *testing.T) {
	s, _ := runGraphBehaviour(t, defendersim.GraphBehaviour{Count: defendersim.GraphCountIgnored, ChainEnd: 1000}, nil)
	require.Zero(t, requestsWith(s, "$skip"))
	require.Contains(t, infos(s.logger), "I! [] The Graph API sends no @odata.count: windows are read in parts that fit one page")
}

// The harshest service: $orderby and $count rejected, opaque tokens that
// answer 400 past 500, a chain that also ends silently, $top clamped.
func TestGraphPagingHarshest(t *testing.T) {
	s, _ := runGraphBehaviour(t, defendersim.GraphBehaviour{
		Order: defendersim.GraphOrderRejected, NextLink: defendersim.GraphLinkSkipToken, Count: defendersim.GraphCountRejected,
		MaxSkip: 500, ChainEnd: 600, MaxTop: 200,
	}, nil)
	// Each of the scenario's three processes learns it anew.
	warnings := s.logger.Warnings()
	require.Len(t, warnings, 6, "one for $orderby, one for $count")
	for i := 0; i < 6; i += 2 {
		require.Contains(t, warnings[i], "The Graph API refused $orderby")
		require.Contains(t, warnings[i+1], "The Graph API refused $count")
	}
	require.Equal(t, 3, requestsWith(s, "$orderby"))
	require.Equal(t, 6, requestsWith(s, "$count"))
}

// The harshest service that still counts: newest first, no next links,
// $top clamped.
func TestGraphPagingHarshestWithCount(t *testing.T) {
	s, _ := runGraphBehaviour(t, defendersim.GraphBehaviour{
		Order: defendersim.GraphOrderIgnored, NextLink: defendersim.GraphLinkNone, MaxTop: 200,
	}, nil)
	require.Empty(t, s.logger.Warnings())
}

func infos(logger *testutil.CaptureLogger) string {
	var lines []string
	for _, e := range logger.Messages() {
		if e.Level == testutil.LevelInfo {
			lines = append(lines, e.String())
		}
	}
	return strings.Join(lines, "\n")
}
