package microsoft_defender

import (
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/influxdata/telegraf/testutil"
)

// A poll that emitted nothing writes no state until the position is
// overlap ahead of the saved one: a restart from the saved state repeats
// nothing and reads at most that much more, and a quiet poll costs no
// write. Alerts emitted are saved at the start of the next poll (tracked:
// once confirmed).
func TestQuietPollsWriteNoState(t *testing.T) {
	for _, tracked := range []bool{false, true} {
		t.Run(map[bool]string{false: "straight", true: "tracked"}[tracked], func(t *testing.T) {
			stateFile := filepath.Join(t.TempDir(), "defender.state")
			now := fixedNow
			clock := func(m *MicrosoftDefender) { m.now = func() time.Time { return now } }
			var plugin *MicrosoftDefender
			acc := &testutil.Accumulator{}
			if tracked {
				plugin, acc, _ = deliveryPlugin(t, detectionsServer(t, 1), stateFile, clock)
			} else {
				plugin = stubbedPlugin(t, detectionsServer(t, 1), &testutil.CaptureLogger{}, clock, func(m *MicrosoftDefender) { m.StateFile = stateFile })
				t.Cleanup(plugin.Stop)
			}
			saved := func() string {
				data, err := os.ReadFile(stateFile)
				if os.IsNotExist(err) {
					return "none"
				}
				require.NoError(t, err)
				var s pluginState
				require.NoError(t, json.Unmarshal(data, &s))
				return s.Watermark.Sub(fixedNow).String()
			}
			var writes []string
			for range 62 { // ten minutes and ten seconds, a poll every ten seconds
				before := len(acc.GetTelegrafMetrics())
				require.NoError(t, plugin.Gather(acc))
				require.Empty(t, acc.Errors)
				for _, m := range acc.GetTelegrafMetrics()[before:] {
					m.Accept() // the outputs took it
				}
				if len(writes) == 0 || writes[len(writes)-1] != saved() {
					writes = append(writes, saved())
				}
				now = now.Add(10 * time.Second)
			}
			require.Len(t, emittedIDs(acc), 1)
			// After the first poll (which emitted), after the one of ten minutes.
			require.Equal(t, []string{"none", "0s", "10m0s"}, writes)
		})
	}
}

// A first poll that read nothing still saves where it began, so that a
// start much later reads from there, not from its own initial_lookback.
func TestFirstPollSavesWhereItBegan(t *testing.T) {
	server := stub(t, func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusBadRequest) })
	path := filepath.Join(t.TempDir(), "defender.state")
	plugin := stubbedPlugin(t, server, &testutil.CaptureLogger{}, func(m *MicrosoftDefender) { m.StateFile = path })
	var acc testutil.Accumulator
	require.NoError(t, plugin.Gather(&acc))
	require.Len(t, acc.Errors, 1)
	plugin.Stop()
	data, err := os.ReadFile(path)
	require.NoError(t, err)
	var s pluginState
	require.NoError(t, json.Unmarshal(data, &s))
	require.NotNil(t, s.Pending)
	require.Equal(t, fixedNow.Add(-time.Hour), s.Pending.Start)
}
