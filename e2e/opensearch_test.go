//go:build e2e

package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	simulator "github.com/sectelemetry/telegraf-defender/internal/sim"
)

// searchNode is a real OpenSearch 2.19 node (tools/opensearch-node, started
// by scripts/opensearch-node.sh) on loopback with a temporary data
// directory.
type searchNode struct {
	url  string
	cmd  *exec.Cmd
	done chan struct{}
	log  *syncBuffer
}

// startOpenSearch starts a node with the given settings (setting=value),
// or skips the test where Java or the node's build is missing, except
// under CI=true, where a skip would hide a missing install step. The node
// is stopped by its PID when the test ends.
func startOpenSearch(t *testing.T, settings ...string) *searchNode {
	t.Helper()
	script, err := filepath.Abs(filepath.Join("..", "scripts", "opensearch-node.sh"))
	require.NoError(t, err)
	jar := filepath.Join(filepath.Dir(script), "..", "tools", "opensearch-node", "target", "lib", "opensearch-node.jar")
	_, javaErr := exec.LookPath("java")
	_, jarErr := os.Stat(jar)
	if javaErr != nil || jarErr != nil {
		msg := "the OpenSearch node is not built: `make opensearch-node` (Java 17 and Maven: apt-get install -y openjdk-17-jdk-headless maven)"
		if os.Getenv("CI") == "true" {
			t.Fatal(msg + ", and CI=true does not allow skipping")
		}
		t.Skip(msg)
	}
	dir := t.TempDir()
	addrFile := filepath.Join(dir, "addr")
	n := &searchNode{done: make(chan struct{}), log: &syncBuffer{}}
	n.cmd = exec.Command(script, append([]string{filepath.Join(dir, "home"), addrFile}, settings...)...)
	n.cmd.Stdout, n.cmd.Stderr = n.log, n.log
	started := time.Now()
	require.NoError(t, n.cmd.Start())
	go func() {
		n.cmd.Wait() //nolint:errcheck // the exit is reported through done and the log
		close(n.done)
	}()
	t.Cleanup(func() {
		n.cmd.Process.Signal(syscall.SIGTERM) //nolint:errcheck // a node already gone is fine
		select {
		case <-n.done:
		case <-time.After(30 * time.Second):
			n.cmd.Process.Kill() //nolint:errcheck // it did not stop on SIGTERM
			<-n.done
			t.Errorf("the OpenSearch node did not stop on SIGTERM")
		}
		if t.Failed() {
			t.Logf("the OpenSearch node's log:\n%s", n.log.String())
		}
	})

	// The node writes its URL once it answers HTTP.
	deadline := time.After(2 * time.Minute)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for n.url == "" {
		select {
		case <-n.done:
			t.Fatalf("the OpenSearch node exited before it listened: %v; its log:\n%s", n.cmd.ProcessState, n.log.String())
		case <-deadline:
			t.Fatalf("the OpenSearch node did not listen within two minutes; its log:\n%s", n.log.String())
		case <-tick.C:
			if data, err := os.ReadFile(addrFile); err == nil {
				n.url = strings.TrimSpace(string(data))
			}
		}
	}
	n.request(t, http.MethodGet, "/_cluster/health?wait_for_status=yellow&timeout=60s", nil)
	t.Logf("OpenSearch node at %s up in %s", n.url, time.Since(started).Round(time.Millisecond))
	return n
}

// do sends a request with a JSON body (nil for none) and returns the
// status and the decoded answer.
func (n *searchNode) do(t *testing.T, method, path string, body []byte) (int, map[string]any) {
	t.Helper()
	req, err := http.NewRequest(method, n.url+path, bytes.NewReader(body))
	require.NoError(t, err)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	var answer map[string]any
	require.NoError(t, json.Unmarshal(data, &answer), "%s %s: %s", method, path, data)
	return resp.StatusCode, answer
}

// request is do for a request that must succeed.
func (n *searchNode) request(t *testing.T, method, path string, body []byte) map[string]any {
	t.Helper()
	status, answer := n.do(t, method, path, body)
	require.Less(t, status, 300, "%s %s answered %d: %v", method, path, status, answer)
	return answer
}

