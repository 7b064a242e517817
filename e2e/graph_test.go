//go:build e2e

package e2e

import (
	"fmt"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	simulator "github.com/sectelemetry/telegraf-defender/internal/sim"
)

// api = "graph" under a real Telegraf: every alert version of the
// simulator arrives once, with its Graph tags.
func TestGraphUnderRealTelegraf(t *testing.T) {
	sim := simulator.New(simulator.Config{TenantID: "e2e-tenant", ClientID: "e2e-client", ClientSecret: "e2e-secret",
		Seed: 5, Rate: 4, History: 90 * time.Minute})
	server := httptest.NewServer(sim.Handler())
	defer server.Close()

	a := startAgent(t, graphSection(server.URL,
		`initial_lookback = "1h"`, `delay = "0s"`, "page_size = 25", "max_requests_per_minute = 600"))

	// The first poll sees the current version of each alert: the last one
	// updated before it, or, when an update lands while Telegraf starts, a
	// later one.
	started := time.Now()
	currentSince := make(map[string]time.Time) // alert id -> lastUpdate of its version current at start
	for _, alert := range sim.AllGraph() {
		lastUpdate, err := time.Parse(time.RFC3339Nano, alert.LastUpdateDateTime)
		require.NoError(t, err)
		if lastUpdate.After(started.Add(-55*time.Minute)) && lastUpdate.Before(started) {
			currentSince[alert.ID] = lastUpdate
		}
	}
	require.NotEmpty(t, currentSince)

	// emitted counts the versions emitted, and returns for each alert the
	// newest lastUpdateDateTime emitted.
	emitted := func() (map[string]int, map[string]time.Time) {
		seen := make(map[string]int)
		newest := make(map[string]time.Time)
		for _, m := range byName(a.metrics(t), "defender_alert") {
			id, _ := m.GetField("alert_id")
			updated, _ := m.GetField("last_update_date_time")
			seen[fmt.Sprint(id)+"@"+fmt.Sprint(updated)]++
			lastUpdate, err := time.Parse(time.RFC3339Nano, fmt.Sprint(updated))
			require.NoError(t, err)
			if lastUpdate.After(newest[fmt.Sprint(id)]) {
				newest[fmt.Sprint(id)] = lastUpdate
			}
			require.Contains(t, []string{"new", "inProgress", "resolved"}, m.Tags()["status"])
			require.NotEmpty(t, m.Tags()["service_source"])
		}
		return seen, newest
	}
	waitFor(t, a, "the alerts of the last hour", func() bool {
		_, newest := emitted()
		for id, since := range currentSince {
			if newest[id].Before(since) {
				return false
			}
		}
		return true
	})
	polls := len(byName(a.metrics(t), "defender_poll"))
	waitFor(t, a, "two more polls", func() bool { return len(byName(a.metrics(t), "defender_poll")) >= polls+2 })
	a.stop(t)
	seen, _ := emitted()
	for version, n := range seen {
		require.Equal(t, 1, n, "%s emitted %d times", version, n)
	}
	for _, m := range byName(a.metrics(t), "defender_poll") {
		require.Equal(t, "graph", m.Tags()["api"])
	}
}
