package microsoft_defender

import (
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/influxdata/telegraf/config"
	"github.com/influxdata/telegraf/testutil"
)

// oddSIEM is a SIEM API that answers honestly, the newest detections of
// the window asked for, in one of the ways its documentation leaves open.
type oddSIEM struct {
	mu             sync.Mutex
	detections     []placedDetection
	maxLimit       int  // a larger limit is silently lowered to this; 0: none
	exclusiveUntil bool // untilTimeUtc is an exclusive bound
	millis         bool // the bounds are read to the millisecond, as the 2020 page writes them
	queries        []string
	answered       func(n int) // called after the n-th answer (1-based), holding the lock
}

func (s *oddSIEM) handler(t *testing.T) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		defer s.mu.Unlock()
		q := r.URL.Query()
		s.queries = append(s.queries, q.Get("sinceTimeUtc")+" "+q.Get("untilTimeUtc")+" "+q.Get("limit"))
		since, err1 := time.Parse(time.RFC3339Nano, q.Get("sinceTimeUtc"))
		until, err2 := time.Parse(time.RFC3339Nano, q.Get("untilTimeUtc"))
		limit, err3 := strconv.Atoi(cmpOrZero(q.Get("limit")))
		if err1 != nil || err2 != nil || err3 != nil {
			t.Errorf("bad query %s", r.URL.RawQuery)
		}
		if s.millis {
			since, until = since.Truncate(time.Millisecond), until.Truncate(time.Millisecond)
		}
		if s.maxLimit > 0 && (limit == 0 || limit > s.maxLimit) {
			limit = s.maxLimit
		}
		var match []placedDetection
		for _, d := range s.detections {
			if !d.at.Before(since) && (d.at.Before(until) || !s.exclusiveUntil && d.at.Equal(until)) {
				match = append(match, d)
			}
		}
		slices.SortStableFunc(match, func(a, b placedDetection) int { return b.at.Compare(a.at) })
		if limit > 0 && len(match) > limit {
			match = match[:limit]
		}
		parts := make([]string, 0, len(match))
		for _, d := range match {
			parts = append(parts, detectionJSON(d.id, d.at.Format(time.RFC3339Nano)))
		}
		respond(t, w, []byte("["+strings.Join(parts, ",")+"]"))
		if s.answered != nil {
			s.answered(len(s.queries))
		}
	}
}

func cmpOrZero(s string) string {
	if s == "" {
		return "0"
	}
	return s
}

// gatherPolls runs polls a minute apart from fixedNow and counts how often
// each detection was emitted; it returns them and the polls' errors.
func gatherPolls(t *testing.T, plugin *MicrosoftDefender, polls int) (map[string]int, []error) {
	t.Helper()
	emitted := make(map[string]int)
	return emitted, gatherMore(t, plugin, 0, polls, emitted)
}

// gatherMore runs the polls first to first+polls-1 of gatherPolls, counting
// into emitted, and returns their errors.
func gatherMore(t *testing.T, plugin *MicrosoftDefender, first, polls int, emitted map[string]int) []error {
	t.Helper()
	errs := make([]error, 0, polls)
	for i := first; i < first+polls; i++ {
		now := fixedNow.Add(time.Duration(i) * time.Minute)
		plugin.now = func() time.Time { return now }
		var acc testutil.Accumulator
		require.NoError(t, plugin.Gather(&acc))
		countEmitted(&acc, emitted)
		errs = append(errs, acc.Errors...)
	}
	return errs
}

// gatherAlertPolls runs polls a minute apart from fixedNow and counts how
// often each Graph alert (alert_id) was emitted.
func gatherAlertPolls(t *testing.T, plugin *MicrosoftDefender, polls int) map[string]int {
	t.Helper()
	emitted := make(map[string]int)
	for i := range polls {
		now := fixedNow.Add(time.Duration(i) * time.Minute)
		plugin.now = func() time.Time { return now }
		var acc testutil.Accumulator
		require.NoError(t, plugin.Gather(&acc))
		for _, m := range acc.GetTelegrafMetrics() {
			if id, ok := m.GetField("alert_id"); ok {
				emitted[id.(string)]++
			}
		}
	}
	return emitted
}