// search refreshes the indices of pattern and runs a search on them.
func (n *searchNode) search(t *testing.T, pattern, body string) map[string]any {
	t.Helper()
	n.request(t, http.MethodPost, "/"+pattern+"/_refresh", nil)
	return n.request(t, http.MethodPost, "/"+pattern+"/_search", []byte(body))
}

// hits returns the documents of a search answer.
func hits(t *testing.T, answer map[string]any) []map[string]any {
	t.Helper()
	list, ok := dig(answer, "hits", "hits").([]any)
	require.True(t, ok, "no hits in %v", answer)
	out := make([]map[string]any, 0, len(list))
	for _, h := range list {
		out = append(out, h.(map[string]any))
	}
	return out
}

// totalHits is the hit count of a search answer with track_total_hits.
func totalHits(t *testing.T, answer map[string]any) int {
	t.Helper()
	total, ok := dig(answer, "hits", "total", "value").(float64)
	require.True(t, ok, "no hit count in %v", answer)
	return int(total)
}

// dig walks nested JSON objects; nil where a key is missing.
func dig(v any, keys ...string) any {
	for _, k := range keys {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[k]
	}
	return v
}

func repoFile(t *testing.T, name string) []byte {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("..", name))
	require.NoError(t, err)
	return data
}

// install puts the repository's index template and ingest pipelines into
// the node, as the README tells users to.
func (n *searchNode) install(t *testing.T) {
	t.Helper()
	n.request(t, http.MethodPut, "/_index_template/defender", repoFile(t, "dashboards/defender-index-template.json"))
	n.request(t, http.MethodPut, "/_ingest/pipeline/defender-ecs", repoFile(t, "dashboards/defender-ecs-pipeline.json"))
	n.request(t, http.MethodPut, "/_ingest/pipeline/defender-alert-state", repoFile(t, "dashboards/defender-alert-state-pipeline.json"))
}

// The simulator -> bin/telegraf-defender under a real Telegraf ->
// outputs.opensearch -> a real OpenSearch node, through the ECS pipeline.
func TestOpenSearchOutput(t *testing.T) {
	node := startOpenSearch(t)
	output := opensearchOutput(node.url, `'defender-{{.Time.Format "2006.01.02"}}'`, "defender-ecs", "  force_document_id = true\n")
	testSearchOutput(t, node, output)

	// The same node, emptied, from a Telegraf built with the plugin.
	node.request(t, http.MethodDelete, "/defender-*", nil)
	testSearchOutputInTree(t, node, output)
}

// testSearchOutputInTree runs a backfill from a Telegraf built with the
// plugin, default [agent] precision, into the node through output, and
// checks the index as testSearchOutput does: every detection a document.
func testSearchOutputInTree(t *testing.T, node *searchNode, output string) {
	t.Helper()
	sim, url := searchSimulator(t, 37)
	a := startInTree(t, t.TempDir(), "telegraf", "[agent]\n  interval = \"4s\"\n"+searchPluginSection(url)+output)
	waitForBacklogWorkedOff(t, a)
	a.stop(t)
	checkIndexedDetections(t, node, sim, a)
}

// The same into outputs.elasticsearch, which refuses a server whose major
// version is below 5: the node answers as Elasticsearch 7.10.2.
func TestElasticsearchOutput(t *testing.T) {
	node := startOpenSearch(t, "compatibility.override_main_response_version=true")
	require.Equal(t, "7.10.2", dig(node.request(t, http.MethodGet, "/", nil), "version", "number"))
	testSearchOutput(t, node, fmt.Sprintf(`
[[outputs.elasticsearch]]
  urls = [%q]
  index_name = "defender-%%Y.%%m.%%d"
  manage_template = false
  ## A batch of 1000 through the pipeline takes seconds on a loaded machine.
  timeout = "60s"
  force_document_id = true
  use_pipeline = "defender-ecs"
`, node.url))
}

