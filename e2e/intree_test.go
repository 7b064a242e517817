//go:build e2e

package e2e

import (
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	simulator "github.com/sectelemetry/telegraf-defender/internal/sim"
)

// The tests of this file run bin/telegraf-intree (`make telegraf-intree`):
// Telegraf with the plugin in its own tree, configured in telegraf.conf.

// simClock is the simulator's clock. It stands still while Telegraf polls,
// so that what the simulator serves, the ground truth, does not move under
// the test, and it moves on when the test says so.
type simClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *simClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *simClock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = t
}

// simBehind is how far the simulator's clock starts behind the real one:
// what it adds when the test moves it to the present is as late as that,
// within the plugin's overlap of ten minutes, so a later poll reads it.
const simBehind = 5 * time.Minute

// newStillSimulator returns a simulator of an hour of detections (alerts of
// up to three detections, Graph alerts with their later versions) whose
// clock stands still simBehind in the past.
func newStillSimulator(t *testing.T, seed uint64, rate float64) (*simulator.Server, *simClock, string) {
	t.Helper()
	clock := &simClock{now: time.Now().Add(-simBehind)}
	sim := simulator.New(simulator.Config{TenantID: "e2e-tenant", ClientID: "e2e-client", ClientSecret: "e2e-secret",
		Seed: seed, Rate: rate, History: time.Hour, Now: clock.Now})
	server := httptest.NewServer(sim.Handler())
	t.Cleanup(server.Close)
	return sim, clock, server.URL
}

// inTreeSections is a SIEM and a Graph instance of the plugin reading the
// simulator at url, each with further keys and a pipeline tag naming its API.
func inTreeSections(url string, keys ...string) string {
	siem := append(append([]string{`delay = "0s"`}, keys...), "[inputs.microsoft_defender.tags]", `  pipeline = "siem"`)
	graph := append(append([]string{`delay = "0s"`,
		"## One page per request: the simulator's clock then never moves between",
		"## the pages of one read.",
		"page_size = 1000"}, keys...), "[inputs.microsoft_defender.tags]", `  pipeline = "graph"`)
	// A %s in a key is the section's pipeline, e.g. a state file of its own.
	return strings.ReplaceAll(siemSection(url, "e2e-secret", siem...), "%s", "siem") +
		strings.ReplaceAll(graphSection(url, graph...), "%s", "graph")
}

// startInTree starts bin/telegraf-intree with conf and a file output to
// dir/name.lp.
func startInTree(t *testing.T, dir, name, conf string) *agent {
	t.Helper()
	out := filepath.Join(dir, name+".lp")
	conf += fmt.Sprintf(`
[[outputs.file]]
  files = [%q]
  data_format = "influx"
`, out)
	return launch(t, "telegraf-intree", filepath.Join(dir, name+".conf"), conf, out)
}

// graphVersion names one version of a Graph alert as the plugin's fields do.
func graphVersion(id, lastUpdate string) string {
	t, err := time.Parse(time.RFC3339Nano, lastUpdate)
	if err != nil {
		return id + "@" + lastUpdate
	}
	return id + "@" + t.UTC().Format(time.RFC3339Nano)
}

// currentGraph returns the version of each Graph alert the simulator serves
// at its clock's time, by graphVersion.
func currentGraph(sim *simulator.Server) map[string]simulator.GraphAlert {
	latest := make(map[string]simulator.GraphAlert)
	for _, a := range sim.AllGraph() { // oldest first
		latest[a.ID] = a
	}
	current := make(map[string]simulator.GraphAlert, len(latest))
	for _, a := range latest {
		current[graphVersion(a.ID, a.LastUpdateDateTime)] = a
	}
	return current
}

// graphGroup is the machine group the plugin tags a Graph alert with: its
// device evidence's rbacGroupName.
func graphGroup(t *testing.T, a *simulator.GraphAlert) string {
	t.Helper()
	for _, raw := range a.Evidence {
		var e struct {
			Type  string `json:"@odata.type"`
			Group string `json:"rbacGroupName"`
		}
		require.NoError(t, json.Unmarshal(raw, &e))
		if e.Type == "#microsoft.graph.security.deviceEvidence" {
			return e.Group
		}
	}
	return ""
}