// addProcessedLater adds five detections z0 to z4 processed in the 50 s
// after fixedNow (after a first poll's end), each wanted once.
func addProcessedLater(sim *oddSIEM, want map[string]int) {
	sim.mu.Lock()
	defer sim.mu.Unlock()
	for i := range 5 {
		id := fmt.Sprintf("z%d", i)
		sim.detections = append(sim.detections, placedDetection{id: id, at: fixedNow.Add(time.Duration(10+10*i) * time.Second)})
		want[id] = 1
	}
}

// The chain of one Graph instant is followed for max_alerts_per_gather /
// page_size pages, an integer division: with max_alerts_per_gather below
// page_size the bound is 0 pages, so a chain is cut after its first page
// (graphReader.after: "1 pages read") and the versions behind the next link
// are never read, though each poll reads on with the budget it has.
func TestGraphChainWithABudgetBelowAPageIsRead(t *testing.T) {
	at := fixedNow.Add(-time.Hour)
	const versions, pageSize = 3, 2
	plugin, _, _ := graphStub(t, func(r *http.Request, from, to time.Time) string {
		var match []string
		if !at.Before(from) && at.Before(to) {
			for i := range versions {
				match = append(match, graphAlertJSON(fmt.Sprintf("v%d", i), at))
			}
		}
		return skipPage(r, match, pageSize)
	}, func(m *MicrosoftDefender) { m.PageSize, m.MaxAlertsPerGather = pageSize, 1 })
	emitted := gatherAlertPolls(t, plugin, 10)
	require.Equal(t, map[string]int{"v0": 1, "v1": 1, "v2": 1}, emitted)
}

// max_window has no lower bound but overlap: max_window = 1ns with
// overlap = 0 passes Init. Each chunk then costs a SIEM request (60 a
// minute by default: 60 ns of the API's time a minute), and a Graph chunk
// inside one 100 ns tick, which no query can ask for, is passed without a
// request, so a poll spins through chunks of 1 ns until its deadline (and
// never ends on a clock that does not move): measured on Graph, a poll's 60
// requests moved the watermark 1 ms into a 2 h window. It never catches up.
func TestMaxWindowTooShortToAdvanceIsRefused(t *testing.T) {
	plugin := validPlugin()
	plugin.MaxWindow, plugin.Overlap = config.Duration(time.Nanosecond), 0
	require.EqualError(t, plugin.Init(), "max_window must be at least 1s, got 1ns")
}

// A refused redirect and a next link to another place are named by their
// origin, so that a path or query echoing the token is not quoted; but the
// origin holds the host, which a server can echo the token into as well.
// origin() lowercases it: a mixed-case token comes out lowercased, and a
// token that is lowercase already (an access_token of hex digits, say)
// comes out whole, in an error and in a warning.
func TestTokenEchoedIntoAHostIsNotQuoted(t *testing.T) {
	const token = "0f3a9c77e1b24d6c-lowercase-access-token-must-not-leak"
	at := fixedNow.Add(-time.Hour)
	echo := func(r *http.Request) string {
		return "https://" + strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ") + ".evil.example.com/"
	}
	plugin, logger, _ := graphStub(t, func(r *http.Request, from, to time.Time) string {
		if at.Before(from) || !at.Before(to) {
			return `{"value":[]}`
		}
		return `{"value":[` + graphAlertJSON("a1", at) + `],"@odata.nextLink":"` + echo(r) + `page2"}`
	}, func(m *MicrosoftDefender) { m.AccessToken = config.NewSecret([]byte(token)) })
	gatherOK(t, plugin)
	for _, line := range logger.Messages() {
		require.NotContains(t, strings.ToLower(line.Text), token)
	}

	server := stub(t, func(w http.ResponseWriter, r *http.Request) { http.Redirect(w, r, echo(r), http.StatusFound) })
	redirected := stubbedPlugin(t, server, &testutil.CaptureLogger{}, func(m *MicrosoftDefender) {
		m.AuthMethod, m.AccessToken, m.TenantID, m.ClientID, m.ClientSecret = methodAccessToken, config.NewSecret([]byte(token)), "", "", config.Secret{}
		m.LoginEndpoint = ""
	})
	var acc testutil.Accumulator
	require.NoError(t, redirected.Gather(&acc))
	require.Len(t, acc.Errors, 1)
	require.NotContains(t, strings.ToLower(acc.Errors[0].Error()), token)
}

