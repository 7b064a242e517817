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
		if m.Name() != measurementAlert && m.Name() != measurementIncident {
			continue
		}
		if version := versionKey(m); s.emitted[version] == 2 {
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
	readable := s.requireGraphVersionsOnce(p, start)
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

// requireOnePagePerPart checks that no request asked for an order or a
// count, and that next links were followed only once behind a first page
// (the look behind a short page): no instant held more than a page, so no
// chain was followed.
func requireOnePagePerPart(t *testing.T, s *scenario) {
	t.Helper()
	for _, key := range []string{"$orderby", "$count"} {
		require.Zero(t, requestsWith(s, key), key)
	}
	follows := 0
	for _, r := range requestsTo(s.sim, graphAlertsPath) {
		if q := r.URL.Query(); q.Has("$skip") || q.Has("$skiptoken") {
			follows++
			require.LessOrEqual(t, follows, 1, "a chain of next links: %s", r.URL)
		} else {
			follows = 0
		}
	}
}

// Newest first, next links with $skip, no count: the service as Microsoft
// documents it.
func TestGraphPagingAsDocumented(t *testing.T) {
	bubble(t, func(t *testing.T) {
		s := runGraphBehaviour(t, simulator.GraphBehaviour{})
		requireOnePagePerPart(t, s)
		require.Empty(t, s.logger.Warnings())
	})
}

// No order of time, an opaque $skiptoken, 400 past $skip 100, $top clamped
// to 50 (the scenario's page_size is 100).
func TestGraphPagingUnorderedSkipTokenDepth100Clamped(t *testing.T) {
	bubble(t, func(t *testing.T) {
		s := runGraphBehaviour(t, simulator.GraphBehaviour{
			Order: simulator.GraphOrderNone, NextLink: simulator.GraphLinkSkipToken, MaxSkip: 100, MaxTop: 50,
		})
		requireOnePagePerPart(t, s)
		require.Empty(t, s.logger.Warnings())
	})
}

// No next links at all although more alerts match: a full page is split
// as one with a next link.
func TestGraphPagingNoNextLinks(t *testing.T) {
	bubble(t, func(t *testing.T) {
		s := runGraphBehaviour(t, simulator.GraphBehaviour{NextLink: simulator.GraphLinkNone})
		requireOnePagePerPart(t, s)
		require.Empty(t, s.logger.Warnings())
	})
}

// Everything at once: no order, opaque tokens that answer 400 past 100, a
// chain that also ends silently after 200, $top clamped to 50, an
// @odata.count of a billion too many on every page, and short pages with a
// next link.
func TestGraphPagingHarshest(t *testing.T) {
	bubble(t, func(t *testing.T) {
		s := runGraphBehaviour(t, simulator.GraphBehaviour{
			Order: simulator.GraphOrderNone, NextLink: simulator.GraphLinkSkipToken, Count: simulator.GraphCountAlways,
			CountOffset: 1e9, MaxSkip: 100, ChainEnd: 200, MaxTop: 50, ShortPages: 20,
		})
		requireOnePagePerPart(t, s)
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
				junk := `{"id":"future","lastUpdateDateTime":"2999-01-01T00:00:00Z"},{"id":"past","lastUpdateDateTime":"2001-01-01T00:00:00Z"}`
				body := strings.Replace(rec.Body.String(), `"value":[]`, `"value":[`+junk+`]`, 1)
				body = strings.Replace(body, `"value":[{"id":"da`, `"value":[`+junk+`,{"id":"da`, 1)
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
			m.Delay = config.Duration(time.Minute) // the bounds below, off the alerts' hour
		})

		acc := s.poll(p)
		// 2001 parses and lies outside: left out, for the window that covers
		// it. 2999 is no time a metric can hold: emitted once without it.
		require.Len(t, s.emitted, 301)
		for version, n := range s.emitted {
			require.Equal(t, 1, n, version)
			require.True(t, strings.HasPrefix(version, "da") || version == "future@", version)
		}
		// Bounds from the alerts inside the parts alone: halves while the
		// page is full, then parts sized from what the last one held.
		bounds := [][2]string{
			{"12:59:00", "14:59:00"}, {"12:59:00", "13:59:00"}, {"13:59:00", "14:59:00"}, {"13:59:00", "14:29:00"},
			{"13:59:00", "14:14:00"}, {"14:14:00", "14:28:17.1428571"}, {"14:28:17.1428571", "14:41:34.4850497"},
			{"14:41:34.4850497", "14:54:51.8272423"}, {"14:54:51.8272423", "14:59:00"},
		}
		pages := requestsTo(s.sim, graphAlertsPath)
		require.Len(t, pages, len(bounds))
		for i, b := range bounds {
			from, to := "2020-09-30T"+b[0], "2020-09-30T"+b[1]
			require.Equal(t, fmt.Sprintf("lastUpdateDateTime ge %sZ and lastUpdateDateTime lt %sZ", pad7(from), pad7(to)),
				pages[i].URL.Query().Get("$filter"))
		}
		require.Equal(t, []string{
			`W! [] Alert 0 at byte 314 ("future@0001-01-01T00:00:00Z") emitted without the values that do not fit: ` +
				`lastUpdateDateTime: "2999-01-01T00:00:00Z" lies outside the years 1678 to 2262 that a metric's time can hold`,
			`W! [] Alert 0 at byte 314 ("future@0001-01-01T00:00:00Z"): its time is outside the window asked for, or unknown; ` +
				`it is emitted, and the cursor does not use its time`,
			// Once a poll: defender_poll counts them all.
			"W! [] The Graph API sent 1 alert last updated outside the window asked for, " +
				"[2020-09-30T12:59:00Z, 2020-09-30T14:59:00Z) (the first: past@2001-01-01T00:00:00Z): left out",
		}, s.logger.Warnings())
		poll := pollFields(t, acc)
		require.Equal(t, int64(10), poll["out_of_window"], "9 times 2001, once 2999")
		require.Equal(t, int64(1), poll["invalid_fields"])
		require.Equal(t, false, poll["backlog"])

		// The window was read to its end: the next poll reads on from there,
		// less the overlap.
		time.Sleep(pollInterval)
		s.poll(p)
		end := time.Now().Add(-time.Duration(p.Delay)).UTC().Format("2006-01-02T15:04:05.0000000Z")
		require.Equal(t, "lastUpdateDateTime ge 2020-09-30T14:49:00.0000000Z and lastUpdateDateTime lt "+end,
			requestsTo(s.sim, graphAlertsPath)[len(bounds)].URL.Query().Get("$filter"))
	})
}

// pad7 writes the seconds of a time of the form 15:04:05[.fraction] with
// the 7 fractional digits of a request's bounds.
func pad7(t string) string {
	whole, fraction, _ := strings.Cut(t, ".")
	return whole + "." + fraction + strings.Repeat("0", 7-len(fraction))
}