// testSearchOutput runs a backfill into the node through output, kills the
// plugin mid-way so that a poll is repeated, and checks the indices
// against the simulator's ground truth, the template's mapping, the ECS
// fields and the README's queries.
func testSearchOutput(t *testing.T, node *searchNode, output string) {
	t.Helper()
	node.install(t)
	sim, url := searchSimulator(t, 31)
	// Four seconds between polls leave the plugin idle most of the time,
	// so that a kill lands between polls, after the last one was handed
	// over and before its state was saved.
	a := startAgentEvery(t, "4s", searchPluginSection(url, fmt.Sprintf("state_file = %q", filepath.Join(t.TempDir(), "defender.state"))), output)

	emitted := func() map[string]int {
		seen := make(map[string]int)
		for _, m := range byName(a.metrics(t), "defender_alert") {
			id, _ := m.GetField("full_id")
			seen[id.(string)]++
		}
		return seen
	}
	repeated := func() (n int) {
		for _, c := range emitted() {
			n += c - 1
		}
		return n
	}
	// A SIGKILL right after a poll repeats that poll; one that lands in
	// a poll, before it handed anything over, repeats nothing, and the next
	// kill is tried. The first poll is spared: its state is the only
	// one that records where the backfill began.
	waitFor(t, a, "the first poll", func() bool { return len(byName(a.metrics(t), "defender_poll")) >= 1 })
	kills := 0
	for repeated() == 0 {
		kills++
		require.LessOrEqual(t, kills, 3, "three kills repeated no detection")
		polls := len(byName(a.metrics(t), "defender_poll"))
		waitFor(t, a, "a poll of the backlog", func() bool { return len(byName(a.metrics(t), "defender_poll")) > polls })
		victims := children(t, a.cmd.Process.Pid)
		require.Len(t, victims, 1, "telegraf runs one telegraf-defender")
		polls = len(byName(a.metrics(t), "defender_poll"))
		require.NoError(t, syscall.Kill(victims[0], syscall.SIGKILL))
		waitFor(t, a, "a poll of the restarted plugin", func() bool {
			return len(byName(a.metrics(t), "defender_poll")) > polls
		})
	}
	waitForBacklogWorkedOff(t, a)
	a.stop(t)
	require.Positive(t, repeated())
	t.Logf("%d detections repeated after %d kill(s)", repeated(), kills)

	checkIndexedDetections(t, node, sim, a)
}

// opensearchOutput is an outputs.opensearch section writing to index (a
// TOML string) through pipeline, with extra keys.
func opensearchOutput(url, index, pipeline, extra string) string {
	return fmt.Sprintf(`
[[outputs.opensearch]]
  urls = [%q]
  index_name = %s
  manage_template = false
  ## A batch of 1000 through the pipeline takes seconds on a loaded machine.
  timeout = "60s"
  template_name = "defender"
  use_pipeline = %q
%s`, url, index, pipeline, extra)
}

// searchSimulator serves three hours of detections, with bursts, for the
// output tests.
func searchSimulator(t *testing.T, seed uint64) (*simulator.Server, string) {
	t.Helper()
	sim := simulator.New(simulator.Config{TenantID: "e2e-tenant", ClientID: "e2e-client", ClientSecret: "e2e-secret",
		Seed: seed, Rate: 6, History: 3 * time.Hour, BurstEvery: 40 * time.Minute, BurstSize: 30})
	server := httptest.NewServer(sim.Handler())
	t.Cleanup(server.Close)
	return sim, server.URL
}

// searchPluginSection is the plugin's section reading a backlog of the
// simulator at url in polls of 400, with further keys.
func searchPluginSection(url string, keys ...string) string {
	return siemSection(url, "e2e-secret", append([]string{`initial_lookback = "2h"`, `delay = "0s"`, "max_alerts_per_gather = 400"}, keys...)...)
}

// waitForBacklogWorkedOff waits for a poll that left no backlog.
func waitForBacklogWorkedOff(t *testing.T, a *agent) {
	t.Helper()
	waitFor(t, a, "the backlog to be worked off", func() bool {
		polls := byName(a.metrics(t), "defender_poll")
		if len(polls) == 0 {
			return false
		}
		backlog, ok := polls[len(polls)-1].GetField("backlog")
		return ok && !backlog.(bool)
	})
}

