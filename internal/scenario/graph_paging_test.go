package scenario_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/influxdata/telegraf/config"
	"github.com/influxdata/telegraf/testutil"

	simulator "github.com/sectelemetry/telegraf-defender/internal/sim"
)

// playGraphScenario runs plugins against a simulated Graph that orders,
// counts and pages as behaviour says: alerts created and updated all the
// while (so that versions move while they are paged), a share of them
// visible only minutes late, a crash (no Stop: the state file holds the
// state before the last poll, which is repeated), a clean restart after an
// outage of seventy minutes (a backlog of thousands of versions in one
// chunk, well past every cap) and polls until the backlog is worked off.
// The crash's repeat of its last poll is taken out of s.emitted. configure,
// when set, changes each plugin before Init.
func playGraphScenario(t *testing.T, behaviour simulator.GraphBehaviour, configure func(*MicrosoftDefender)) (*scenario, *MicrosoftDefender, time.Time) {
	t.Helper()
	s := newScenario(t, simulator.Config{Seed: 17, Rate: 15, MaxLag: 4 * time.Minute, LagFraction: 0.3, Graph: behaviour})
	stateFile := filepath.Join(t.TempDir(), "defender.state")
	plugin := func() *MicrosoftDefender {
		return s.graphPlugin(func(m *MicrosoftDefender) {
			m.PageSize = 100
			m.MaxAlertsPerGather = 400
			m.InitialLookback = config.Duration(time.Minute)
			m.MaxRequestsPerMinute = 600
			m.StateFile = stateFile
			if configure != nil {
				configure(m)
			}
		})
	}
	start := time.Now().Add(-2 * time.Minute)
	p := plugin()
	s.run(p, 10*time.Minute)

	crashed := s.poll(p)
	time.Sleep(pollInterval)
	stateFile = crash(t, p, stateFile) // the crashed process never ran Stop
	p = plugin()
	s.run(p, 10*time.Minute)

	p.Stop()
	time.Sleep(70 * time.Minute)
	p = plugin()
	s.run(p, 25*time.Minute)
	t.Cleanup(p.Stop)

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
	return s, p, start
}

// runGraphBehaviour plays the scenario and checks that every version that
// was readable was emitted once, the crash's repeat aside, and that the
// last polls keep up.
func runGraphBehaviour(t *testing.T, behaviour simulator.GraphBehaviour) *scenario {
	t.Helper()
	s, p, start := playGraphScenario(t, behaviour, nil)
	_, readable := s.requireGraphVersionsOnce(p, start)
	require.Greater(t, readable, 1500, "versions well past every cap")

	// No stall: the last polls read up to now - delay.
	last := pollFields(t, s.poll(p))
	require.Equal(t, false, last["backlog"])
	require.LessOrEqual(t, last["lag_seconds"], (2 * time.Minute).Seconds())
	return s
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
	bubble(t, func(t *testing.T) {
		s := runGraphBehaviour(t, simulator.GraphBehaviour{})
		require.Positive(t, requestsWith(s, "$skip"), "next links are followed")
		require.Empty(t, s.logger.Warnings())
	})
}

// $orderby ignored (newest first), an opaque $skiptoken, 400 past $skip
// 100, $top clamped to 50 (the scenario's page_size is 100).
func TestGraphPagingNewestFirstSkipTokenDepth400Clamped(t *testing.T) {
	bubble(t, func(t *testing.T) {
		s := runGraphBehaviour(t, simulator.GraphBehaviour{
			Order: simulator.GraphOrderIgnored, NextLink: simulator.GraphLinkSkipToken, MaxSkip: 100, MaxTop: 50,
		})
		require.Positive(t, requestsWith(s, "$skiptoken"), "next links are followed as they come")
		require.Zero(t, requestsWith(s, "$skip"), "no $skip is ever made up")
		require.Empty(t, s.logger.Warnings())
		require.Contains(t, infos(s.logger), "I! [] The Graph API refused a next link after 150 alerts (Graph API at 127.0.0.1")
	})
}

