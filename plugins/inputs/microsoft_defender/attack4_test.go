package microsoft_defender

import (
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

// A batch the outputs confirmed behind one they have not is confirmed all
// the same: a restart reads again only the unconfirmed, and counts nothing
// twice. (Two outputs, or a retrying one, confirm groups out of order.)
func TestConfirmedBehindAnUnconfirmedBatchIsNotRepeated(t *testing.T) {
	stateFile := filepath.Join(t.TempDir(), "state.json")
	server := detectionsServer(t, 3)
	plugin, acc, _ := deliveryPlugin(t, server, stateFile, func(m *MicrosoftDefender) { m.PageSize = 1 })
	require.NoError(t, plugin.Gather(acc))
	require.Equal(t, []string{"d:2", "d:1", "d:0"}, emittedIDs(acc), "one batch an answer")
	sent := alerts(acc, 0)
	sent[1].Accept() // d:1 confirmed, d:2 before it and d:0 after it not yet
	plugin.Stop()
	var counted int64
	for _, m := range counts(acc, 0) {
		counted += m.Fields()["count"].(int64)
	}
	require.Equal(t, int64(1), counted, "d:1 counted at the stop")

	restarted, again, _ := deliveryPlugin(t, server, stateFile)
	require.NoError(t, restarted.Gather(again))
	require.Equal(t, []string{"d:2", "d:0"}, emittedIDs(again), "d:1 was confirmed: not sent, nor counted, again")
}
