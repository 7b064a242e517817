package microsoft_defender

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/influxdata/telegraf/config"
	"github.com/influxdata/telegraf/testutil"
)

// futureState leaves in stateFile a position two hours after fixedNow, as a
// host clock that ran ahead saves it, confirmed and with nothing to read.
func futureState(t *testing.T, server *httptest.Server, stateFile string) {
	t.Helper()
	ahead, acc, _ := deliveryPlugin(t, server, stateFile,
		func(m *MicrosoftDefender) { m.now = func() time.Time { return fixedNow.Add(2 * time.Hour) } })
	require.NoError(t, ahead.Gather(acc))
	require.Empty(t, emittedIDs(acc))
	ahead.Stop()
	require.Equal(t, fixedNow.Add(2*time.Hour), savedState(t, ahead).Watermark)
}

// graphPlaced serves Graph alerts_v2 pages of at most $top versions last
// updated in the $filter's [from, to), without next links.
func graphPlaced(t *testing.T, versions map[string]time.Time) *httptest.Server {
	return stub(t, func(w http.ResponseWriter, r *http.Request) {
		m := filterBounds.FindStringSubmatch(r.URL.Query().Get("$filter"))
		if m == nil {
			t.Errorf("no bounds in %s", r.URL.RawQuery)
			return
		}
		from, err1 := time.Parse(time.RFC3339Nano, m[1])
		to, err2 := time.Parse(time.RFC3339Nano, m[2])
		top, err3 := strconv.Atoi(r.URL.Query().Get("$top"))
		if err := errors.Join(err1, err2, err3); err != nil {
			t.Errorf("the query %s: %v", r.URL.RawQuery, err)
		}
		var page []string
		for _, id := range slices.Sorted(maps.Keys(versions)) {
			if at := versions[id]; !at.Before(from) && at.Before(to) && len(page) < top {
				page = append(page, graphAlertJSON(id, at))
			}
		}
		respond(t, w, []byte(`{"value":[`+strings.Join(page, ",")+`]}`))
	})
}

func alertIDs(acc *testutil.Accumulator) []string {
	sent := alerts(acc, 0)
	ids := make([]string, 0, len(sent))
	for _, m := range sent {
		id, _ := m.GetField("alert_id")
		ids = append(ids, id.(string))
	}
	return ids
}

// TestCleanStopRepeatsOnlyTheUnconfirmed on Graph, whose parts move the
// pending chunk's From up: confirmed alerts of earlier parts and chunks are
// not read again after a restart, the unconfirmed are.
func TestGraphCleanStopRepeatsOnlyTheUnconfirmed(t *testing.T) {
	stateFile := filepath.Join(t.TempDir(), "state.json")
	versions := make(map[string]time.Time)
	for _, m := range []int{2, 8, 12, 25} { // minutes after fixedNow
		versions["a+"+strconv.Itoa(m)] = fixedNow.Add(time.Duration(m) * time.Minute)
	}
	server := graphPlaced(t, versions)
	graph := func(m *MicrosoftDefender) {
		m.API, m.EndpointURL, m.PageSize = "graph", server.URL+graphAlertsPath, 2
		m.MaxWindow = config.Duration(15 * time.Minute)
		m.Overlap = config.Duration(10 * time.Minute)
	}
	plugin, acc, _ := deliveryPlugin(t, server, stateFile, graph)
	require.NoError(t, plugin.Gather(acc))
	require.Empty(t, alertIDs(acc))

	plugin.now = func() time.Time { return fixedNow.Add(30 * time.Minute) }
	require.NoError(t, plugin.Gather(acc))
	sent := alerts(acc, 0)
	require.Equal(t, []string{"a+2", "a+8", "a+12", "a+25"}, alertIDs(acc))
	sent[0].Accept()
	sent[1].Accept() // a+2 and a+8 confirmed, the output has not taken the rest yet
	plugin.Stop()

	restarted, again, _ := deliveryPlugin(t, server, stateFile, graph,
		func(m *MicrosoftDefender) { m.now = func() time.Time { return fixedNow.Add(31 * time.Minute) } })
	require.NoError(t, restarted.Gather(again))
	require.Equal(t, []string{"a+12", "a+25"}, alertIDs(again), "only the unconfirmed are read again")
}

// A SIEM walk moves the pending chunk's To down one answer at a time: a
// batch rejected inside it is read again after the rollback, and the
// confirmed ones above and below it are not emitted again.
func TestSIEMWalkRollbackRepeatsOnlyTheRejected(t *testing.T) {
	sim := &placedSIEM{}
	for _, m := range []int{50, 40, 30, 20, 10} { // minutes before fixedNow
		sim.detections = append(sim.detections, placedDetection{id: "d-" + strconv.Itoa(m), at: fixedNow.Add(-time.Duration(m) * time.Minute)})
	}
	plugin, acc, _ := deliveryPlugin(t, stub(t, sim.handler(t)), filepath.Join(t.TempDir(), "state.json"),
		func(m *MicrosoftDefender) { m.PageSize = 1 })
	require.NoError(t, plugin.Gather(acc))
	require.Equal(t, []string{"d-10", "d-20", "d-30", "d-40", "d-50"}, emittedIDs(acc))
	for i, m := range alerts(acc, 0) {
		if i == 2 {
			m.Reject()
		} else {
			m.Accept()
		}
	}
	plugin.now = func() time.Time { return fixedNow.Add(time.Minute) }
	before := len(acc.GetTelegrafMetrics())
	require.NoError(t, plugin.Gather(acc))
	sent := alerts(acc, before)
	again := make([]string, 0, len(sent))
	for _, m := range sent {
		id, _ := m.GetField("full_id")
		again = append(again, id.(string))
	}
	require.Equal(t, []string{"d-30"}, again, "only the rejected alert is sent again")
}