// Detections reach the SIEM API's index after their LastProcessedTimeUtc
// (the defender-api sheet: late arrivals are why overlap exists). One that
// lands above a full answer's newest between that answer and the check
// above it is taken for proof that the service answered other than the
// newest `limit`: the poll fails with "it would lose detections", though
// the service was honest and the next poll reads it all. Every late
// arrival in the top of a window read with a full answer is a false alarm,
// status "error", in the log and in defender_poll.
func TestSIEMLateArrivalIsNoDishonestLimit(t *testing.T) {
	sim := &oddSIEM{detections: []placedDetection{
		{id: "d0", at: fixedNow.Add(-50 * time.Minute)},
		{id: "d1", at: fixedNow.Add(-40 * time.Minute)},
		{id: "d2", at: fixedNow.Add(-30 * time.Minute)},
	}}
	sim.answered = func(n int) {
		if n == 1 { // visible only now, processed a second before the window's end
			sim.detections = append(sim.detections, placedDetection{id: "late", at: fixedNow.Add(-time.Second)})
		}
	}
	plugin := stubbedPlugin(t, stub(t, sim.handler(t)), &testutil.CaptureLogger{}, func(m *MicrosoftDefender) { m.PageSize = 2 })
	emitted, errs := gatherPolls(t, plugin, 2)
	require.Empty(t, errs, "queries: %q", sim.queries)
	require.Equal(t, map[string]int{"d0": 1, "d1": 1, "d2": 1, "late": 1}, emitted)
}

// A service whose untilTimeUtc is exclusive, [since, until), or that reads
// the bounds to the millisecond (the 2020 API page writes them with three
// fractional digits, 2016-09-12T00:00:00.000) answers the first request
// (until = now) as expected. After a full answer the walk asks [From,
// oldest] to read the rest of the oldest instant, and [at, at] to read one
// instant whole: both leave out exactly the instant the walk needs. Here
// page_size = 2 and two detections share 14:20 (and 123.4 µs): the first
// answer holds d3 and one of them, and the other one was lost.
func TestSIEMCoarseOrExclusiveUntilLosesNothing(t *testing.T) {
	for _, tt := range []struct {
		name                   string
		shared                 time.Time
		exclusiveUntil, millis bool
	}{
		{"exclusive until", fixedNow.Add(-40 * time.Minute), true, false},
		{"bounds to the millisecond", fixedNow.Add(-40*time.Minute + 123400*time.Nanosecond), false, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			sim := &oddSIEM{exclusiveUntil: tt.exclusiveUntil, millis: tt.millis}
			sim.detections = []placedDetection{
				{id: "d0", at: fixedNow.Add(-50 * time.Minute)},
				{id: "d1", at: tt.shared},
				{id: "d2", at: tt.shared},
				{id: "d3", at: fixedNow.Add(-30 * time.Minute)},
			}
			plugin := stubbedPlugin(t, stub(t, sim.handler(t)), &testutil.CaptureLogger{}, func(m *MicrosoftDefender) { m.PageSize = 2 })
			emitted, errs := gatherPolls(t, plugin, 3)
			require.Empty(t, errs)
			require.Equal(t, map[string]int{"d0": 1, "d1": 1, "d2": 1, "d3": 1}, emitted, "every detection once; queries: %q", sim.queries)
		})
	}
}