// checkIndexedDetections checks the indices against the detections the
// simulator holds in the window the agent's polls read: one document per
// detection, the aggregations per severity, category and machine group,
// the template's mapping, the ECS fields and the README's queries.
func checkIndexedDetections(t *testing.T, node *searchNode, sim *simulator.Server, a *agent) {
	t.Helper()
	emitted := make(map[string]int)
	for _, m := range byName(a.metrics(t), "defender_alert") {
		id, _ := m.GetField("full_id")
		emitted[id.(string)]++
	}
	// The ground truth: the detections of the window the polls read.
	polls := byName(a.metrics(t), "defender_poll")
	first, last := polls[0].Time(), polls[len(polls)-1].Time()
	want := make(map[string]int)
	wantIDs := make(map[string]int)
	all := sim.All()
	for i := range all {
		d := &all[i]
		lpt, err := time.Parse(time.RFC3339Nano, d.LastProcessedTimeUtc)
		require.NoError(t, err)
		if lpt.Before(first.Add(-2*time.Hour)) || lpt.After(last) {
			continue
		}
		want[strings.ToLower(d.Severity)+"|"+d.Category+"|"+d.MachineGroup]++
		wantIDs[d.FullID] = 1
	}
	require.Len(t, emitted, len(wantIDs))

	// One document per detection, none repeated, although the plugin
	// repeated some: force_document_id gives a repeat the same id.
	answer := node.search(t, "defender-*", fmt.Sprintf(`{
  "size": 0, "track_total_hits": true,
  "query": {"term": {"measurement_name": "defender_alert"}},
  "aggs": {
    "ids": {"terms": {"field": "defender_alert.full_id", "size": %d}},
    "severity": {"terms": {"field": "tag.severity", "size": 100}, "aggs": {
      "category": {"terms": {"field": "tag.category", "size": 100}, "aggs": {
        "machine_group": {"terms": {"field": "tag.machine_group", "size": 100, "missing": ""}}}}}}
  }
}`, len(wantIDs)+10))
	require.Equal(t, len(wantIDs), totalHits(t, answer))
	gotIDs := make(map[string]int)
	for _, b := range buckets(t, answer, "ids") {
		gotIDs[b["key"].(string)] = int(b["doc_count"].(float64))
	}
	require.Equal(t, wantIDs, gotIDs)
	got := make(map[string]int)
	for _, sev := range buckets(t, answer, "severity") {
		for _, cat := range buckets(t, sev, "category") {
			for _, group := range buckets(t, cat, "machine_group") {
				got[sev["key"].(string)+"|"+cat["key"].(string)+"|"+group["key"].(string)] = int(group["doc_count"].(float64))
			}
		}
	}
	require.Equal(t, want, got)

	checkMapping(t, node, "defender-*")
	checkECS(t, node, "defender-*", want)
	checkREADMEQueries(t, node)
}

// buckets returns the buckets of aggregation name in a search answer or
// in an enclosing bucket.
func buckets(t *testing.T, in map[string]any, name string) []map[string]any {
	t.Helper()
	agg := dig(in, name)
	if agg == nil {
		agg = dig(in, "aggregations", name)
	}
	list, ok := dig(agg, "buckets").([]any)
	require.True(t, ok, "no buckets of %s in %v", name, in)
	out := make([]map[string]any, 0, len(list))
	for _, b := range list {
		out = append(out, b.(map[string]any))
	}
	return out
}

// leaves flattens a mapping's properties into field path -> definition.
func leaves(prefix string, properties map[string]any, out map[string]map[string]any) {
	for name, def := range properties {
		d := def.(map[string]any)
		if sub, ok := d["properties"].(map[string]any); ok {
			leaves(prefix+name+".", sub, out)
			continue
		}
		out[prefix+name] = d
	}
}