// pointsPerGroup counts the defender_alert points of a pipeline in
// InfluxDB per severity, category and machine group.
func pointsPerGroup(t *testing.T, db *influxDB, pipeline string) map[string]int {
	t.Helper()
	got := make(map[string]int)
	for _, s := range db.query(t, "defender", fmt.Sprintf(
		`SELECT count("alert_id") FROM "defender_alert" WHERE "pipeline" = '%s' GROUP BY "severity", "category", "machine_group"`, pipeline)) {
		got[s.Tags["severity"]+"|"+s.Tags["category"]+"|"+s.Tags["machine_group"]] = int(s.Values[0][1].(float64))
	}
	return got
}

// settledSince reports whether both pipelines wrote a poll without backlog
// to InfluxDB after since.
func settledSince(t *testing.T, db *influxDB, since time.Time) bool {
	t.Helper()
	settled := 0
	for range db.queryIfExists(t, fmt.Sprintf(
		`SELECT count("requests") FROM "defender_poll" WHERE "backlog" = false AND time > %d GROUP BY "api"`, since.UnixNano())) {
		settled++
	}
	return settled == 2
}

// Built into Telegraf with a default [agent] (interval 10s, so metrics added
// in Gather would be rounded to the second): every detection and every
// Graph version the simulator served is its own point in InfluxDB, the
// counts add up to them, and every poll is a point.
func TestInTreeInfluxDBKeepsEveryDetection(t *testing.T) {
	t.Parallel()
	db := startInfluxDB(t)
	sim, clock, url := newStillSimulator(t, 41, 12)

	a := startInTree(t, t.TempDir(), "telegraf", `
[agent]
`+inTreeSections(url)+fmt.Sprintf(`
[[outputs.influxdb]]
  urls = [%q]
  database = "defender"
`, db.url))

	waitFor(t, a, "both pipelines to read the simulator's hour", func() bool { return settledSince(t, db, time.Time{}) })
	// The simulator's time jumps to now: five minutes of detections, new
	// alerts and updates of older ones appear at once, as late arrivals.
	graphVersions := currentGraph(sim)
	moved := time.Now()
	clock.Set(moved)
	for version, alert := range currentGraph(sim) {
		graphVersions[version] = alert
	}
	waitFor(t, a, "both pipelines to read what appeared", func() bool { return settledSince(t, db, moved) })
	waitFor(t, a, "the counts to add up", func() bool { return db.countsAddUp(t, "defender_alert", "alert_id") })
	a.stop(t)

	siem := make(map[string]int)
	for _, d := range sim.All() {
		siem[strings.ToLower(d.Severity)+"|"+d.Category+"|"+d.MachineGroup]++
	}
	graph := make(map[string]int)
	updates := 0
	for _, v := range graphVersions {
		graph[v.Severity+"|"+v.Category+"|"+graphGroup(t, &v)]++
		if v.Status != "new" {
			updates++
		}
	}
	require.Positive(t, updates, "the simulator served no updated Graph alert")
	require.Equal(t, siem, pointsPerGroup(t, db, "siem"))
	require.Equal(t, graph, pointsPerGroup(t, db, "graph"))

	// Each detection or version written is a point: none merged with
	// another of the same series and second.
	written := map[string]int{"siem": 0, "graph": 0}
	for _, m := range byName(a.metrics(t), "defender_alert") {
		written[m.Tags()["pipeline"]]++
	}
	require.Equal(t, map[string]int{"siem": len(sim.All()), "graph": len(graphVersions)}, written)

	for pipeline, total := range written {
		counts := db.query(t, "defender", fmt.Sprintf(`SELECT sum("count") FROM "defender_alert_count" WHERE "pipeline" = '%s'`, pipeline))
		require.Len(t, counts, 1)
		require.Equal(t, total, int(counts[0].Values[0][1].(float64)), "counts of %s", pipeline)
	}
	polls := db.query(t, "defender", `SELECT count("requests") FROM "defender_poll"`)
	require.Len(t, polls, 1)
	require.Len(t, byName(a.metrics(t), "defender_poll"), int(polls[0].Values[0][1].(float64)))
}