// Under each way of reading untilTimeUtc (inclusive or exclusive, to 100 ns
// or to the millisecond) every detection comes once: a full answer of one
// instant (e*), a full answer's oldest instant shared (f*, d*), and ms
// boundaries holding more than page_size (b*). Only a service other than
// inclusive to 100 ns makes the walk round untilTimeUtc up, with a warning.
func TestSIEMUntilReadAnyWayLosesNothing(t *testing.T) {
	at := func(d time.Duration) time.Time { return fixedNow.Add(d) }
	placed := map[string]time.Time{
		"e0": at(-10*time.Minute + 300), "e1": at(-10*time.Minute + 300), "e2": at(-10*time.Minute + 300),
		"f0": at(-20*time.Minute + 777700), "f1": at(-20*time.Minute + 777700), "f2": at(-20*time.Minute + 777700),
		"b0": at(-30 * time.Minute), "b1": at(-30 * time.Minute), "b2": at(-30 * time.Minute),
		"c0": at(-30*time.Minute - time.Millisecond), "c1": at(-30*time.Minute - time.Millisecond),
		"c2": at(-30*time.Minute - time.Millisecond),
		"d0": at(-40*time.Minute + 123400), "d1": at(-40*time.Minute + 123400), "d2": at(-40*time.Minute + 123500),
		"a0": at(-50 * time.Minute),
	}
	for _, exclusive := range []bool{false, true} {
		for _, millis := range []bool{false, true} {
			t.Run(fmt.Sprintf("exclusive=%v,millis=%v", exclusive, millis), func(t *testing.T) {
				sim := &oddSIEM{exclusiveUntil: exclusive, millis: millis}
				want := make(map[string]int)
				for id, when := range placed {
					sim.detections = append(sim.detections, placedDetection{id: id, at: when})
					want[id] = 1
				}
				slices.SortFunc(sim.detections, func(a, b placedDetection) int { return strings.Compare(a.id, b.id) })
				logger := &testutil.CaptureLogger{}
				plugin := stubbedPlugin(t, stub(t, sim.handler(t)), logger, func(m *MicrosoftDefender) { m.PageSize = 2 })
				emitted, errs := gatherPolls(t, plugin, 3)
				require.Empty(t, errs)
				require.Equal(t, want, emitted, "every detection once; queries: %q", sim.queries)
				rounded := 0
				for _, w := range logger.Warnings() {
					if strings.Contains(w, "rounded up to the next millisecond") {
						rounded++
					}
				}
				require.Equal(t, exclusive || millis, rounded > 0, "warnings: %q", logger.Warnings())
				require.Less(t, len(sim.queries), 60, "queries: %q", sim.queries)
			})
		}
	}
}

// An honest service whose detection at a full answer's oldest instant is
// re-processed before the next request answers without it, as a coarse
// one would: the walk rounds untilTimeUtc up from there on, a warning, and
// emits nothing twice, though the full answer let the cursor forget what
// lay above that instant (d1 in the same millisecond, asked for again).
func TestSIEMReprocessedOldestIsNoLossNorDuplicate(t *testing.T) {
	sim := &oddSIEM{detections: []placedDetection{
		{id: "d0", at: fixedNow.Add(-50 * time.Minute)},
		{id: "d1", at: fixedNow.Add(-40*time.Minute + 500*time.Microsecond)},
		{id: "moved", at: fixedNow.Add(-40*time.Minute + 100*time.Microsecond)},
	}}
	sim.answered = func(n int) {
		if n == 2 { // after the full answer and its check: re-processed, later than the polls read
			sim.detections[2].at = fixedNow.Add(time.Hour)
		}
	}
	logger := &testutil.CaptureLogger{}
	plugin := stubbedPlugin(t, stub(t, sim.handler(t)), logger, func(m *MicrosoftDefender) { m.PageSize = 2 })
	emitted, errs := gatherPolls(t, plugin, 3)
	require.Empty(t, errs)
	require.Equal(t, map[string]int{"d0": 1, "d1": 1, "moved": 1}, emitted, "queries: %q", sim.queries)
	require.Contains(t, logger.Warnings(), "W! [] The SIEM API answered sinceTimeUtc=2020-09-30T14:00:00Z "+
		"untilTimeUtc=2020-09-30T14:20:00.0001Z without the detection at 2020-09-30T14:20:00.0001Z that an answer before held: "+
		"it reads untilTimeUtc as exclusive, or the bounds to the millisecond. This chunk is read on with untilTimeUtc "+
		"rounded up to the next millisecond; the repeats are dropped")
}

