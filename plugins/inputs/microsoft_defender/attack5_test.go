package microsoft_defender

import (
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/influxdata/telegraf/config"
	"github.com/influxdata/telegraf/testutil"
)

// An honest service (page_size = 5 answered in full) on a tenant where
// detections turn up late below the window's newest: the check below a
// short answer of one (d0) finds late1, the window read again holds two,
// and the check below those finds late2, processed earlier still and
// visible only now. That second find is taken for a service answering at
// most 2: a warning advises page_size = 2, and every later request of
// every poll asks limit=2 (until a restart), though the service answered
// more each time it was asked again. Here the next poll's five detections
// cost six requests, not three.
func TestSIEMTwoLateArrivalsBelowShortAnswersAreNoLoweredLimit(t *testing.T) {
	sim := &oddSIEM{detections: []placedDetection{{id: "d0", at: fixedNow.Add(-20 * time.Minute)}}}
	sim.answered = func(n int) {
		switch n {
		case 1: // after the first window's answer
			sim.detections = append(sim.detections, placedDetection{id: "late1", at: fixedNow.Add(-40 * time.Minute)})
		case 3: // after the window read again
			sim.detections = append(sim.detections, placedDetection{id: "late2", at: fixedNow.Add(-50 * time.Minute)})
		}
	}
	logger := &testutil.CaptureLogger{}
	plugin := stubbedPlugin(t, stub(t, sim.handler(t)), logger, func(m *MicrosoftDefender) { m.PageSize = 5 })
	emitted, errs := gatherPolls(t, plugin, 1)
	require.Empty(t, errs)
	require.Equal(t, map[string]int{"d0": 1, "late1": 1, "late2": 1}, emitted, "queries: %q", sim.queries)
	require.Empty(t, logger.Warnings(), "queries: %q", sim.queries)

	sim.mu.Lock()
	for i := range 5 {
		sim.detections = append(sim.detections, placedDetection{id: fmt.Sprintf("z%d", i), at: fixedNow.Add(time.Duration(10+i) * time.Second)})
	}
	asked := len(sim.queries)
	sim.mu.Unlock()
	now := fixedNow.Add(time.Minute)
	plugin.now = func() time.Time { return now }
	var acc testutil.Accumulator
	require.NoError(t, plugin.Gather(&acc))
	require.Empty(t, acc.Errors)
	require.Equal(t, []string{ // limit=page_size: the full answer, the check above it, the rest below
		"2020-09-30T14:50:00.0000000Z 2020-09-30T15:01:00.0000000Z 5",
		"2020-09-30T15:00:14.0000001Z 2020-09-30T15:01:00.0000000Z 1",
		"2020-09-30T14:50:00.0000000Z 2020-09-30T15:00:10.0000000Z 5",
	}, sim.queries[asked:])
}

// Telegraf skips a tick that comes while Gather runs ("Previous collection
// has not completed; scheduled collection skipped"): a poll reading a
// backlog until its deadline, its last request still in flight then, ends
// just past the next tick, and the next Gather starts a whole interval
// later. The gap it measures is the deadline plus an interval; the shorter
// of the last two gaps grows with it, an interval every two polls (and the
// first poll's default minute makes it 70 s at once). Under execd the
// prompt kept while a Gather runs starts the next at once: the gap is the
// poll's own length, the deadline plus the request in flight, and it grows
// by that request every poll. Here interval = 10s, requests of 1.3 s: the
// polls must not grow to minutes (the state is written once a Gather,
// Telegraf warns of each, and a shutdown waits for the Gather in flight).
// Only a gap after a poll that ended early shows the interval, so during
// a backlog that no poll finishes early the first poll's minute holds:
// bounded, not growing.
func TestPollDeadlineDoesNotGrowWhenPollsOverrun(t *testing.T) {
	const interval, request = 10 * time.Second, 1300 * time.Millisecond
	for _, tt := range []struct {
		name string
		next func(start, end time.Time) time.Time // when the Gather after one from start to end starts
	}{
		{"Telegraf's ticks", func(_, end time.Time) time.Time { // the first tick that finds Telegraf waiting
			return fixedNow.Add((end.Sub(fixedNow) + interval - 1) / interval * interval)
		}},
		{"execd's prompts", func(start, end time.Time) time.Time {
			tick := fixedNow.Add((start.Sub(fixedNow)/interval + 1) * interval)
			if tick.Before(end) { // kept while the Gather ran
				return end
			}
			return tick
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var at time.Time
			server := stub(t, func(w http.ResponseWriter, _ *http.Request) {
				at = at.Add(request)
				respond(t, w, []byte("[]"))
			})
			plugin := stubbedPlugin(t, server, &testutil.CaptureLogger{}, func(m *MicrosoftDefender) {
				m.InitialLookback, m.MaxRequestsPerMinute = config.Duration(2000*time.Hour), 15000
			})
			plugin.now = func() time.Time { return at }
			at = fixedNow
			durations := make([]time.Duration, 0, 12)
			for range 12 {
				start := at
				var acc testutil.Accumulator
				require.NoError(t, plugin.Gather(&acc))
				require.Empty(t, acc.Errors)
				durations = append(durations, at.Sub(start))
				at = tt.next(start, at)
			}
			for i, d := range durations {
				require.LessOrEqual(t, d, defaultPollDeadline+request, "poll %d; all: %v", i, durations)
			}
		})
	}
}

// ignoringSince answers as if sinceTimeUtc were not sent: the newest
// detections up to untilTimeUtc, however old.
func ignoringSince(next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		q.Set("sinceTimeUtc", "2000-01-01T00:00:00.0000000Z")
		r.URL.RawQuery = q.Encode()
		next(w, r)
	}
}

// A SIEM service ignoring sinceTimeUtc (a proxy or gateway dropping it)
// answers detections older than the window: emitted (out_of_window) and
// remembered at the window's end, they are forgotten once the watermark is
// overlap past it, and the next poll emits them again; a detection read in
// its own window ("new") is forgotten when that chunk is done and comes
// back the same way. Over 25 polls a minute apart, each is emitted and
// counted (defender_alert_count) three times, once every overlap, onto the
// same point. Recorded, not fixed: leaving out detections timed before
// sinceTimeUtc would lose those whose text time is not where the API places
// them (TestFullAnswerWithoutATimeInTheWindowIsWalked); repeats onto the
// same point lose nothing.
func TestSIEMIgnoringSinceRepeatsRatherThanLoses(t *testing.T) {
	sim := &oddSIEM{detections: []placedDetection{
		{id: "old", at: fixedNow.Add(-5 * time.Hour)},
		{id: "new", at: fixedNow.Add(-20 * time.Minute)},
	}}
	plugin := stubbedPlugin(t, stub(t, ignoringSince(sim.handler(t))), &testutil.CaptureLogger{}, func(m *MicrosoftDefender) { m.PageSize = 5 })
	emitted, _ := gatherPolls(t, plugin, 25)
	require.Equal(t, map[string]int{"old": 3, "new": 3}, emitted, "queries: %q", sim.queries)
}
