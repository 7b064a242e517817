package microsoft_defender

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

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
// cost five requests where one reads them.
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
	require.Len(t, sim.queries, asked+1, "the next poll's five in one request: %q", sim.queries[asked:])
	require.True(t, strings.HasSuffix(sim.queries[asked], " 5"), "limit=page_size: %q", sim.queries[asked])
}