// $orderby rejected with 400, no next links at all, $top honoured: the
// count tells that a page was not all.
func TestGraphPagingOrderRejectedNoNextLinks(t *testing.T) {
	bubble(t, func(t *testing.T) {
		s := runGraphBehaviour(t, simulator.GraphBehaviour{Order: simulator.GraphOrderRejected, NextLink: simulator.GraphLinkNone})
		// Once for each of the scenario's three processes.
		require.Equal(t, 3, requestsWith(s, "$orderby"), "dropped after the first refusal")
		warnings := s.logger.Warnings()
		require.Len(t, warnings, 3)
		for _, w := range warnings {
			require.Equal(t, `W! [] The Graph API refused $orderby (Graph API at `+simHost+
				` answered 400 Bad Request (the query was refused: check service_sources and severities): body `+
				`"{\"error\":{\"code\":\"BadRequest\",\"message\":\"Invalid OrderBy clause: OrderBy is not supported on this resource.\"}}"): `+
				`querying without it from now on; the plugin does not depend on the order`, w)
		}
	})
}

// A chain that ends silently after 300 alerts with next links carrying
// $skip, $top clamped, newest first.
func TestGraphPagingChainEndsSilently(t *testing.T) {
	bubble(t, func(t *testing.T) {
		s := runGraphBehaviour(t, simulator.GraphBehaviour{Order: simulator.GraphOrderIgnored, ChainEnd: 300, MaxTop: 50})
		require.Empty(t, s.logger.Warnings())
		require.Contains(t, infos(s.logger), "I! [] A chain of Graph pages ended after 300 alerts although @odata.count said")
	})
}

// Without @odata.count no chain of pages is trusted: next links are never
// followed, every part fits one page.
func TestGraphPagingWithoutCount(t *testing.T) {
	bubble(t, func(t *testing.T) {
		s := runGraphBehaviour(t, simulator.GraphBehaviour{Count: simulator.GraphCountIgnored, ChainEnd: 300})
		require.Zero(t, requestsWith(s, "$skip"))
		require.Contains(t, infos(s.logger), "I! [] The Graph API sends no @odata.count: windows are read in parts that fit one page")
	})
}

// The harshest service: $orderby and $count rejected, opaque tokens that
// answer 400 past 100, a chain that also ends silently, $top clamped.
func TestGraphPagingHarshest(t *testing.T) {
	bubble(t, func(t *testing.T) {
		s := runGraphBehaviour(t, simulator.GraphBehaviour{
			Order: simulator.GraphOrderRejected, NextLink: simulator.GraphLinkSkipToken, Count: simulator.GraphCountRejected,
			MaxSkip: 100, ChainEnd: 200, MaxTop: 50,
		})
		// Each of the scenario's three processes learns it anew.
		warnings := s.logger.Warnings()
		require.Len(t, warnings, 6, "one for $orderby, one for $count")
		for i := 0; i < 6; i += 2 {
			require.Contains(t, warnings[i], "The Graph API refused $orderby")
			require.Contains(t, warnings[i+1], "The Graph API refused $count")
		}
		require.Equal(t, 3, requestsWith(s, "$orderby"))
		require.Equal(t, 6, requestsWith(s, "$count"))
	})
}

// The harshest service that still counts: newest first, no next links,
// $top clamped.
func TestGraphPagingHarshestWithCount(t *testing.T) {
	bubble(t, func(t *testing.T) {
		s := runGraphBehaviour(t, simulator.GraphBehaviour{
			Order: simulator.GraphOrderIgnored, NextLink: simulator.GraphLinkNone, MaxTop: 50,
		})
		require.Empty(t, s.logger.Warnings())
	})
}

// graphAlertsAt returns n alert versions, one every step from from.
func graphAlertsAt(from time.Time, n int, step time.Duration) []simulator.GraphAlert {
	alerts := make([]simulator.GraphAlert, 0, n)
	for i := range n {
		at := from.Add(time.Duration(i) * step).Format(time.RFC3339Nano)
		alerts = append(alerts, simulator.GraphAlert{
			ID: fmt.Sprintf("da%05d", i), Status: "new", Severity: "high", Category: "Malware",
			ServiceSource: "microsoftDefenderForEndpoint", CreatedDateTime: at, LastUpdateDateTime: at,
		})
	}
	return alerts
}