// A clean restart in the middle of a backlog, each section with its own
// state_file: the second run resumes where the outputs confirmed and
// repeats at most the last polls, and what appeared while Telegraf was down
// arrives. Two sections reading different streams start side by side.
func TestInTreeRestartResumesFromTheStateFiles(t *testing.T) {
	t.Parallel()
	const budget = 200
	sim, clock, url := newStillSimulator(t, 43, 12)
	dir := t.TempDir()
	conf := `
[agent]
  interval = "2s"
  flush_interval = "1s"
` + inTreeSections(url, fmt.Sprintf("max_alerts_per_gather = %d", budget), fmt.Sprintf("state_file = %q", filepath.Join(dir, "%s.state")))

	siem := make(map[string]int)  // full_id -> times emitted
	graph := make(map[string]int) // graphVersion -> times emitted
	count := func(a *agent) (siem, graph int) {
		for _, m := range byName(a.metrics(t), "defender_alert") {
			if m.Tags()["pipeline"] == "siem" {
				siem++
			} else {
				graph++
			}
		}
		return siem, graph
	}
	collect := func(a *agent) {
		for _, m := range byName(a.metrics(t), "defender_alert") {
			if id, ok := m.GetField("full_id"); ok {
				siem[id.(string)]++
				continue
			}
			id, _ := m.GetField("alert_id")
			updated, _ := m.GetField("last_update_date_time")
			graph[graphVersion(id.(string), updated.(string))]++
		}
	}

	first := startInTree(t, dir, "first", conf)
	waitFor(t, first, "two polls of the backlog", func() bool {
		siem, graph := count(first)
		return siem >= 2*budget && graph >= 2*budget
	})
	first.stop(t)
	for _, m := range byName(first.metrics(t), "defender_poll") {
		backlog, _ := m.GetField("backlog")
		require.Equal(t, true, backlog, "the first run must stop in the middle of the backlog")
	}
	collect(first)
	firstGraph := currentGraph(sim)

	moved := time.Now()
	clock.Set(moved)
	second := startInTree(t, dir, "second", conf)
	waitFor(t, second, "both pipelines to work off the backlog", func() bool {
		settled := make(map[string]bool)
		for _, m := range byName(second.metrics(t), "defender_poll") {
			if backlog, ok := m.GetField("backlog"); ok && !backlog.(bool) && m.Time().After(moved) {
				settled[m.Tags()["api"]] = true
			}
		}
		return len(settled) == 2
	})
	second.stop(t)
	collect(second)

	// Every detection once. Every alert in its latest version, each version
	// once; a version current when the first run stopped and updated since
	// may be missing, as it is for any reader of Graph.
	var lost, repeated, foreign []string
	served := make(map[string]bool)
	for _, d := range sim.All() {
		served[d.FullID] = true
		if siem[d.FullID] == 0 {
			lost = append(lost, d.LastProcessedTimeUtc+" "+d.FullID)
		}
	}
	lastGraph := currentGraph(sim)
	for version := range lastGraph {
		if graph[version] == 0 {
			lost = append(lost, version)
		}
	}
	for _, emitted := range []map[string]int{siem, graph} {
		for key, n := range emitted {
			if n > 1 {
				repeated = append(repeated, fmt.Sprintf("%s %d times", key, n))
			}
			_, current := firstGraph[key]
			_, last := lastGraph[key]
			if !served[key] && !current && !last {
				foreign = append(foreign, key)
			}
		}
	}
	require.Empty(t, lost, "lost over the restart")
	// Telegraf flushes its outputs after stopping the inputs: what they had
	// not confirmed when the plugin stopped, the last polls at most, is read
	// again, and lands on the same points.
	require.LessOrEqual(t, len(repeated), 2*2*budget, "repeated over the restart: %v", repeated)
	require.Empty(t, foreign, "emitted, but never served by the simulator")
	t.Logf("%d detections, %d Graph versions over two runs", len(siem), len(graph))
}

