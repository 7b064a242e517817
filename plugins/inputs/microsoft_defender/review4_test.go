package microsoft_defender

import (
	"fmt"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/influxdata/telegraf/config"
	"github.com/influxdata/telegraf/testutil"
)

// A service lowering limit to 3 answers page_size = 5 with the newest three:
// a, and two of the three detections sharing one instant (one alert's
// detections reach the backend together). The check below that short
// answer asks for one detection strictly below its oldest instant, finds
// none, and the answer is taken for the whole window: the third detection
// of that instant, which an instant read returns, is lost.
func TestSIEMLoweredLimitCutInsideTheOldestInstantLosesNothing(t *testing.T) {
	shared := fixedNow.Add(-45 * time.Minute)
	sim := &oddSIEM{maxLimit: 3, detections: []placedDetection{
		{id: "a", at: fixedNow.Add(-40 * time.Minute)},
		{id: "b", at: shared}, {id: "c", at: shared}, {id: "d", at: shared},
	}}
	plugin := stubbedPlugin(t, stub(t, sim.handler(t)), &testutil.CaptureLogger{}, func(m *MicrosoftDefender) { m.PageSize = 5 })
	emitted, errs := gatherPolls(t, plugin, 3)
	require.Empty(t, errs)
	require.Equal(t, map[string]int{"a": 1, "b": 1, "c": 1, "d": 1}, emitted, "queries: %q", sim.queries)
}

// The same on a service that also reads the bounds to the millisecond (as
// the 2020 page writes them): the check below asks untilTimeUtc one tick
// below the oldest, which such a service reads as the start of the oldest's
// millisecond; d, in that millisecond below the oldest, is lost.
func TestSIEMLoweredLimitToTheMillisecondLosesNothing(t *testing.T) {
	ms := fixedNow.Add(-40 * time.Minute)
	sim := &oddSIEM{maxLimit: 3, millis: true, detections: []placedDetection{
		{id: "a", at: fixedNow.Add(-20 * time.Minute)},
		{id: "b", at: fixedNow.Add(-30 * time.Minute)},
		{id: "c", at: ms.Add(500 * time.Microsecond)},
		{id: "d", at: ms.Add(200 * time.Microsecond)},
	}}
	plugin := stubbedPlugin(t, stub(t, sim.handler(t)), &testutil.CaptureLogger{}, func(m *MicrosoftDefender) { m.PageSize = 5 })
	emitted, errs := gatherPolls(t, plugin, 3)
	require.Empty(t, errs)
	require.Equal(t, map[string]int{"a": 1, "b": 1, "c": 1, "d": 1}, emitted, "queries: %q", sim.queries)
}

// limitOnly lowers a limit above max to max, as Graph clamps $top, and
// leaves a request without limit (an instant read whole) unlimited.
func limitOnly(next http.HandlerFunc, most int) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		if n, err := strconv.Atoi(q.Get("limit")); err == nil && n > most {
			q.Set("limit", strconv.Itoa(most))
			r.URL.RawQuery = q.Encode()
		}
		next(w, r)
	}
}

// (Nor is the instant read whole, holding more than that limit, named as
// one that cannot be.)
//
// The most records one answer held, kept across polls, counts an instant's
// read whole, which has no limit: on a service that lowers only a limit it
// sends (to 3), four detections of one instant make it 4, and from then on
// a chunk's first answer of 3 (to page_size = 5) is below it, so it is taken
// for the whole window unchecked: z0 and z1, below the newest three of a
// later poll, are lost in every poll.
func TestSIEMInstantReadWholeDoesNotHideALoweredLimit(t *testing.T) {
	crowded := fixedNow.Add(-30 * time.Minute)
	sim := &oddSIEM{detections: []placedDetection{{id: "y", at: fixedNow.Add(-50 * time.Minute)}}}
	want := map[string]int{"y": 1}
	for i := range 4 {
		id := fmt.Sprintf("x%d", i)
		sim.detections = append(sim.detections, placedDetection{id: id, at: crowded})
		want[id] = 1
	}
	logger := &testutil.CaptureLogger{}
	plugin := stubbedPlugin(t, stub(t, limitOnly(sim.handler(t), 3)), logger, func(m *MicrosoftDefender) { m.PageSize = 5 })
	emitted, errs := gatherPolls(t, plugin, 1)
	require.Empty(t, errs)
	require.Equal(t, want, emitted, "queries: %q", sim.queries)
	for _, w := range logger.Warnings() { // the instant's four were read whole
		require.NotContains(t, w, "more at that instant cannot be read")
	}

	addProcessedLater(sim, want) // after the first poll's end, before the second's
	require.Empty(t, gatherMore(t, plugin, 1, 3, emitted))
	require.Equal(t, want, emitted, "queries: %q", sim.queries)
}