// checkMapping: every field the template declares has, in every index,
// the template's definition, and every other field came in as a keyword
// through the template's dynamic template, not as Elasticsearch's default
// text.
func checkMapping(t *testing.T, node *searchNode, pattern string) {
	t.Helper()
	var template struct {
		Template struct {
			Mappings struct {
				Properties map[string]any `json:"properties"`
			} `json:"mappings"`
		} `json:"template"`
	}
	require.NoError(t, json.Unmarshal(repoFile(t, "dashboards/defender-index-template.json"), &template))
	declared := make(map[string]map[string]any)
	leaves("", template.Template.Mappings.Properties, declared)

	indices := node.request(t, http.MethodGet, "/"+pattern+"/_mapping", nil)
	require.NotEmpty(t, indices)
	for index, m := range indices {
		actual := make(map[string]map[string]any)
		leaves("", dig(m, "mappings", "properties").(map[string]any), actual)
		for field, def := range declared {
			require.Equal(t, def, actual[field], "%s: the mapping of %s", index, field)
		}
		dynamic := 0
		for field, def := range actual {
			if declared[field] == nil {
				require.Equal(t, map[string]any{"type": "keyword", "ignore_above": float64(1024)}, def,
					"%s: the mapping of %s, which the template does not declare", index, field)
				dynamic++
			}
		}
		require.Positive(t, dynamic, "%s: no field came through the dynamic template", index)
		// What the template promises, spelled out.
		for field, typ := range map[string]string{
			"@timestamp": "date", "tag.severity": "keyword", "defender_alert.alert_id": "keyword",
			"defender_alert.alert_time": "date", "defender_alert.alert_part": "integer", "defender_alert.report_id": "long",
			"defender_poll.backlog": "boolean", "defender_poll.duration_seconds": "double", "defender_alert_count.count": "long",
			"defender_alert.alert_title": "text", "event.severity": "long", "event.created": "date",
		} {
			require.Equal(t, typ, actual[field]["type"], "%s: the type of %s", index, field)
		}
		require.Equal(t, "keyword", dig(actual["defender_alert.alert_title"], "fields", "keyword", "type"), "%s: alert_title.keyword", index)
	}
}

// checkECS: the ECS pipeline gave every detection the ECS fields, with the
// types that make range and term queries on them work.
func checkECS(t *testing.T, node *searchNode, pattern string, want map[string]int) {
	t.Helper()
	severity := map[string]float64{"informational": 21, "low": 21, "medium": 47, "high": 73, "critical": 99}
	total, highOrAbove := 0, 0
	for key, n := range want {
		total += n
		if s := severity[strings.Split(key, "|")[0]]; s >= 73 {
			highOrAbove += n
		}
	}
	require.Positive(t, highOrAbove)
	count := func(query string) int {
		return totalHits(t, node.search(t, pattern, `{"size": 0, "track_total_hits": true, "query": `+query+`}`))
	}
	require.Equal(t, total, count(`{"term": {"event.kind": "alert"}}`))
	require.Equal(t, highOrAbove, count(`{"range": {"event.severity": {"gte": 73}}}`))
	require.Equal(t, total, count(`{"range": {"event.created": {"gte": "now-1d"}}}`))
	require.Zero(t, count(`{"bool": {"must_not": {"term": {"measurement_name": "defender_alert"}}, "filter": {"exists": {"field": "event"}}}}`),
		"the pipeline touched other measurements")

	docs := hits(t, node.search(t, pattern, `{"size": 50, "query": {"bool": {"filter": [
  {"term": {"event.kind": "alert"}}, {"exists": {"field": "defender_alert.sha256"}},
  {"exists": {"field": "defender_alert.user_name"}}, {"exists": {"field": "defender_alert.command_line"}}]}}}`))
	require.NotEmpty(t, docs)
	for _, h := range docs {
		doc := h["_source"].(map[string]any)
		a := doc["defender_alert"].(map[string]any)
		tags := doc["tag"].(map[string]any)
		ecs := map[string]any{
			"event.kind":           "alert",
			"event.severity":       severity[tags["severity"].(string)],
			"event.id":             a["alert_id"],
			"event.created":        a["alert_time"],
			"event.provider":       "microsoftDefenderForEndpoint",
			"event.url":            a["link_to_mtp"],
			"host.name":            a["computer_dns_name"],
			"host.id":              a["device_id"],
			"user.name":            a["user_name"],
			"file.hash.sha1":       a["sha1"],
			"file.hash.sha256":     a["sha256"],
			"process.command_line": a["command_line"],
			"threat.tactic.name":   tags["category"],
			"message":              a["alert_title"],
		}
		for field, value := range ecs {
			require.NotNil(t, value, "%s: the original of %s", h["_id"], field)
			require.Equal(t, value, dig(doc, strings.Split(field, ".")...), "%s: %s", h["_id"], field)
		}
		require.IsType(t, float64(0), dig(doc, "event", "severity"), "event.severity is a number")
	}
}

