//go:build e2e

package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	simulator "github.com/sectelemetry/telegraf-defender/internal/sim"
)

// Built into Telegraf, a section reading the simulator's incidents into
// OpenSearch through the template and the pipeline, killed right after a
// poll and started again from its state file: every incident version the
// simulator served is one document, however often it was written; the
// README's incident state holds each incident once, at the simulator's
// current version, a merged one redirected with the incident it went into.
func TestOpenSearchIncidents(t *testing.T) {
	node := startOpenSearch(t)
	node.install(t)
	clock := &simClock{now: time.Now().Add(-simBehind)}
	sim := simulator.New(simulator.Config{TenantID: "e2e-tenant", ClientID: "e2e-client", ClientSecret: "e2e-secret",
		Seed: 59, Rate: 4, History: 3 * time.Hour, Now: clock.Now})
	server := httptest.NewServer(sim.Handler())
	t.Cleanup(server.Close)

	dir := t.TempDir()
	conf := "\n[agent]\n" + incidentSection(server.URL, "e2e-secret", `delay = "0s"`, `initial_lookback = "4h"`,
		fmt.Sprintf("state_file = %q", filepath.Join(dir, "defender.state"))) +
		opensearchOutput(node.url, `"defender-incidents"`, "defender-ecs", "  force_document_id = true\n")
	settled := func(a *agent, since time.Time) func() bool {
		return func() bool {
			for _, m := range byName(a.metrics(t), "defender_poll") {
				if backlog, ok := m.GetField("backlog"); ok && !backlog.(bool) && m.Time().After(since) {
					return true
				}
			}
			return false
		}
	}
	a := startInTree(t, dir, "telegraf", conf)
	waitFor(t, a, "the incidents of the simulator's three hours", settled(a, time.Time{}))
	versions := currentIncidents(sim)
	// The simulator's time jumps to now; Telegraf dies right after the
	// next poll, whatever its outputs had confirmed, and starts again.
	moved := time.Now()
	clock.Set(moved)
	for version, in := range currentIncidents(sim) {
		versions[version] = in
	}
	waitFor(t, a, "a poll of what appeared", func() bool {
		polls := byName(a.metrics(t), "defender_poll")
		return len(polls) > 0 && polls[len(polls)-1].Time().After(moved)
	})
	require.NoError(t, a.cmd.Process.Kill())
	a.cmd.Wait() //nolint:errcheck // killed
	again := startInTree(t, dir, "telegraf-again", conf)
	waitFor(t, again, "what appeared, after the restart", settled(again, moved))
	again.stop(t)
	written := len(byName(a.metrics(t), "defender_incident")) + len(byName(again.metrics(t), "defender_incident"))
	t.Logf("%d incident versions, %d written", len(versions), written)

	// Every version one document, with the ECS fields of an incident.
	node.request(t, http.MethodPost, "/defender-*/_refresh", nil)
	docs := hits(t, node.search(t, "defender-incidents", `{"size": 10000, "track_total_hits": true,
  "query": {"term": {"measurement_name": "defender_incident"}}}`))
	require.Less(t, len(docs), 10000)
	got := make(map[string]int, len(docs))
	for _, h := range docs {
		doc := h["_source"].(map[string]any)
		id, _ := dig(doc, "defender_incident", "incident_id").(string)
		updated, _ := dig(doc, "defender_incident", "last_update_date_time").(string)
		got[graphVersion(id, updated)]++
		require.Nil(t, h["_ignored"], "%v", doc)
		require.Equal(t, "event", dig(doc, "event", "kind"), "%v", doc)
		require.Equal(t, id, dig(doc, "event", "id"))
		require.Equal(t, dig(doc, "defender_incident", "created_date_time"), dig(doc, "event", "created"))
		require.Equal(t, dig(doc, "defender_incident", "display_name"), dig(doc, "message"))
		require.IsType(t, float64(0), dig(doc, "event", "severity"))
	}
	want := make(map[string]int, len(versions))
	for version := range versions {
		want[version] = 1
	}
	require.Equal(t, want, got)

	// The template declares every field of an incident.
	declared := templateFields(t)
	mapped := make(map[string]map[string]any)
	leaves("", dig(node.request(t, http.MethodGet, "/defender-incidents/_mapping", nil),
		"defender-incidents", "mappings", "properties").(map[string]any), mapped)
	for field := range mapped {
		if strings.HasPrefix(field, "defender_incident") {
			require.Contains(t, declared, field, "the template does not declare %s", field)
		}
	}

	// The README's incident state, for every incident: each once, at the
	// simulator's current version, latest first.
	current := make(map[string]simulator.GraphIncident)
	for _, in := range currentIncidents(sim) {
		current[in.ID] = in
	}
	q := incidentStateQuery(t)
	var body map[string]any
	require.NoError(t, json.Unmarshal([]byte(q.body), &body))
	body["size"] = len(current) + 1
	all, err := json.Marshal(body)
	require.NoError(t, err)
	q.body = string(all)
	state := hits(t, node.run(t, q))
	require.Len(t, state, len(current))
	seen := make(map[string]bool, len(state))
	redirected, previous := 0, ""
	for _, h := range state {
		id := dig(h, "_source", "defender_incident", "incident_id").(string)
		require.False(t, seen[id], "the incident %s twice", id)
		seen[id] = true
		in, ok := current[id]
		require.True(t, ok, "the incident %s is not the simulator's", id)
		updated := dig(h, "_source", "defender_incident", "last_update_date_time").(string)
		require.Equal(t, normalizeGraphTime(t, in.LastUpdateDateTime), updated, id)
		require.True(t, previous == "" || parseTime(t, updated).Compare(parseTime(t, previous)) <= 0, "latest first")
		previous = updated
		require.Equal(t, in.Status, dig(h, "_source", "tag", "status"), id)
		require.Equal(t, strings.ToLower(in.Severity), dig(h, "_source", "tag", "severity"), id)
		if in.AssignedTo != nil {
			require.Equal(t, *in.AssignedTo, dig(h, "_source", "defender_incident", "assigned_to"), id)
		}
		target := dig(h, "_source", "defender_incident", "redirect_incident_id")
		if in.Status == "redirected" {
			redirected++
			require.NotNil(t, in.RedirectIncidentID, id)
			require.Equal(t, *in.RedirectIncidentID, target, id)
			require.Contains(t, current, *in.RedirectIncidentID)
		} else {
			require.Nil(t, target, id)
		}
	}
	require.Positive(t, redirected, "no redirected incident in the state")

	// The plugin README's query: the ten changed last, as above.
	plugin := regexp.MustCompile("(?s)```json\n(\\{[^`]*\"defender_incident.incident_id\"[^`]*)```").
		FindStringSubmatch(string(repoFile(t, "plugins/inputs/microsoft_defender/README.md")))
	require.NotNil(t, plugin, "the plugin README's incident state")
	top := hits(t, node.run(t, readmeRequest{http.MethodPost, "defender-*/_search", plugin[1]}))
	require.Len(t, top, 10)
	for i, h := range top {
		require.Equal(t, dig(state[i], "_source", "defender_incident", "last_update_date_time"),
			dig(h, "_source", "defender_incident", "last_update_date_time"), "the %d. incident", i+1)
	}
}

// incidentStateQuery is the README's query for the current state of every
// incident.
func incidentStateQuery(t *testing.T) readmeRequest {
	t.Helper()
	for _, q := range readmeQueries(t) {
		if strings.Contains(q.body, `"collapse": {"field": "defender_incident.incident_id"}`) {
			return q
		}
	}
	t.Fatal("the README has no incident state query")
	return readmeRequest{}
}
