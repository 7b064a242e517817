package microsoft_defender

import (
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
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

// A saved position in the future is distrusted and reading starts again
// initial_lookback before now, but delivery's confirmed position stays the
// future one: a rejection goes back to it, the next poll distrusts it again
// and starts initial_lookback before ITS now, so the start of the window
// read after the reset is never read again, as on a first run before
// TestFirstRunRejectionReadsTheFirstWindowAgain's fix.
func TestFutureResetRejectionReadsTheWindowAgain(t *testing.T) {
	stateFile := filepath.Join(t.TempDir(), "state.json")
	sim := &placedSIEM{detections: []placedDetection{
		{id: "d:early", at: fixedNow.Add(-55 * time.Minute)},
		{id: "d:late", at: fixedNow.Add(-5 * time.Minute)},
	}}
	server := stub(t, sim.handler(t))
	futureState(t, server, stateFile)

	plugin, acc, _ := deliveryPlugin(t, server, stateFile)
	require.NoError(t, plugin.Gather(acc))
	require.Equal(t, []string{"d:late", "d:early"}, emittedIDs(acc))
	for _, m := range alerts(acc, 0) {
		m.Reject()
	}
	plugin.now = func() time.Time { return fixedNow.Add(10 * time.Minute) }
	before := len(acc.GetTelegrafMetrics())
	require.NoError(t, plugin.Gather(acc))
	again := make([]string, 0, 2)
	for _, m := range alerts(acc, before) {
		id, _ := m.GetField("full_id")
		again = append(again, id.(string))
	}
	require.Equal(t, []string{"d:late", "d:early"}, again, "every rejected alert is read and sent again")
}

// The same on a restart before any confirmation: the state file keeps the
// future position, and the next start reads from initial_lookback before
// its own now.
func TestFutureResetRestartBeforeAnyConfirmationReadsTheWindowAgain(t *testing.T) {
	stateFile := filepath.Join(t.TempDir(), "state.json")
	sim := &placedSIEM{detections: []placedDetection{
		{id: "d:early", at: fixedNow.Add(-55 * time.Minute)},
		{id: "d:late", at: fixedNow.Add(-5 * time.Minute)},
	}}
	server := stub(t, sim.handler(t))
	futureState(t, server, stateFile)

	plugin, acc, _ := deliveryPlugin(t, server, stateFile)
	require.NoError(t, plugin.Gather(acc))
	require.Equal(t, []string{"d:late", "d:early"}, emittedIDs(acc))
	plugin.now = func() time.Time { return fixedNow.Add(time.Minute) }
	require.NoError(t, plugin.Gather(acc)) // the output is still down
	plugin.Stop()

	restarted, again, _ := deliveryPlugin(t, server, stateFile,
		func(m *MicrosoftDefender) { m.now = func() time.Time { return fixedNow.Add(30 * time.Minute) } })
	require.NoError(t, restarted.Gather(again))
	require.Equal(t, []string{"d:late", "d:early"}, emittedIDs(again), "what no output confirmed is read again")
}