// Alerts last updated in 2999 and in 2001 on every page, which the filter
// did not ask for, are left out and counted: no bound of any later query
// moves because of them, and the window is read to its end.
func TestGraphTimesOutsideTheWindowMoveNothing(t *testing.T) {
	bubble(t, func(t *testing.T) {
		s := &scenario{emitted: make(map[string]int), logger: &testutil.CaptureLogger{}}
		s.wrap = func(sim http.Handler) http.Handler {
			return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if !strings.HasSuffix(r.URL.Path, graphAlertsPath) {
					sim.ServeHTTP(w, r)
					return
				}
				rec := httptest.NewRecorder()
				sim.ServeHTTP(rec, r)
				body := strings.Replace(rec.Body.String(), `"value":[`, `"value":[{"id":"future","lastUpdateDateTime":"2999-01-01T00:00:00Z"},`+
					`{"id":"past","lastUpdateDateTime":"2001-01-01T00:00:00Z"},`, 1)
				w.WriteHeader(rec.Code)
				if _, err := w.Write([]byte(body)); err != nil {
					t.Errorf("writing the response: %v", err)
				}
			})
		}
		s.serve(t, simulator.Config{})
		require.NoError(t, s.sim.AddGraph(graphAlertsAt(time.Now().Add(-time.Hour), 300, 10*time.Second)...))
		p := s.graphPlugin(func(m *MicrosoftDefender) {
			m.PageSize = 100
			m.InitialLookback = config.Duration(2 * time.Hour)
			m.MaxWindow = config.Duration(3 * time.Hour)
		})

		acc := s.poll(p)
		// 2001 parses and lies outside: left out, for the window that covers
		// it. 2999 is no time a metric can hold: emitted once without it.
		require.Len(t, s.emitted, 301)
		for version, n := range s.emitted {
			require.Equal(t, 1, n, version)
			require.True(t, strings.HasPrefix(version, "da") || version == "future@", version)
		}
		pages := requestsTo(s.sim, graphAlertsPath)
		require.Len(t, pages, 3, "300 alerts, 100 a page, one chain")
		for _, r := range pages {
			require.Equal(t, "lastUpdateDateTime ge 2020-09-30T13:00:00.0000000Z and lastUpdateDateTime lt 2020-09-30T15:00:00.0000000Z",
				r.URL.Query().Get("$filter"))
		}
		poll := pollFields(t, acc)
		require.Equal(t, int64(4), poll["out_of_window"], "three times 2001, once 2999")
		require.Equal(t, int64(1), poll["invalid_fields"])
		require.Equal(t, false, poll["backlog"])
		outside := "W! [] The Graph API sent 1 alert last updated outside the window asked for, " +
			"[2020-09-30T13:00:00Z, 2020-09-30T15:00:00Z) (the first: past@2001-01-01T00:00:00Z): left out"
		require.Equal(t, []string{
			`W! [] Alert 0 at byte 391 ("future@0001-01-01T00:00:00Z") emitted without the values that do not fit: ` +
				`lastUpdateDateTime: "2999-01-01T00:00:00Z" lies outside the years 1678 to 2262 that a metric's time can hold`,
			`W! [] Alert 0 at byte 391 ("future@0001-01-01T00:00:00Z"): its time is outside the window asked for, or unknown; ` +
				`it is emitted, and the cursor does not use its time`,
			outside, outside, outside,
		}, s.logger.Warnings())

		// The window was read to its end: the next poll reads on from there,
		// less the overlap.
		time.Sleep(pollInterval)
		s.poll(p)
		require.Equal(t, "lastUpdateDateTime ge 2020-09-30T14:50:00.0000000Z and lastUpdateDateTime lt 2020-09-30T15:01:00.0000000Z",
			requestsTo(s.sim, graphAlertsPath)[3].URL.Query().Get("$filter"))
	})
}