// An honest service's short answer (d0, d1 to page_size = 5) is checked
// below; a detection processed earlier but visible only now (late
// arrivals are why overlap exists) answers that check. It is taken for a
// service lowering limit to 2: a warning says so and advises page_size = 2,
// which would slow every later poll, though the service answers 5.
func TestSIEMLateArrivalBelowAShortAnswerIsNoLoweredLimit(t *testing.T) {
	sim := &oddSIEM{detections: []placedDetection{
		{id: "d0", at: fixedNow.Add(-30 * time.Minute)},
		{id: "d1", at: fixedNow.Add(-20 * time.Minute)},
	}}
	sim.answered = func(n int) {
		if n == 1 {
			sim.detections = append(sim.detections, placedDetection{id: "late", at: fixedNow.Add(-40 * time.Minute)})
		}
	}
	logger := &testutil.CaptureLogger{}
	plugin := stubbedPlugin(t, stub(t, sim.handler(t)), logger, func(m *MicrosoftDefender) { m.PageSize = 5 })
	emitted, errs := gatherPolls(t, plugin, 2)
	require.Empty(t, errs)
	require.Equal(t, map[string]int{"d0": 1, "d1": 1, "late": 1}, emitted, "queries: %q", sim.queries)
	require.Empty(t, logger.Warnings(), "queries: %q", sim.queries)
}

