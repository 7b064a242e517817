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

// A poll that emitted nothing writes no state until its watermark is
// overlap ahead of the saved one: a restart from the saved state repeats
// nothing and reads at most that much more, and a quiet poll costs no
// write. A poll that emitted is saved at the start of the next.
func TestQuietPollsWriteNoState(t *testing.T) {
	body := "[" + detectionJSON("a:1", "2020-09-30T14:30:00Z") + "]"
	server := stub(t, func(w http.ResponseWriter, _ *http.Request) {
		respond(t, w, []byte(body))
		body = "[]"
	})
	stateFile := filepath.Join(t.TempDir(), "defender.state")
	now := fixedNow
	plugin := stubbedPlugin(t, server, &testutil.CaptureLogger{}, func(m *MicrosoftDefender) {
		m.StateFile = stateFile
		m.now = func() time.Time { return now }
	})
	defer plugin.Stop()
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
		gatherOK(t, plugin)
		if len(writes) == 0 || writes[len(writes)-1] != saved() {
			writes = append(writes, saved())
		}
		now = now.Add(10 * time.Second)
	}
	// After the first poll (which emitted), after the one of ten minutes.
	require.Equal(t, []string{"none", "0s", "10m0s"}, writes)
}