var tokenFailure = regexp.MustCompile(`(?m)^  token          failed: (.*)$`)

// With startup_error_behavior = "probe", a wrong secret stops the plugin at
// start-up, and Telegraf's log says why and what fixes it, as
// `telegraf-defender -check` does for the same section. Telegraf, left
// without inputs, exits.
func TestInTreeProbeFailsStartUpWithTheMessageOfCheck(t *testing.T) {
	t.Parallel()
	sim := simulator.New(simulator.Config{TenantID: "e2e-tenant", ClientID: "e2e-client", ClientSecret: "right"})
	server := httptest.NewServer(sim.Handler())
	defer server.Close()
	dir := t.TempDir()
	section := siemSection(server.URL, "wrong-secret-value")

	checkConf := filepath.Join(dir, "defender.conf")
	require.NoError(t, os.WriteFile(checkConf, []byte(section), 0o600))
	check, err := exec.Command(binary(t, "telegraf-defender"), "-check", "-config", checkConf).CombinedOutput()
	var exit *exec.ExitError
	require.ErrorAs(t, err, &exit, "-check must fail:\n%s", check)
	failed := tokenFailure.FindStringSubmatch(string(check))
	require.NotNil(t, failed, "-check gave no token failure:\n%s", check)
	require.Equal(t, "token request to "+strings.TrimPrefix(server.URL, "http://")+" failed: HTTP 401 Unauthorized: invalid_client "+
		"(AADSTS7000215). The client secret is wrong, or is the secret's ID rather than its value: create a new client secret "+
		"for the app and set its value as client_secret", failed[1])

	a := startInTree(t, dir, "telegraf", "[agent]\n"+section+`  startup_error_behavior = "probe"
`)
	exited := make(chan error, 1)
	go func() { exited <- a.cmd.Wait() }()
	select {
	case <-exited:
	case <-time.After(30 * time.Second):
		t.Fatalf("telegraf still runs 30s after its only input failed to start; its log:\n%s", a.stderr.String())
	}
	log := a.stderr.String()
	require.Contains(t, log, "I! [agent] Failed to probe inputs.microsoft_defender, shutting down plugin: token: "+failed[1]+"\n")
	require.NotContains(t, log, "wrong-secret-value")
	require.Empty(t, a.metrics(t))
	for _, r := range sim.Requests() {
		require.True(t, strings.HasSuffix(r.URL.Path, "/oauth2/v2.0/token"), "a request to %s after the token failed", r.URL.Path)
	}
}

// bin/telegraf-intree registers the plugin with the file the README's
// "Built into Telegraf" shows.
func TestInTreeBuildFollowsTheREADME(t *testing.T) {
	readme, err := os.ReadFile(filepath.Join("..", "README.md"))
	require.NoError(t, err)
	_, section, found := strings.Cut(string(readme), "### Built into Telegraf\n")
	require.True(t, found)
	_, block, found := strings.Cut(section, "```go\n")
	require.True(t, found, "the section shows no Go file")
	block, _, found = strings.Cut(block, "   ```\n")
	require.True(t, found)
	shown := regexp.MustCompile(`(?m)^   `).ReplaceAllString(block, "")

	binary(t, "telegraf-intree")
	registered, err := filepath.Glob(filepath.Join("..", "build", "telegraf-v*", "plugins", "inputs", "all", "microsoft_defender.go"))
	require.NoError(t, err)
	require.Len(t, registered, 1, "make telegraf-intree leaves one Telegraf copy in build/")
	written, err := os.ReadFile(registered[0])
	require.NoError(t, err)
	require.Equal(t, shown, string(written))
}