// The execd binary (and Telegraf's execd, which writes a line a tick) keeps
// one prompt while a Gather runs: after a poll that overran its interval
// (a request of up to timeout passes the deadline), the next Gather starts
// at once and, with nothing to read, ends early; the one after starts at
// the next tick, a fraction of the interval later. With the shortest gap
// seen as the deadline, that one gap (here 100 ms of a 10 s interval) held
// every later poll to one request. Main's shorter of the last two gaps
// shortens the next poll only: the one after reads its interval.
func TestPollDeadlineSurvivesAGatherPromptedLate(t *testing.T) {
	var at time.Time
	failing, requests := true, 0
	server := stub(t, func(w http.ResponseWriter, _ *http.Request) {
		if failing {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		requests++
		at = at.Add(time.Second) // each request takes a second
		respond(t, w, []byte("[]"))
	})
	plugin := stubbedPlugin(t, server, &testutil.CaptureLogger{}, func(m *MicrosoftDefender) {
		m.InitialLookback, m.MaxRetries, m.MaxRequestsPerMinute = config.Duration(100*time.Hour), 0, 15000
	})
	plugin.now = func() time.Time { return at }
	// Ticks 10 s apart; the Gather at 29.9 s is the prompt kept while the one
	// before overran, the one at 30 s the tick.
	for _, start := range []time.Duration{0, 10 * time.Second, 20 * time.Second, 29900 * time.Millisecond, 30 * time.Second, 40 * time.Second} {
		at = fixedNow.Add(start)
		var acc testutil.Accumulator
		require.NoError(t, plugin.Gather(&acc))
	}
	failing, at = false, fixedNow.Add(50*time.Second)
	var acc testutil.Accumulator
	require.NoError(t, plugin.Gather(&acc))
	require.Empty(t, acc.Errors)
	require.Equal(t, 10, requests, "a 10 s interval's requests, a second each")
}

// Guards of the check after a short answer: its oldest millisecond, asked
// with what lies below, may return only the answer's own detections (a, b
// and c share it), which tells nothing of d below; and an honest answer
// of two in one millisecond is no lowered limit.
func TestSIEMShortAnswerInOneMillisecondIsCheckedBelowIt(t *testing.T) {
	ms := fixedNow.Add(-30 * time.Minute)
	for _, tt := range []struct {
		name     string
		maxLimit int
	}{{"lowered limit", 3}, {"honest", 0}} {
		t.Run(tt.name, func(t *testing.T) {
			sim := &oddSIEM{maxLimit: tt.maxLimit, detections: []placedDetection{
				{id: "a", at: ms.Add(900 * time.Microsecond)},
				{id: "b", at: ms.Add(500 * time.Microsecond)},
				{id: "c", at: ms.Add(200 * time.Microsecond)},
			}}
			want := map[string]int{"a": 1, "b": 1, "c": 1}
			if tt.maxLimit > 0 {
				sim.detections = append(sim.detections, placedDetection{id: "d", at: fixedNow.Add(-40 * time.Minute)})
				want["d"] = 1
			}
			logger := &testutil.CaptureLogger{}
			plugin := stubbedPlugin(t, stub(t, sim.handler(t)), logger, func(m *MicrosoftDefender) { m.PageSize = 5 })
			emitted, errs := gatherPolls(t, plugin, 2)
			require.Empty(t, errs)
			require.Equal(t, want, emitted, "queries: %q", sim.queries)
			require.Equal(t, tt.maxLimit > 0, len(logger.Warnings()) > 0, "warnings: %q", logger.Warnings())
		})
	}
}

// A lowered limit is learned for one chunk: every later poll whose window
// holds more than the service answers asks page_size again, checks below
// the short answer (a request more) and warns again. Here a detection a
// minute, page_size = 5 and a service answering 3: the same warning comes
// in every one of the five polls.
func TestSIEMLoweredLimitIsWarnedOnce(t *testing.T) {
	sim := &oddSIEM{maxLimit: 3}
	for i := range 70 {
		sim.detections = append(sim.detections, placedDetection{id: fmt.Sprintf("d%d", i), at: fixedNow.Add(time.Duration(i-60)*time.Minute + time.Second)})
	}
	logger := &testutil.CaptureLogger{}
	plugin := stubbedPlugin(t, stub(t, sim.handler(t)), logger, func(m *MicrosoftDefender) { m.PageSize = 5 })
	_, errs := gatherPolls(t, plugin, 5)
	require.Empty(t, errs)
	require.Len(t, logger.Warnings(), 1, "warnings: %q", logger.Warnings())
}

// The limit of the check below a short answer, recorded (the README says
// so): a service whose most per answer varies (5, then 3 under load) once
// answered 5, so a later first answer of 3 to page_size = 8 is below that
// and taken for the whole window unchecked: z0 and z1 are lost. Checking
// every short answer would cost a request in every poll that reads any.
func TestSIEMLimitLoweredAfterAnsweringMoreIsNotDetected(t *testing.T) {
	sim := &oddSIEM{maxLimit: 5}
	want := make(map[string]int)
	for i := range 5 {
		id := fmt.Sprintf("y%d", i)
		sim.detections = append(sim.detections, placedDetection{id: id, at: fixedNow.Add(time.Duration(-50+i) * time.Minute)})
		want[id] = 1
	}
	plugin := stubbedPlugin(t, stub(t, sim.handler(t)), &testutil.CaptureLogger{}, func(m *MicrosoftDefender) { m.PageSize = 8 })
	emitted, errs := gatherPolls(t, plugin, 1)
	require.Empty(t, errs)
	sim.mu.Lock()
	sim.maxLimit = 3
	sim.mu.Unlock()
	addProcessedLater(sim, want)
	require.Empty(t, gatherMore(t, plugin, 1, 3, emitted))
	delete(want, "z0")
	delete(want, "z1")
	require.Equal(t, want, emitted, "queries: %q", sim.queries)
}

// Held: the check after a short answer that the rate limit keeps past the
// deadline is the next poll's first request, the walk unchanged, and a
// lowered limit is walked down one request a poll, losing nothing.
func TestSIEMCheckAfterAShortAnswerResumesInTheNextPoll(t *testing.T) {
	sim := &oddSIEM{maxLimit: 3}
	want := make(map[string]int)
	for i := range 5 {
		id := fmt.Sprintf("d%d", i)
		sim.detections = append(sim.detections, placedDetection{id: id, at: fixedNow.Add(-time.Duration(50-5*i) * time.Minute)})
		want[id] = 1
	}
	plugin := stubbedPlugin(t, stub(t, sim.handler(t)), &testutil.CaptureLogger{}, func(m *MicrosoftDefender) {
		m.PageSize, m.MaxRequestsPerMinute = 5, 1
	})
	emitted, errs := gatherPolls(t, plugin, 8)
	require.Empty(t, errs)
	require.Equal(t, want, emitted, "queries: %q", sim.queries)
	require.Equal(t, []string{
		"2020-09-30T14:00:00.0000000Z 2020-09-30T15:00:00.0000000Z 5",
		"2020-09-30T14:00:00.0000000Z 2020-09-30T14:20:00.0010000Z 5", // the next poll: the check, resumed
		"2020-09-30T14:00:00.0000000Z 2020-09-30T15:00:00.0000000Z 5", // more: the window again
		"2020-09-30T14:00:00.0000000Z 2020-09-30T14:20:00.0010000Z 5",
		"2020-09-30T14:30:00.0000001Z 2020-09-30T15:00:00.0000000Z 1",
		"2020-09-30T14:00:00.0000000Z 2020-09-30T14:20:00.0000000Z 3",
		"2020-09-30T14:00:00.0000000Z 2020-09-30T14:10:00.0000000Z 3",
	}, sim.queries[:7])
}

// Held: the check after a short answer rounds its upper bound up to the
// next millisecond (a service reading the bounds so), past the window when
// it ends mid-millisecond (delay = 500 µs): a detection processed after the
// window's end in that millisecond, new to the check, is no lowered limit
// (the window read again, the check finds it a repeat).
func TestSIEMCheckAfterAShortAnswerStaysInTheWindow(t *testing.T) {
	sim := &oddSIEM{detections: []placedDetection{
		{id: "a", at: fixedNow.Add(-700 * time.Microsecond)},
		{id: "b", at: fixedNow.Add(-900 * time.Microsecond)},
		{id: "after", at: fixedNow.Add(-200 * time.Microsecond)},
	}}
	logger := &testutil.CaptureLogger{}
	plugin := stubbedPlugin(t, stub(t, sim.handler(t)), logger, func(m *MicrosoftDefender) {
		m.PageSize, m.Delay = 5, config.Duration(500*time.Microsecond)
	})
	emitted, errs := gatherPolls(t, plugin, 2)
	require.Empty(t, errs)
	require.Equal(t, map[string]int{"a": 1, "b": 1, "after": 1}, emitted, "queries: %q", sim.queries)
	require.Empty(t, logger.Warnings(), "queries: %q", sim.queries)
}
