//go:build e2e

package e2e

import (
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	simulator "github.com/sectelemetry/telegraf-defender/internal/sim"
)

// incidentSection is graphSection for Graph security incidents.
func incidentSection(url, secret string, keys ...string) string {
	return pluginSection(fmt.Sprintf("  api = \"graph_incidents\"\n  endpoint_url = \"%[1]s/v1.0/security/incidents\"\n"+
		"  login_endpoint = \"%[1]s\"\n  scopes = [\"https://graph.microsoft.com/.default\"]\n", url), secret, keys)
}

// incidentQueries parts the dashboard's queries into those of the incident
// panels and the others.
func incidentQueries(queries []string) (incidents, others []string) {
	for _, q := range queries {
		if strings.Contains(q, `"defender_incident`) {
			incidents = append(incidents, q)
		} else {
			others = append(others, q)
		}
	}
	return incidents, others
}

// currentIncidents returns the version of each incident the simulator
// serves at its clock's time, by graphVersion.
func currentIncidents(sim *simulator.Server) map[string]simulator.GraphIncident {
	latest := make(map[string]simulator.GraphIncident)
	for _, in := range sim.AllIncidents() { // oldest first
		latest[in.ID] = in
	}
	current := make(map[string]simulator.GraphIncident, len(latest))
	for _, in := range latest {
		current[graphVersion(in.ID, in.LastUpdateDateTime)] = in
	}
	return current
}

// Built into Telegraf with a default [agent], a section reading the
// simulator's incidents into InfluxDB: every incident version the simulator
// served is its own point, with its alerts; the counts add up to them; the
// open incidents panel, its query and its transformations as Grafana
// applies them, shows the simulator's open incidents; and every query of
// the incident panels returns rows.
func TestInTreeIncidentsIntoInfluxDB(t *testing.T) {
	t.Parallel()
	db := startInfluxDB(t)
	clock := &simClock{now: time.Now().Add(-simBehind)}
	sim := simulator.New(simulator.Config{TenantID: "e2e-tenant", ClientID: "e2e-client", ClientSecret: "e2e-secret",
		Seed: 53, Rate: 4, History: 3 * time.Hour, Now: clock.Now})
	server := httptest.NewServer(sim.Handler())
	t.Cleanup(server.Close)

	a := startInTree(t, t.TempDir(), "telegraf", "\n[agent]\n"+
		incidentSection(server.URL, "e2e-secret", `delay = "0s"`, `initial_lookback = "4h"`)+fmt.Sprintf(`
[[outputs.influxdb]]
  urls = [%q]
  database = "defender"
`, db.url))
	settled := func(since time.Time) func() bool {
		return func() bool {
			return len(db.queryIfExists(t, fmt.Sprintf(`SELECT "requests" FROM "defender_poll" WHERE "backlog" = false AND time > %d`,
				since.UnixNano()))) > 0
		}
	}
	waitFor(t, a, "the incidents of the simulator's three hours", settled(time.Time{}))
	// The simulator's time jumps to now: new incidents, and updates,
	// assignments and redirects of older ones, appear at once.
	versions := currentIncidents(sim)
	moved := time.Now()
	clock.Set(moved)
	for version, in := range currentIncidents(sim) {
		versions[version] = in
	}
	waitFor(t, a, "what appeared", settled(moved))
	waitFor(t, a, "the counts to add up", func() bool { return db.countsAddUp(t, "defender_incident", "incident_id") })
	a.stop(t)

	statuses := make(map[string]int)
	withAlerts := 0
	for _, in := range versions {
		statuses[in.Status]++
		withAlerts += len(in.AlertIDs)
	}
	for _, status := range []string{"active", "inProgress", "resolved", "redirected"} {
		require.Positive(t, statuses[status], "the simulator served no %s incident", status)
	}
	// Every version a point of its own, with its alerts expanded.
	points := db.query(t, "defender", `SELECT count("incident_id"), sum("alert_count") FROM "defender_incident"`)
	require.Len(t, points, 1)
	require.Equal(t, []any{float64(len(versions)), float64(withAlerts)}, points[0].Values[0][1:])
	counts := db.query(t, "defender", `SELECT sum("count") FROM "defender_incident_count"`)
	require.Len(t, counts, 1)
	require.Equal(t, len(versions), int(counts[0].Values[0][1].(float64)))

	dashboard, err := os.ReadFile(filepath.Join("..", "dashboards", "defender-influxdb.json"))
	require.NoError(t, err)
	queries, _ := incidentQueries(dashboardQueries(t, dashboard))
	require.Len(t, queries, 4)
	for _, q := range queries {
		// Grafana's macros, as Grafana expands them for "the last day".
		q = strings.NewReplacer("$timeFilter", "time > now() - 1d", "$__interval", "1m").Replace(q)
		rows := 0
		for _, s := range db.query(t, "defender", q) {
			rows += len(s.Values)
		}
		require.Positive(t, rows, "the dashboard query returned no rows: %s", q)
	}

	// The open incidents panel: the rows of its query, each incident's
	// latest by last_update_date_time, active or inProgress, counted by
	// severity and status, equal the simulator's.
	want := make(map[string]int)
	latest := make(map[string]simulator.GraphIncident)
	for _, in := range versions {
		if prev, ok := latest[in.ID]; !ok || parseTime(t, in.LastUpdateDateTime).After(parseTime(t, prev.LastUpdateDateTime)) {
			latest[in.ID] = in
		}
	}
	for _, in := range latest {
		if in.Status == "active" || in.Status == "inProgress" {
			want[in.Severity+"|"+in.Status]++
		}
	}
	rows := db.query(t, "defender", strings.ReplaceAll(queries[0], "$timeFilter", "time > now() - 1d"))
	require.Len(t, rows, 1)
	column := func(name string) int { return slices.Index(rows[0].Columns, name) }
	values := rows[0].Values
	slices.SortStableFunc(values, func(x, y []any) int {
		return parseTime(t, x[column("last_update_date_time")].(string)).Compare(parseTime(t, y[column("last_update_date_time")].(string)))
	})
	last := make(map[string][]any)
	for _, v := range values {
		last[v[column("incident_id")].(string)] = v
	}
	got := make(map[string]int)
	for _, v := range last {
		if status := v[column("status")].(string); status == "active" || status == "inProgress" {
			got[v[column("severity")].(string)+"|"+status]++
		}
	}
	require.NotEmpty(t, want)
	require.Equal(t, want, got)
}

func parseTime(t *testing.T, s string) time.Time {
	t.Helper()
	at, err := time.Parse(time.RFC3339Nano, s)
	require.NoError(t, err)
	return at
}