// The SIEM API's limit is undocumented in size: a service that answers at
// most 3 detections however many were asked for (as Graph clamps $top)
// answers page_size = 5 with 3. A short answer taken for the whole window
// loses every detection below the newest three, with no error.
func TestSIEMLimitTheServiceLowersLosesNothing(t *testing.T) {
	sim := &oddSIEM{maxLimit: 3}
	want := make(map[string]int)
	for i := range 8 {
		id := fmt.Sprintf("d%d", i)
		sim.detections = append(sim.detections, placedDetection{id: id, at: fixedNow.Add(-time.Duration(50-5*i) * time.Minute)})
		want[id] = 1
	}
	logger := &testutil.CaptureLogger{}
	plugin := stubbedPlugin(t, stub(t, sim.handler(t)), logger, func(m *MicrosoftDefender) { m.PageSize = 5 })
	emitted, errs := gatherPolls(t, plugin, 3)
	require.Empty(t, errs)
	require.Equal(t, want, emitted, "every detection once; queries: %q", sim.queries)
	require.Equal(t, []string{"W! [] The SIEM API answered 3 detections to limit=5 with more below them: " +
		"it answers at most 3 a request, which every request asks for from now on (page_size = 3 asks so from the start)"}, logger.Warnings())
}

// An honest service's short answer is taken for the whole window once a
// request for its oldest millisecond and below holds nothing more; one
// shorter than an answer before, which shows the service answers more, is
// not checked.
func TestSIEMShortAnswerIsCheckedBelow(t *testing.T) {
	sim := &oddSIEM{}
	for i := range 5 {
		sim.detections = append(sim.detections, placedDetection{id: fmt.Sprintf("d%d", i), at: fixedNow.Add(-time.Duration(48-10*i) * time.Minute)})
	}
	plugin := stubbedPlugin(t, stub(t, sim.handler(t)), &testutil.CaptureLogger{}, func(m *MicrosoftDefender) { m.PageSize = 6 })
	emitted, errs := gatherPolls(t, plugin, 2)
	require.Empty(t, errs)
	require.Len(t, emitted, 5)
	require.Equal(t, []string{
		"2020-09-30T14:00:00.0000000Z 2020-09-30T15:00:00.0000000Z 6",
		"2020-09-30T14:00:00.0000000Z 2020-09-30T14:12:00.0010000Z 6", // d0's millisecond and below
		"2020-09-30T14:50:00.0000000Z 2020-09-30T15:01:00.0000000Z 6", // d4 again, alone: not checked
	}, sim.queries)
}

// More detections at one instant than a service lowering limit answers
// cannot be read by any bounds: that instant is named in a warning.
func TestSIEMInstantOverTheServicesLimitIsWarned(t *testing.T) {
	sim := &oddSIEM{maxLimit: 3}
	crowded := fixedNow.Add(-20 * time.Minute)
	for i := range 5 {
		sim.detections = append(sim.detections, placedDetection{id: fmt.Sprintf("c%d", i), at: crowded})
	}
	sim.detections = append(sim.detections, placedDetection{id: "below", at: fixedNow.Add(-40 * time.Minute)})
	logger := &testutil.CaptureLogger{}
	plugin := stubbedPlugin(t, stub(t, sim.handler(t)), logger, func(m *MicrosoftDefender) { m.PageSize = 5 })
	emitted, errs := gatherPolls(t, plugin, 1)
	require.Empty(t, errs)
	require.Len(t, emitted, 4, "three of the crowded instant, and the one below")
	require.Equal(t, []string{
		"W! [] The SIEM API answered 3 detections to limit=5 with more below them: it answers at most 3 a request, " +
			"which every request asks for from now on (page_size = 3 asks so from the start)",
		"W! [] At least 3 detections share LastProcessedTimeUtc 2020-09-30T14:40:00Z, more than one request with limit 3 returns: " +
			"reading them without a limit",
		"W! [] The SIEM API answered 3 detections at 2020-09-30T14:40:00Z, the most it answers a request: " +
			"more at that instant cannot be read",
	}, logger.Warnings())
}
