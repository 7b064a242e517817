package microsoft_defender

import (
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/influxdata/telegraf/config"
	"github.com/influxdata/telegraf/testutil"

	simulator "github.com/sectelemetry/telegraf-defender/internal/sim"
)

// A host clock a day ahead for three polls, then set right: the windows
// end at the API's time (its Date header), so the watermark never passes
// what the API has processed, and every detection arrives once.
func TestScenarioHostClockAheadOfTheAPI(t *testing.T) {
	s := newScenario(t, simulator.Config{Seed: 7, Rate: 12, History: 3 * time.Hour})
	p := s.plugin(nil)
	start := s.firstWindowStart(p)
	s.run(p, 10*pollInterval)
	p.now = func() time.Time { return s.clock.Add(24 * time.Hour) }
	s.run(p, 3*pollInterval)
	require.LessOrEqual(t, p.cursor.watermark, s.clock.Add(-time.Duration(p.Delay)+time.Second),
		"the watermark is not beyond the API's time")
	require.Contains(t, s.logger.Warnings()[0], "The host clock runs 24h0m0s ahead of the API's (Date: ")

	p.now = func() time.Time { return s.clock }
	s.run(p, 3*time.Hour)
	s.settled(p, start, 0)
}

// A watermark in the future, from a state file or a clock that ran ahead,
// is an error and is read again from initial_lookback, not obeyed.
func TestFutureWatermarkIsNotBelieved(t *testing.T) {
	var queries []string
	server := stub(t, func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		queries = append(queries, q.Get("sinceTimeUtc")+" "+q.Get("untilTimeUtc"))
		respond(t, w, []byte("["+detectionJSON("a:1", "2020-09-30T14:30:00Z")+"]"))
	})
	plugin := stubbedPlugin(t, server, &testutil.CaptureLogger{})
	plugin.cursor.watermark = time.Date(2099, 1, 1, 0, 0, 0, 0, time.UTC)

	var acc testutil.Accumulator
	require.NoError(t, plugin.Gather(&acc))
	require.Len(t, acc.Errors, 1)
	require.EqualError(t, acc.Errors[0], "the saved position 2099-01-01T00:00:00Z lies after now (2020-09-30T15:00:00Z): "+
		"the host clock ran ahead when it was saved, or the state was edited; reading again from initial_lookback (1h0m0s) before now, "+
		"detections already emitted in that stretch are dropped as duplicates where still remembered")
	require.Equal(t, []string{"2020-09-30T13:59:00.0000000Z 2020-09-30T14:59:00.0000000Z"}, queries)
	require.Equal(t, []string{"a:1"}, emittedIDs(&acc))
	lag, _ := pollMetrics(&acc)[0].GetField("lag_seconds")
	require.InDelta(t, 60.0, lag, 0)
	require.True(t, plugin.stateDirty, "the corrected position is saved")
}

// A watermark a little ahead, within the skew a clock may have, is kept,
// and the lag is never negative.
func TestSlightlyFutureWatermarkIsKept(t *testing.T) {
	server := stub(t, func(w http.ResponseWriter, _ *http.Request) {
		t.Error("no request: the window is read")
		respond(t, w, []byte("[]"))
	})
	plugin := stubbedPlugin(t, server, &testutil.CaptureLogger{})
	plugin.cursor.watermark = fixedNow.Add(30 * time.Second)
	acc := gatherOK(t, plugin)
	lag, _ := pollMetrics(acc)[0].GetField("lag_seconds")
	require.InDelta(t, 0.0, lag, 0)
}

// An API whose time lies before the chunk's start leaves the chunk open:
// it is read whole again once the API's time has passed.
func TestChunkAfterTheAPIsTimeStaysOpen(t *testing.T) {
	serverNow := fixedNow.Add(-2 * time.Hour)
	server := stub(t, func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Date", serverNow.Format(http.TimeFormat))
		respond(t, w, []byte("[]"))
	})
	plugin := stubbedPlugin(t, server, &testutil.CaptureLogger{})
	gatherOK(t, plugin)
	require.True(t, plugin.cursor.watermark.IsZero())
	require.Equal(t, &span{Start: fixedNow.Add(-61 * time.Minute), End: fixedNow.Add(-time.Minute),
		From: fixedNow.Add(-61 * time.Minute), To: fixedNow.Add(-time.Minute)}, plugin.cursor.pending)

	serverNow = fixedNow
	gatherOK(t, plugin)
	require.Equal(t, fixedNow.Add(-time.Minute), plugin.cursor.watermark, fmt.Sprint(plugin.cursor.pending))
}

// The same for Graph, whose walk pages upward and forgets what it passed:
// with the host clock ahead, what it forgets stops at the API's time, so
// the next window repeats nothing.
func TestScenarioGraphHostClockAheadOfTheAPI(t *testing.T) {
	s := newScenario(t, simulator.Config{Seed: 17, Rate: 110})
	configure := func(m *MicrosoftDefender) {
		m.PageSize = 100
		m.InitialLookback = config.Duration(time.Minute)
		m.MaxRequestsPerMinute = 600
	}
	p := s.graphPlugin(configure)
	s.run(p, 5*pollInterval)
	p.now = func() time.Time { return s.clock.Add(10 * time.Minute) }
	s.run(p, 5*pollInterval)
	p.now = func() time.Time { return s.clock }
	s.run(p, 10*pollInterval)
	require.NotEmpty(t, s.emitted)
	for version, n := range s.emitted {
		require.Equal(t, 1, n, "%s emitted %d times", version, n)
	}
}
