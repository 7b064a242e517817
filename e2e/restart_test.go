//go:build e2e

package e2e

import (
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	simulator "github.com/sectelemetry/telegraf-defender/internal/sim"
)

// children returns the pids of a process's children (Linux /proc).
func children(t *testing.T, pid int) []int {
	t.Helper()
	tasks, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", pid))
	require.NoError(t, err)
	var out []int
	for _, task := range tasks {
		data, err := os.ReadFile(task)
		if err != nil {
			continue // the thread ended meanwhile
		}
		for _, field := range strings.Fields(string(data)) {
			child, err := strconv.Atoi(field)
			require.NoError(t, err)
			out = append(out, child)
		}
	}
	return out
}

// Killing bin/telegraf-defender with SIGKILL in the middle of a backfill:
// execd restarts it, it resumes from its state file, nothing is lost and
// at most one poll is repeated.
func TestSIGKILLDuringBackfill(t *testing.T) {
	const budget = 1000
	sim := simulator.New(simulator.Config{
		TenantID: "e2e-tenant", ClientID: "e2e-client", ClientSecret: "e2e-secret",
		Seed: 21, Rate: 20, History: 3 * time.Hour,
	})
	server := httptest.NewServer(sim.Handler())
	defer server.Close()
	stateFile := filepath.Join(t.TempDir(), "defender.state")

	a := startAgent(t, siemSection(server.URL, "e2e-secret", `initial_lookback = "3h"`, `max_window = "30m"`, `delay = "0s"`,
		fmt.Sprintf("max_alerts_per_gather = %d", budget), fmt.Sprintf("state_file = %q", stateFile),
		// At the default 60, polls of a second each find the rate limit's
		// minute full for most of the backfill: this test is about the kill.
		"max_requests_per_minute = 600"))

	alerts := func() map[string]int {
		seen := make(map[string]int)
		for _, m := range byName(a.metrics(t), "defender_alert") {
			id, _ := m.GetField("full_id")
			seen[id.(string)]++
		}
		return seen
	}
	total := func(seen map[string]int) (n int) {
		for _, c := range seen {
			n += c
		}
		return n
	}

	waitFor(t, a, "a few polls of the backfill", func() bool { return total(alerts()) >= 3*budget })
	victims := children(t, a.cmd.Process.Pid)
	require.Len(t, victims, 1, "telegraf runs one telegraf-defender")
	require.NoError(t, syscall.Kill(victims[0], syscall.SIGKILL))
	waitFor(t, a, "execd to restart the plugin", func() bool {
		now := children(t, a.cmd.Process.Pid)
		return len(now) == 1 && now[0] != victims[0]
	})

	// The backfill is done once a poll reports no backlog after the restart.
	killedAt := time.Now()
	waitFor(t, a, "the backfill to finish", func() bool {
		for _, m := range byName(a.metrics(t), "defender_poll") {
			if backlog, ok := m.GetField("backlog"); ok && !backlog.(bool) && m.Time().After(killedAt) {
				return true
			}
		}
		return false
	})
	a.stop(t)

	emitted := alerts()
	// The first poll's window starts initial_lookback before that poll.
	polls := byName(a.metrics(t), "defender_poll")
	require.NotEmpty(t, polls)
	windowStart := polls[0].Time().Add(-3 * time.Hour)
	var missing []string
	for _, d := range sim.All() {
		lpt, err := time.Parse(time.RFC3339Nano, d.LastProcessedTimeUtc)
		require.NoError(t, err)
		if !lpt.Before(windowStart) && lpt.Before(killedAt) && emitted[d.FullID] == 0 {
			missing = append(missing, d.LastProcessedTimeUtc+" "+d.FullID)
		}
	}
	require.Empty(t, missing, "detections lost")
	var repeated int
	for _, n := range emitted {
		require.LessOrEqual(t, n, 2)
		repeated += n - 1
	}
	require.LessOrEqual(t, repeated, budget, "at most one poll is repeated")
	t.Logf("%d detections emitted, %d repeated after the kill", len(emitted), repeated)
}
