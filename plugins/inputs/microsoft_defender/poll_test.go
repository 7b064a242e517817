package microsoft_defender

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/influxdata/telegraf"
	"github.com/influxdata/telegraf/metric"
	"github.com/influxdata/telegraf/testutil"
)

func pollMetrics(acc *testutil.Accumulator) []telegraf.Metric {
	var out []telegraf.Metric
	for _, m := range acc.GetTelegrafMetrics() {
		if m.Name() == measurementPoll {
			out = append(out, m)
		}
	}
	return out
}

func expectedPoll(status string, s pollStats, lag time.Duration) telegraf.Metric {
	return metric.New(measurementPoll, map[string]string{"api": "siem", "status": status}, map[string]interface{}{
		"requests":           s.requests,
		"alerts_received":    s.received,
		"alerts_emitted":     s.emitted,
		"duplicates_dropped": s.duplicates,
		"outside_window":     s.outside,
		"errors":             s.errors,
		"lag_seconds":        lag.Seconds(),
		"backlog":            s.backlog,
	}, fixedNow)
}

// The poll metric tells what each poll did: here a budget of 2 over a
// window of 3 detections, then the rest with one duplicate from the
// overlap, then a request that fails after one new detection.
func TestPollMetric(t *testing.T) {
	var responses []string
	server := stub(t, func(w http.ResponseWriter, _ *http.Request) {
		body := responses[0]
		responses = responses[1:]
		respond(t, w, []byte(body))
	})
	plugin := stubbedPlugin(t, server, &testutil.CaptureLogger{})
	plugin.MaxAlertsPerGather = 2
	a := detectionJSON("a:1", "2020-09-30T14:10:00Z")
	b := detectionJSON("a:2", "2020-09-30T14:20:00Z")
	c := detectionJSON("a:3", "2020-09-30T14:30:00Z")
	d := detectionJSON("a:4", "2020-09-30T14:40:00Z")

	// The newest two fill the budget: a backlog remains.
	responses = []string{"[" + b + "," + c + "]"}
	acc := gatherOK(t, plugin)
	want := expectedPoll("partial", pollStats{requests: 1, received: 2, emitted: 2, backlog: true}, time.Hour+time.Minute)
	testutil.RequireMetricsEqual(t, []telegraf.Metric{want},
		pollMetrics(acc), testutil.IgnoreFields("duration_ms"))
	require.Equal(t, []string{"a:2", "a:3"}, emittedIDs(acc))

	// The rest of the span: a and b again (a duplicate); a full answer, so
	// the span below a is asked for too, which holds only a.
	responses = []string{"[" + a + "," + b + "]", "[" + a + "]"}
	acc = gatherOK(t, plugin)
	testutil.RequireMetricsEqual(t, []telegraf.Metric{expectedPoll("ok", pollStats{requests: 2, received: 3, emitted: 1, duplicates: 2}, time.Minute)},
		pollMetrics(acc), testutil.IgnoreFields("duration_ms"))
	require.Equal(t, []string{"a:1"}, emittedIDs(acc))

	// A new window whose answer breaks off after one new detection.
	plugin.now = func() time.Time { return fixedNow.Add(time.Hour) }
	responses = []string{"[" + d + `,{"AlertTitle":5}]`}
	var failed testutil.Accumulator
	require.NoError(t, plugin.Gather(&failed))
	require.Len(t, failed.Errors, 1)
	require.True(t, strings.HasPrefix(failed.Errors[0].Error(), "reading the SIEM API answer from"))
	expected := expectedPoll("partial", pollStats{requests: 1, received: 1, emitted: 1, errors: 1, backlog: true}, time.Hour+time.Minute)
	expected.SetTime(fixedNow.Add(time.Hour))
	testutil.RequireMetricsEqual(t, []telegraf.Metric{expected}, pollMetrics(&failed), testutil.IgnoreFields("duration_ms"))
}