// skipPage is the page of match that the request's $skip starts, with a next
// link to the following one, as a service paging with $skip answers.
func skipPage(r *http.Request, match []string, pageSize int) string {
	skip, _ := strconv.Atoi(r.URL.Query().Get("$skip")) //nolint:errcheck // none is 0
	page := match[min(skip, len(match)):min(skip+pageSize, len(match))]
	next := ""
	if skip+pageSize < len(match) {
		q := r.URL.Query()
		q.Set("$skip", strconv.Itoa(skip+pageSize))
		next = `,"@odata.nextLink":"{{server}}` + graphAlertsPath + "?" + q.Encode() + `"`
	}
	return `{"value":[` + strings.Join(page, ",") + `]` + next + `}`
}

// chainStub serves one instant of `versions` alert versions, pageSize a
// page, along next links, on a clock that the plugin's waits move.
func chainStub(t *testing.T, versions, pageSize int, configure func(*MicrosoftDefender)) (*MicrosoftDefender, *time.Time, *[]string) {
	at := fixedNow.Add(-time.Hour)
	clock := fixedNow
	plugin, _, requests := graphStub(t, func(r *http.Request, from, to time.Time) string {
		var match []string
		if !at.Before(from) && at.Before(to) {
			for i := range versions {
				match = append(match, graphAlertJSON(fmt.Sprintf("v%02d", i), at))
			}
		}
		return skipPage(r, match, pageSize)
	}, func(m *MicrosoftDefender) {
		m.PageSize, m.MaxAlertsPerGather = pageSize, versions
		m.now = func() time.Time { return clock }
		m.sleep = func(ctx context.Context, d time.Duration) error {
			clock = clock.Add(d)
			return ctx.Err()
		}
		configure(m)
	})
	return plugin, &clock, requests
}

// A chain of one instant waits for max_requests_per_minute past the poll's
// deadline (one minute on a first poll). At 6 requests a minute (one every
// 10 s), the first page of the instant, after five parts that split the
// chunk, goes at 50 s, its 7 next pages at 60 to 120 s: the poll lasts
// twice its interval. A chain is up to
// max_alerts_per_gather / page_size pages, each 60 / max_requests_per_minute
// seconds apart past the deadline; built into Telegraf, which waits for
// Gather before Stop, a shutdown waits as long.
func TestGraphChainPollRunsPastItsDeadlineAtTheRateLimit(t *testing.T) {
	plugin, clock, requests := chainStub(t, 16, 2, func(m *MicrosoftDefender) { m.MaxRequestsPerMinute = 6 })
	var acc testutil.Accumulator
	require.NoError(t, plugin.Gather(&acc))
	require.Len(t, alerts(&acc, 0), 16)
	require.Len(t, *requests, 5+8, "five parts, then the 8 pages of the instant")
	require.Len(t, slices.DeleteFunc(slices.Clone(*requests), func(r string) bool { return !strings.Contains(r, "%24skip=") }), 7, "7 next links")
	require.Equal(t, 120*time.Second, clock.Sub(fixedNow), "10 s before each request but the first")
	status, _ := pollMetrics(&acc)[0].GetTag("status")
	require.Equal(t, "partial", status, "the part after the instant waits for the next poll")
}

// Interrupt (the execd binary's SIGTERM, stdin closed) ends the poll in
// such a wait at once: the sleep sees the poll's context cancelled.
func TestGraphChainWaitPastTheDeadlineEndsAtInterrupt(t *testing.T) {
	var plugin *MicrosoftDefender
	waits := 0
	plugin, clock, requests := chainStub(t, 16, 2, func(m *MicrosoftDefender) {
		m.MaxRequestsPerMinute = 6
		moved := m.sleep
		m.sleep = func(ctx context.Context, d time.Duration) error {
			if waits++; waits == 7 { // before the instant's third page, past the deadline
				plugin.Interrupt()
			}
			return moved(ctx, d)
		}
	})
	var acc testutil.Accumulator
	require.NoError(t, plugin.Gather(&acc))
	require.Len(t, *requests, 7, "no request after the interrupted wait")
	require.Equal(t, 70*time.Second, clock.Sub(fixedNow))
	require.Len(t, alerts(&acc, 0), 4)
	status, _ := pollMetrics(&acc)[0].GetTag("status")
	require.Equal(t, "partial", status)
}
