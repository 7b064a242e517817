package microsoft_defender

import (
	"encoding/json"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/influxdata/telegraf"
	"github.com/influxdata/telegraf/metric"
	"github.com/influxdata/telegraf/testutil"
)

// detectionsServer serves n detections, d:0 to d:n-1, one every ten
// seconds up to two minutes ago.
func detectionsServer(t *testing.T, n int) *httptest.Server {
	sim := &placedSIEM{}
	for i := range n {
		at := fixedNow.Add(-2*time.Minute - time.Duration(n-i)*10*time.Second)
		sim.detections = append(sim.detections, placedDetection{id: "d:" + strconv.Itoa(i), at: at})
	}
	return stub(t, sim.handler(t))
}

// deliveryPlugin reads server through Start's tracking accumulator, saving
// its state in stateFile.
func deliveryPlugin(t *testing.T, server *httptest.Server, stateFile string, configure ...func(*MicrosoftDefender)) (
	*MicrosoftDefender, *testutil.Accumulator, *testutil.CaptureLogger) {
	t.Helper()
	logger := &testutil.CaptureLogger{}
	plugin := stubbedPlugin(t, server, logger, append([]func(*MicrosoftDefender){func(m *MicrosoftDefender) {
		m.StateFile = stateFile
	}}, configure...)...)
	acc := &testutil.Accumulator{}
	require.NoError(t, plugin.Start(acc))
	t.Cleanup(plugin.Stop)
	return plugin, acc, logger
}

// named returns the metrics called name that acc holds, from the i-th metric on.
func named(acc *testutil.Accumulator, from int, name string) []telegraf.Metric {
	var out []telegraf.Metric
	for _, m := range acc.GetTelegrafMetrics()[from:] {
		if m.Name() == name {
			out = append(out, m)
		}
	}
	return out
}

// alerts returns the defender_alert metrics acc holds, from the i-th metric on.
func alerts(acc *testutil.Accumulator, from int) []telegraf.Metric {
	return named(acc, from, measurementAlert)
}

// counts returns the defender_alert_count metrics acc holds, from the i-th metric on.
func counts(acc *testutil.Accumulator, from int) []telegraf.Metric {
	return named(acc, from, measurementCount)
}

func savedState(t *testing.T, plugin *MicrosoftDefender) pluginState {
	t.Helper()
	data, err := os.ReadFile(plugin.StateFile)
	require.NoError(t, err)
	var s pluginState
	require.NoError(t, json.Unmarshal(data, &s))
	return s
}

// Alerts an output rejected are read and sent again, as the same points,
// and the state file holds them only once an output took them. They are
// counted once, when confirmed.
func TestRejectedAlertsAreReadAgain(t *testing.T) {
	plugin, acc, logger := deliveryPlugin(t, detectionsServer(t, 3), filepath.Join(t.TempDir(), "state.json"))
	require.NoError(t, plugin.Gather(acc))
	first := alerts(acc, 0)
	require.Len(t, first, 3)
	require.Empty(t, counts(acc, 0), "nothing confirmed, nothing counted")
	for _, m := range first {
		m.Reject()
	}

	plugin.now = func() time.Time { return fixedNow.Add(time.Minute) }
	before := len(acc.GetTelegrafMetrics())
	require.NoError(t, plugin.Gather(acc))
	require.Contains(t, logger.Warnings(),
		"W! [] An output did not take 3 alerts (rejected, or dropped from Telegraf's full buffer): reading them again")
	state := savedState(t, plugin)
	require.True(t, state.Watermark.IsZero(), "nothing was confirmed")
	require.Empty(t, state.Seen)
	again := alerts(acc, before)
	testutil.RequireMetricsEqual(t, first, again, testutil.SortMetrics())
	require.Empty(t, counts(acc, before), "the rejected alerts are not counted")

	for _, m := range again {
		m.Accept()
	}
	plugin.now = func() time.Time { return fixedNow.Add(2 * time.Minute) }
	before = len(acc.GetTelegrafMetrics())
	require.NoError(t, plugin.Gather(acc))
	require.Empty(t, alerts(acc, before), "confirmed alerts are not sent again")
	now := fixedNow.Add(2 * time.Minute)
	testutil.RequireMetricsEqual(t, []telegraf.Metric{
		metric.New(measurementCount, map[string]string{"severity": "high", "category": "Malware"}, map[string]interface{}{"count": int64(3)},
			eventTime(now, now.Format(time.RFC3339Nano))),
	}, counts(acc, before))
	state = savedState(t, plugin)
	require.Equal(t, fixedNow.Add(time.Minute), state.Watermark, "the end of the confirmed poll's window")
	require.Len(t, state.Seen, 3)
}