// readmeQuery is a request of the README's Elasticsearch section: a
// fenced http block, its first line the method and path, the rest the body.
var readmeQuery = regexp.MustCompile("(?s)```http\n(GET|POST) (\\S+)\n(.*?)```")

// checkREADMEQueries runs each query the README shows for Elasticsearch
// and requires rows from each: hits or aggregation buckets.
func checkREADMEQueries(t *testing.T, node *searchNode) {
	t.Helper()
	queries := readmeQuery.FindAllStringSubmatch(string(repoFile(t, "README.md")), -1)
	require.Len(t, queries, 5)
	for _, q := range queries {
		node.request(t, http.MethodPost, "/defender-*/_refresh", nil)
		answer := node.request(t, q[1], "/"+q[2], []byte(q[3]))
		rows := len(hits(t, answer))
		if aggs, ok := answer["aggregations"].(map[string]any); ok {
			names := make([]string, 0, len(aggs))
			for name := range aggs {
				names = append(names, name)
			}
			sort.Strings(names)
			for _, name := range names {
				rows += len(buckets(t, answer, name))
			}
		}
		require.Positive(t, rows, "the README's query returned no rows: %s %s\n%s", q[1], q[2], q[3])
	}
}

// Graph alert versions through the defender-alert-state pipeline: the
// state index holds one document per alert, with its latest version,
// beside the history of versions.
func TestOpenSearchAlertStatePipeline(t *testing.T) {
	node := startOpenSearch(t)
	node.install(t)
	sim := simulator.New(simulator.Config{TenantID: "e2e-tenant", ClientID: "e2e-client", ClientSecret: "e2e-secret"})
	server := httptest.NewServer(sim.Handler())
	defer server.Close()

	created := time.Now().UTC().Add(-10 * time.Minute).Truncate(time.Millisecond)
	device := json.RawMessage(`{"@odata.type": "#microsoft.graph.security.deviceEvidence",
  "deviceDnsName": "wks-7.contoso.local", "mdeDeviceId": "dev-7", "rbacGroupName": "Finance"}`)
	alert := func(id, status string) simulator.GraphAlert {
		return simulator.GraphAlert{
			ID: id, ProviderAlertID: id, IncidentID: "1007", TenantID: "e2e-tenant", Status: status, Severity: "high",
			ServiceSource: "microsoftDefenderForEndpoint", DetectionSource: "microsoftDefenderForEndpoint",
			Category: "Execution", Title: "Suspicious PowerShell on wks-7",
			AlertWebURL:     "https://security.microsoft.com/alerts/" + id,
			MitreTechniques: []string{"T1059.001", "T1105"},
			CreatedDateTime: created.Format(time.RFC3339Nano), FirstActivityDateTime: created.Format(time.RFC3339Nano),
			LastActivityDateTime: created.Format(time.RFC3339Nano),
			LastUpdateDateTime:   time.Now().UTC().Truncate(time.Millisecond).Format(time.RFC3339Nano),
			Evidence:             []json.RawMessage{device},
		}
	}
	latest := alert("da-tracked", "new")
	// Another alert, created earlier: two alerts of the same tags and
	// createdDateTime whose lastUpdateDateTime is the same to 100 ns would
	// be the same point to Telegraf, and so the same document id.
	other := alert("da-other", "new")
	other.CreatedDateTime = created.Add(-time.Minute).Format(time.RFC3339Nano)
	require.NoError(t, sim.AddGraph(other, latest))

	a := startAgentWithOutput(t, graphSection(server.URL, "e2e-secret", `initial_lookback = "1h"`, `delay = "0s"`),
		opensearchOutput(node.url, `"defender-graph-history"`, "defender-ecs", "  force_document_id = true\n")+
			opensearchOutput(node.url, `"defender-alert-state"`, "defender-alert-state", "  namepass = [\"defender_alert\"]\n"))

	str := func(s string) *string { return &s }
	versions := []func(*simulator.GraphAlert){
		func(*simulator.GraphAlert) {},
		func(v *simulator.GraphAlert) { v.Status, v.AssignedTo = "inProgress", str("analyst1@contoso.com") },
		func(v *simulator.GraphAlert) { v.Status, v.AssignedTo = "inProgress", str("analyst2@contoso.com") },
		func(v *simulator.GraphAlert) {
			v.Status, v.AssignedTo = "resolved", str("analyst2@contoso.com")
			v.Classification, v.Determination = str("truePositive"), str("malware")
			v.ResolvedDateTime = str(v.LastUpdateDateTime)
		},
	}
	// Each version once the previous one is in the state index.
	for i, change := range versions {
		if i > 0 {
			latest = alert("da-tracked", "new")
			change(&latest)
			require.NoError(t, sim.AddGraph(latest))
		}
		waitFor(t, a, fmt.Sprintf("version %d in the state index", i+1), func() bool {
			status, answer := node.do(t, http.MethodGet, "/defender-alert-state/_doc/da-tracked", nil)
			return status == http.StatusOK &&
				dig(answer, "_source", "defender_alert", "last_update_date_time") == normalizeGraphTime(t, latest.LastUpdateDateTime)
		})
	}
	a.stop(t)

	state := hits(t, node.search(t, "defender-alert-state", `{"size": 10, "sort": [{"defender_alert.alert_id": "asc"}]}`))
	require.Len(t, state, 2, "one document per alert")
	require.Equal(t, "da-other", state[0]["_id"])
	require.Equal(t, "da-tracked", state[1]["_id"])
	doc := state[1]["_source"].(map[string]any)
	require.Equal(t, "resolved", dig(doc, "tag", "status"))
	require.Equal(t, "analyst2@contoso.com", dig(doc, "defender_alert", "assigned_to"))
	require.Equal(t, "truePositive", dig(doc, "defender_alert", "classification"))
	require.Equal(t, "malware", dig(doc, "defender_alert", "determination"))
	require.Equal(t, normalizeGraphTime(t, latest.LastUpdateDateTime), dig(doc, "defender_alert", "resolved_date_time"))
	// The ECS fields of a Graph alert, through the state pipeline too.
	for field, value := range map[string]any{
		"event.kind": "alert", "event.severity": float64(73), "event.id": "da-tracked",
		"event.provider": "microsoftDefenderForEndpoint", "event.url": "https://security.microsoft.com/alerts/da-tracked",
		"host.name": "wks-7.contoso.local", "host.id": "dev-7", "threat.tactic.name": "Execution",
		"threat.technique.id": []any{"T1059.001", "T1105"}, "message": "Suspicious PowerShell on wks-7",
	} {
		require.Equal(t, value, dig(doc, strings.Split(field, ".")...), field)
	}
	created2, err := time.Parse(time.RFC3339Nano, dig(doc, "event", "created").(string))
	require.NoError(t, err)
	require.Equal(t, created, created2.Truncate(time.Millisecond), "event.created is createdDateTime")

	// The history index keeps every version.
	history := hits(t, node.search(t, "defender-graph-history", `{"size": 10,
  "query": {"term": {"defender_alert.alert_id": "da-tracked"}}, "sort": [{"defender_alert.last_update_date_time": "asc"}]}`))
	statuses := make([]any, 0, len(history))
	assigned := make([]any, 0, len(history))
	for _, h := range history {
		statuses = append(statuses, dig(h, "_source", "tag", "status"))
		assigned = append(assigned, dig(h, "_source", "defender_alert", "assigned_to"))
	}
	require.Equal(t, []any{"new", "inProgress", "inProgress", "resolved"}, statuses)
	require.Equal(t, []any{nil, "analyst1@contoso.com", "analyst2@contoso.com", "analyst2@contoso.com"}, assigned)
	require.Equal(t, dig(history[3], "_source", "tag"), dig(doc, "tag"), "the state is the last version")
}

// normalizeGraphTime is a Graph timestamp as the plugin writes it.
func normalizeGraphTime(t *testing.T, s string) string {
	t.Helper()
	ts, err := time.Parse(time.RFC3339Nano, s)
	require.NoError(t, err)
	return ts.UTC().Format(time.RFC3339Nano)
}
