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
	require.Equal(t, []string{"2020-09-30T14:00:00.0000000Z 2020-09-30T15:00:00.0000000Z",
		"2020-09-30T14:00:00.0000000Z 2020-09-30T14:29:59.9999999Z"}, queries, "the window, and below its answer")
	require.Equal(t, []string{"a:1"}, emittedIDs(&acc))
	lag, _ := pollMetrics(&acc)[0].GetField("lag_seconds")
	require.InDelta(t, 0.0, lag, 0)
	require.True(t, plugin.stateDirty, "the corrected position is saved")
}

// A watermark from a host clock set to 1970 is an error, and reading
// resumes at the oldest time the API keeps, not a chunk a poll from 1970.
func TestWatermarkOlderThanTheAPIKeepsIsNotWalked(t *testing.T) {
	var queries []string
	server := stub(t, func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		queries = append(queries, q.Get("sinceTimeUtc")+" "+q.Get("untilTimeUtc"))
		respond(t, w, []byte("[]"))
	})
	plugin := stubbedPlugin(t, server, &testutil.CaptureLogger{})
	plugin.cursor.watermark = time.Unix(3600, 0).UTC()

	var acc testutil.Accumulator
	require.NoError(t, plugin.Gather(&acc))
	require.Len(t, acc.Errors, 1)
	require.EqualError(t, acc.Errors[0], "the saved position 1970-01-01T01:00:00Z is older than the 180 days the API keeps alerts: "+
		"the host clock was wrong when it was saved, or the state was edited; reading on from 2020-04-03T15:00:00Z, the oldest time the API holds")
	require.Equal(t, "2020-04-03T14:50:00.0000000Z 2020-04-03T15:50:00.0000000Z", queries[0], "overlap before the oldest time")
	require.True(t, plugin.stateDirty, "the corrected position is saved")

	// A position that is merely old, after a long stop, is resumed as it is.
	plugin = stubbedPlugin(t, server, &testutil.CaptureLogger{})
	plugin.cursor.watermark, queries = fixedNow.Add(-30*24*time.Hour), nil
	var again testutil.Accumulator
	require.NoError(t, plugin.Gather(&again))
	require.Empty(t, again.Errors)
	require.Equal(t, "2020-08-31T14:50:00.0000000Z 2020-08-31T15:50:00.0000000Z", queries[0])
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
	pending := plugin.cursor.pending
	require.Equal(t, []time.Time{fixedNow.Add(-time.Hour), fixedNow, fixedNow.Add(-time.Hour), fixedNow},
		[]time.Time{pending.Start, pending.End, pending.From, pending.To})

	serverNow = fixedNow
	gatherOK(t, plugin)
	require.Equal(t, fixedNow, plugin.cursor.watermark, fmt.Sprint(plugin.cursor.pending))
}

// An initial_lookback past the 180 days the API keeps alerts was obeyed: the
// first poll read from before the API's oldest time, and the next poll
// called that position a wrong clock or an edited state. It is lowered to
// the retention, and a first chunk begun there (here left open by a failed
// poll) is read on, not reported.
func TestInitialLookbackPastTheRetentionIsLowered(t *testing.T) {
	var queries []string
	failing := true
	server := stub(t, func(w http.ResponseWriter, r *http.Request) {
		queries = append(queries, r.URL.Query().Get("sinceTimeUtc"))
		if failing {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		respond(t, w, []byte("[]"))
	})
	logger := &testutil.CaptureLogger{}
	plugin := stubbedPlugin(t, server, logger, func(m *MicrosoftDefender) {
		m.InitialLookback, m.MaxRetries = config.Duration(365*24*time.Hour), 0
	})
	require.Equal(t, []string{"W! [] initial_lookback 8760h0m0s is longer than the 180 days (4320h0m0s) the API keeps alerts: lowered to 4320h0m0s"},
		logger.Warnings())
	var first testutil.Accumulator
	require.NoError(t, plugin.Gather(&first))
	require.Len(t, first.Errors, 1, "the API failed")
	require.Equal(t, []string{"2020-04-03T15:00:00.0000000Z"}, queries, "the oldest time the API holds")

	failing, queries = false, nil
	plugin.now = func() time.Time { return fixedNow.Add(time.Minute) }
	var second testutil.Accumulator
	require.NoError(t, plugin.Gather(&second))
	require.Empty(t, second.Errors)
	require.Equal(t, "2020-04-03T15:00:00.0000000Z", queries[0], "the chunk begun is read")
}