// Without confirmations the plugin stops reading at max_undelivered_alerts
// (with one answer more), and reads on once an output took them; a restart
// reads again exactly what was not confirmed.
func TestUndeliveredAlertsAreBounded(t *testing.T) {
	stateFile := filepath.Join(t.TempDir(), "state.json")
	server := detectionsServer(t, 10)
	plugin, acc, _ := deliveryPlugin(t, server, stateFile, func(m *MicrosoftDefender) { m.MaxUndeliveredAlerts = 4 })
	// A short interval: the wait for room ends at the poll's deadline.
	plugin.lastGather = fixedNow.Add(-10 * time.Millisecond)
	require.NoError(t, plugin.Gather(acc))
	sent := alerts(acc, 0)
	require.Equal(t, []string{"d:9", "d:8", "d:7", "d:6"}, emittedIDs(acc), "two requests of max_undelivered_alerts / 2")
	requirePollStatus(t, acc, "partial")

	for _, m := range sent {
		m.Accept()
	}
	plugin.now = func() time.Time { return fixedNow.Add(time.Minute) }
	plugin.lastGather = fixedNow.Add(time.Minute - 10*time.Millisecond)
	before := len(acc.GetTelegrafMetrics())
	require.NoError(t, plugin.Gather(acc))
	sent = alerts(acc, before) // never confirmed
	ids := make([]string, 0, len(sent))
	for _, m := range sent {
		id, _ := m.GetField("full_id")
		ids = append(ids, id.(string))
	}
	require.Equal(t, []string{"d:5", "d:4", "d:3", "d:2"}, ids)
	plugin.Stop()

	restarted, again, _ := deliveryPlugin(t, server, stateFile)
	require.NoError(t, restarted.Gather(again))
	require.Equal(t, []string{"d:5", "d:4", "d:3", "d:2", "d:1", "d:0"}, emittedIDs(again))
}

// After an output did not take a batch, as when Telegraf's buffer is
// smaller than max_undelivered_alerts, half as many may be in flight; the
// limit grows back as outputs confirm.
func TestInFlightLimitHalvesAfterARejection(t *testing.T) {
	plugin, acc, _ := deliveryPlugin(t, detectionsServer(t, 40), filepath.Join(t.TempDir(), "state.json"),
		func(m *MicrosoftDefender) { m.MaxUndeliveredAlerts = 16 })
	plugin.lastGather = fixedNow.Add(-10 * time.Millisecond)
	require.NoError(t, plugin.Gather(acc))
	first := alerts(acc, 0)
	require.Len(t, first, 22, "answers of 8 until 16 are in flight, the oldest of each repeated")
	for _, m := range first {
		m.Reject()
	}
	plugin.now = func() time.Time { return fixedNow.Add(time.Minute) }
	plugin.lastGather = fixedNow.Add(time.Minute - 10*time.Millisecond)
	before := len(acc.GetTelegrafMetrics())
	require.NoError(t, plugin.Gather(acc))
	require.Equal(t, 8, plugin.delivery.limit)
	sent := alerts(acc, before)
	require.Len(t, sent, 10, "answers of 4 until 8 are in flight")
	for _, m := range sent {
		m.Accept()
	}
	plugin.delivery.drain()
	require.Equal(t, 11, plugin.delivery.limit, "one more per confirmed batch of fewer than 16")
}

// Alerts the outputs leave unconfirmed for five minutes (an output is down,
// or refuses a document of them) are warned of, at most every five
// minutes, and counted in defender_poll.
func TestUnconfirmedAlertsAreWarnedOf(t *testing.T) {
	plugin, acc, logger := deliveryPlugin(t, detectionsServer(t, 3), filepath.Join(t.TempDir(), "state.json"))
	unconfirmed := func(from int) []any {
		var out []any
		for _, m := range acc.GetTelegrafMetrics()[from:] {
			if v, ok := m.GetField("alerts_unconfirmed"); ok {
				out = append(out, v)
			}
		}
		return out
	}
	warning := "W! [] The outputs have not confirmed the alerts sent at 2020-09-30T15:00:00Z (3 alerts unconfirmed): " +
		"an output is down, or refuses a document of them; reading pauses at max_undelivered_alerts and goes on once they are confirmed, nothing is lost"
	before := 0
	for _, step := range []struct {
		after    time.Duration
		warnings int
		accept   bool
	}{
		{0, 0, false}, {4 * time.Minute, 0, false}, {6 * time.Minute, 1, false}, {9 * time.Minute, 1, false}, {11 * time.Minute, 2, true},
		{12 * time.Minute, 2, false},
	} {
		plugin.now = func() time.Time { return fixedNow.Add(step.after) }
		require.NoError(t, plugin.Gather(acc))
		require.Len(t, alerts(acc, 0), 3, "sent once")
		want := int64(3)
		if step.after == 12*time.Minute {
			want = 0
		}
		require.Equal(t, []any{want}, unconfirmed(before), "after %s", step.after)
		var stalls []string
		for _, w := range logger.Warnings() {
			if strings.HasPrefix(w, "W! [] The outputs have not confirmed") {
				stalls = append(stalls, w)
			}
		}
		require.Len(t, stalls, step.warnings, "after %s", step.after)
		if len(stalls) > 0 {
			require.Equal(t, warning, stalls[len(stalls)-1])
		}
		if step.accept {
			for _, m := range alerts(acc, 0) {
				m.Accept()
			}
		}
		before = len(acc.GetTelegrafMetrics())
	}
}
