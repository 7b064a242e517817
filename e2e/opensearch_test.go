//go:build e2e

package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/stretchr/testify/require"

	"github.com/influxdata/telegraf"

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

// requireJVMNode skips the test where Java or the file `make target` builds
// is missing, except under CI=true, where a skip would hide a missing
// install step.
func requireJVMNode(t *testing.T, what, built, target string) {
	t.Helper()
	_, javaErr := exec.LookPath("java")
	_, builtErr := os.Stat(built)
	if javaErr == nil && builtErr == nil {
		return
	}
	msg := fmt.Sprintf("the %s is not built: `make %s` (Java 17 and Maven: apt-get install -y openjdk-17-jdk-headless maven)", what, target)
	if os.Getenv("CI") == "true" {
		t.Fatal(msg + ", and CI=true does not allow skipping")
	}
	t.Skip(msg)
}

// startOpenSearch starts a node with the given settings (setting=value),
// or skips the test where Java or the node's build is missing, except
// under CI=true, where a skip would hide a missing install step. The node
// is stopped by its PID when the test ends.
func startOpenSearch(t *testing.T, settings ...string) *searchNode {
	t.Helper()
	script, err := filepath.Abs(filepath.Join("..", "scripts", "opensearch-node.sh"))
	require.NoError(t, err)
	requireJVMNode(t, "OpenSearch node", filepath.Join(filepath.Dir(script), "..", "tools", "opensearch-node", "target", "lib", "opensearch-node.jar"),
		"opensearch-node")
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

// install puts the repository's index template and ingest pipeline into
// the node, as the README tells users to.
func (n *searchNode) install(t *testing.T) {
	t.Helper()
	n.request(t, http.MethodPut, "/_index_template/defender", repoFile(t, "dashboards/defender-index-template.json"))
	n.request(t, http.MethodPut, "/_ingest/pipeline/defender-ecs", repoFile(t, "dashboards/defender-ecs-pipeline.json"))
}

// bulk indexes docs into index through the defender-ecs pipeline, each
// under an id the server gives, and returns the answer, and an error if
// a document was refused. It does not fail the test, so that goroutines
// may call it.
func (n *searchNode) bulk(index string, docs []map[string]any) (map[string]any, error) {
	var body bytes.Buffer
	for _, doc := range docs {
		line, err := json.Marshal(doc)
		if err != nil {
			return nil, err
		}
		fmt.Fprintf(&body, "{\"index\": {\"_index\": %q}}\n%s\n", index, line)
	}
	resp, err := http.Post(n.url+"/_bulk?pipeline=defender-ecs", "application/x-ndjson", &body)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var answer map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&answer); err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("bulk answered %d: %v", resp.StatusCode, answer)
	}
	if failed, ok := answer["errors"].(bool); !ok || failed {
		var refused []string
		items, _ := answer["items"].([]any)
		for i, item := range items {
			if reason := dig(item, "index", "error", "reason"); reason != nil {
				refused = append(refused, fmt.Sprintf("document %d: %.200s", i, reason))
			}
		}
		return answer, fmt.Errorf("%d documents refused: %s", len(refused), strings.Join(refused, "; "))
	}
	return answer, nil
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
func opensearchOutput(url, index, pipeline, extra string) string { //nolint:unparam // the pipeline is part of what each test states
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

// longPath is a FilePath an attacker can make: 11,000 CJK characters, 33 KB
// of UTF-8 after an 8-byte prefix, so that a cut at a character below
// 32 KiB still lands above Lucene's limit of 32,766 bytes for a term.
var longPath = `C:\Temp\` + strings.Repeat("攻", 11000)

// longPathID is the FullId of the detection with longPath.
const longPathID = "da-long-path:1"

// searchSimulator serves three hours of detections, with bursts, for the
// output tests, and among them one with longPath.
func searchSimulator(t *testing.T, seed uint64) (*simulator.Server, string) {
	t.Helper()
	sim := simulator.New(simulator.Config{TenantID: "e2e-tenant", ClientID: "e2e-client", ClientSecret: "e2e-secret",
		Seed: seed, Rate: 6, History: 3 * time.Hour, BurstEvery: 40 * time.Minute, BurstSize: 30})
	long := simDetection(longPathID, "High", "Execution", "Finance", time.Now().UTC().Add(-30*time.Minute).Truncate(time.Millisecond))
	long.FileName, long.FilePath = "x.exe", longPath
	require.NoError(t, sim.Add(long))
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
// detection and per poll, the aggregations per severity, category and
// machine group, the detection with longPath, the template's mapping, the
// ECS fields and the README's queries.
func checkIndexedDetections(t *testing.T, node *searchNode, sim *simulator.Server, a *agent) {
	t.Helper()
	emitted := make(map[string]int)
	var long telegraf.Metric
	for _, m := range byName(a.metrics(t), "defender_alert") {
		id, _ := m.GetField("full_id")
		emitted[id.(string)]++
		if id == longPathID {
			long = m
		}
	}
	// The ground truth: the detections of the window the polls read.
	polls := byName(a.metrics(t), "defender_poll")
	first, last := polls[0].Time(), polls[len(polls)-1].Time()
	want := make(map[string]int)
	wantIDs := make(map[string]int)
	all := sim.All()
	read := make([]simulator.Detection, 0, len(all))
	for i := range all {
		d := &all[i]
		lpt, err := time.Parse(time.RFC3339Nano, d.LastProcessedTimeUtc)
		require.NoError(t, err)
		if lpt.Before(first.Add(-2*time.Hour)) || lpt.After(last) {
			continue
		}
		want[strings.ToLower(d.Severity)+"|"+d.Category+"|"+d.MachineGroup]++
		wantIDs[d.FullID] = 1
		read = append(read, *d)
	}
	require.Len(t, emitted, len(wantIDs))
	require.Contains(t, wantIDs, longPathID)

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
	// Every poll a document: nothing was held back behind a refused one.
	require.Equal(t, len(polls), totalHits(t, node.search(t, "defender-*",
		`{"size": 0, "track_total_hits": true, "query": {"term": {"measurement_name": "defender_poll"}}}`)))

	// The detection with longPath is indexed, its path in _source as the
	// plugin emitted it, and left out of the index.
	path, ok := long.GetField("file_path")
	require.True(t, ok)
	require.Greater(t, utf8.RuneCountInString(path.(string)), 8191)
	docs := hits(t, node.search(t, "defender-*", `{"query": {"term": {"defender_alert.full_id": "`+longPathID+`"}}}`))
	require.Len(t, docs, 1)
	require.Equal(t, path, dig(docs[0], "_source", "defender_alert", "file_path"))
	require.Equal(t, path, dig(docs[0], "_source", "file", "path"))
	require.Equal(t, []string{"defender_alert.file_name", "file.name"},
		indexed(t, node, docs[0]["_id"].(string), "defender_alert.file_path", "file.path", "defender_alert.file_name", "file.name"))

	checkMapping(t, node, "defender-*")
	checkECS(t, node, "defender-*", want)
	checkREADMEQueries(t, node, read)
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

// templateFields is the template's declared fields: field path ->
// definition.
func templateFields(t *testing.T) map[string]map[string]any {
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
	return declared
}

// checkMapping: every field the template declares has, in every index,
// the template's definition; no field of a measurement came in undeclared,
// and an undeclared tag came in as a keyword through the template's
// dynamic template, not as Elasticsearch's default text. Every keyword has an ignore_above at most 8191 characters, so that
// no value is over Lucene's 32,766 bytes for a term.
func checkMapping(t *testing.T, node *searchNode, pattern string) {
	t.Helper()
	declared := templateFields(t)
	for field, def := range declared {
		defs := []any{def}
		if sub, ok := def["fields"].(map[string]any); ok {
			for _, d := range sub {
				defs = append(defs, d)
			}
		}
		for _, d := range defs {
			if dig(d, "type") == "keyword" {
				limit, ok := dig(d, "ignore_above").(float64)
				require.True(t, ok && limit <= 8191, "the template's %s: %v", field, def)
			}
		}
	}

	indices := node.request(t, http.MethodGet, "/"+pattern+"/_mapping", nil)
	require.NotEmpty(t, indices)
	for index, m := range indices {
		actual := make(map[string]map[string]any)
		leaves("", dig(m, "mappings", "properties").(map[string]any), actual)
		for field, def := range declared {
			require.Equal(t, def, actual[field], "%s: the mapping of %s", index, field)
		}
		// A measurement's fields are all declared and its object takes no
		// others ("dynamic": false); a tag the template does not declare (a
		// user's own) comes in through the dynamic template as a keyword.
		for _, name := range []string{"defender_alert", "defender_alert_count", "defender_poll", "defender_incident", "defender_incident_count"} {
			require.Equal(t, "false", dig(m, "mappings", "properties", name, "dynamic"), "%s: %s takes undeclared fields", index, name)
		}
		for field, def := range actual {
			if declared[field] == nil {
				require.True(t, strings.HasPrefix(field, "tag."), "%s: %s, which the template does not declare, is mapped", index, field)
				require.Equal(t, map[string]any{"type": "keyword", "ignore_above": float64(8191)}, def,
					"%s: the mapping of %s, which the template does not declare", index, field)
			}
		}
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

// readmeRequest is one of those requests.
type readmeRequest struct{ method, path, body string }

func readmeQueries(t *testing.T) []readmeRequest {
	t.Helper()
	found := readmeQuery.FindAllStringSubmatch(string(repoFile(t, "README.md")), -1)
	out := make([]readmeRequest, 0, len(found))
	for _, q := range found {
		out = append(out, readmeRequest{q[1], q[2], q[3]})
	}
	require.Len(t, out, 7)
	return out
}

// run refreshes the indices and sends q.
func (n *searchNode) run(t *testing.T, q readmeRequest) map[string]any {
	t.Helper()
	n.request(t, http.MethodPost, "/defender-*/_refresh", nil)
	return n.request(t, q.method, "/"+q.path, []byte(q.body))
}

// latestStateQuery is the README's query for the current state of every
// alert.
func latestStateQuery(t *testing.T) readmeRequest {
	t.Helper()
	for _, q := range readmeQueries(t) {
		if strings.Contains(q.body, `"collapse"`) {
			return q
		}
	}
	t.Fatal("the README has no query with collapse")
	return readmeRequest{}
}

// latestState runs the README's query for the current state, with whole
// documents instead of the fields it picks, and returns its hits by alert
// id, each alert once, and the ids in the answer's order.
func latestState(t *testing.T, node *searchNode) (map[string]map[string]any, []string) {
	t.Helper()
	q := latestStateQuery(t)
	var body map[string]any
	require.NoError(t, json.Unmarshal([]byte(q.body), &body))
	delete(body, "_source")
	whole, err := json.Marshal(body)
	require.NoError(t, err)
	q.body = string(whole)
	return stateOf(t, node.run(t, q))
}

// stateOf is latestState of an answer to that query.
func stateOf(t *testing.T, answer map[string]any) (map[string]map[string]any, []string) {
	t.Helper()
	list := hits(t, answer)
	byID := make(map[string]map[string]any, len(list))
	order := make([]string, 0, len(list))
	for _, h := range list {
		id, ok := dig(h, "_source", "defender_alert", "alert_id").(string)
		require.True(t, ok, "a hit without alert_id: %v", h)
		require.NotContains(t, byID, id, "the alert %s twice", id)
		byID[id] = h
		order = append(order, id)
	}
	return byID, order
}

// checkREADMEQueries runs each query the README shows for Elasticsearch
// and checks what it counts against the detections read: each once.
func checkREADMEQueries(t *testing.T, node *searchNode, read []simulator.Detection) {
	t.Helper()
	count := func(keep func(*simulator.Detection) bool, key func(*simulator.Detection) string) map[string]int {
		out := make(map[string]int)
		for i := range read {
			if keep(&read[i]) {
				out[key(&read[i])]++
			}
		}
		return out
	}
	all := func(*simulator.Detection) bool { return true }
	high := func(d *simulator.Detection) bool { return d.Severity == "High" || d.Severity == "Critical" }
	nothing := func(*simulator.Detection) string { return "" }
	severity := func(d *simulator.Detection) string { return strings.ToLower(d.Severity) }
	category := func(d *simulator.Detection) string { return d.Category }
	group := func(d *simulator.Detection) string { return d.MachineGroup }
	host := func(d *simulator.Detection) string { return d.ComputerDNSName }
	// requireBuckets: each bucket counts what want does for its key.
	requireBuckets := func(want map[string]int, list []map[string]any, what string) {
		require.NotEmpty(t, list, what)
		for _, b := range list {
			require.Equal(t, want[b["key"].(string)], int(b["doc_count"].(float64)), "%s %v", what, b["key"])
		}
	}

	queries := readmeQueries(t)
	marks := []string{`"per_hour"`, `"categories"`, `{"term": {"tag.severity": "high"}}`, `"hosts"`, `"defender_poll"`, `"collapse"`,
		`"defender_incident.incident_id"`}
	for i, q := range queries {
		require.Contains(t, q.body, marks[i], "the README's query %d is not the one this test expects", i+1)
		answer := node.run(t, q)
		switch i {
		case 0: // detections per severity and hour
			require.Equal(t, len(read), totalHits(t, answer))
			got := make(map[string]int)
			for _, hour := range buckets(t, answer, "per_hour") {
				for _, b := range buckets(t, hour, "severity") {
					got[b["key"].(string)] += int(b["doc_count"].(float64))
				}
			}
			require.Equal(t, count(all, severity), got)
		case 1: // top categories and machine groups
			require.Equal(t, len(read), totalHits(t, answer))
			requireBuckets(count(all, category), buckets(t, answer, "categories"), "category")
			requireBuckets(count(all, group), buckets(t, answer, "machine_groups"), "machine group")
		case 2: // the latest high-severity detections
			n := count(func(d *simulator.Detection) bool { return d.Severity == "High" }, nothing)[""]
			require.Equal(t, n, totalHits(t, answer))
			require.Len(t, hits(t, answer), min(n, 20))
		case 3: // hosts with the most detections of high severity or above
			require.Equal(t, count(high, nothing)[""], totalHits(t, answer))
			requireBuckets(count(high, host), buckets(t, answer, "hosts"), "host")
		case 4: // is the poller keeping up?
			last := hits(t, answer)
			require.Len(t, last, 1)
			require.NotNil(t, dig(last[0], "_source", "defender_poll", "lag_seconds"))
		case 5: // the current state of every alert: its latest detection
			latest := make(map[string]time.Time)
			for i := range read {
				lpt, err := time.Parse(time.RFC3339Nano, read[i].LastProcessedTimeUtc)
				require.NoError(t, err)
				if lpt.After(latest[read[i].AlertID]) {
					latest[read[i].AlertID] = lpt
				}
			}
			times := make([]time.Time, 0, len(latest))
			for _, lpt := range latest {
				times = append(times, lpt)
			}
			sort.Slice(times, func(i, j int) bool { return times[i].After(times[j]) })
			state, order := stateOf(t, answer)
			require.Len(t, order, min(len(latest), 100))
			for i, id := range order {
				lpt, err := time.Parse(time.RFC3339Nano, dig(state[id], "_source", "defender_alert", "last_processed_time_utc").(string))
				require.NoError(t, err)
				require.True(t, latest[id].Equal(lpt), "%s: %s, not its latest detection's %s", id, lpt, latest[id])
				require.True(t, times[i].Equal(lpt), "the %d. alert of the state was last processed at %s, not %s", i+1, lpt, times[i])
			}
		case 6: // the current state of every incident: there are none (TestOpenSearchIncidents)
			require.Empty(t, hits(t, answer))
		}
	}
}

// The template and the pipeline on a real node: nothing they are given is
// refused, and the README's current state is the latest version of each
// alert, whatever order the versions were written in.
func TestOpenSearchTemplate(t *testing.T) {
	node := startOpenSearch(t)
	node.install(t)
	t.Run("never refuses", func(t *testing.T) { testNeverRefuses(t, node) })
	node.request(t, http.MethodDelete, "/defender-*", nil)
	t.Run("state after shuffled writes", func(t *testing.T) { testStateAfterShuffledWrites(t, node) })
	node.request(t, http.MethodDelete, "/defender-*", nil)
	t.Run("Graph versions through Telegraf", func(t *testing.T) { testGraphVersions(t, node) })
}

// alertDocument is a defender_alert document as Telegraf's outputs write
// one: @timestamp, measurement_name, tag and the fields.
func alertDocument(at time.Time, tags, fields map[string]any) map[string]any {
	return map[string]any{"@timestamp": at.Format(time.RFC3339Nano), "measurement_name": "defender_alert", "tag": tags, "defender_alert": fields}
}

// siemDocument is the document of detection part of SIEM alert n.
func siemDocument(at time.Time, n, part int) map[string]any {
	id := fmt.Sprintf("da-%03d", n)
	return alertDocument(at, map[string]any{"severity": "medium", "category": "Execution", "detection_source": "EDR"}, map[string]any{
		"alert_id": id, "full_id": fmt.Sprintf("%s:%d", id, part), "alert_title": "Suspicious process on wks-1",
		"computer_dns_name": "wks-1.contoso.local", "file_name": "x.exe", "file_path": `C:\Temp`,
		"alert_time": at.Format(time.RFC3339Nano), "last_processed_time_utc": at.Add(time.Duration(part) * time.Minute).Format(time.RFC3339Nano),
		"alert_part": part, "report_id": n*10 + part,
	})
}

// graphDocument is version v of Graph alert n, created at created.
func graphDocument(created, updated time.Time, n, v int) map[string]any {
	status := []string{"new", "inProgress", "inProgress", "inProgress", "resolved"}[min(v, 4)]
	return alertDocument(created, map[string]any{"severity": "high", "category": "Execution", "status": status,
		"service_source": "microsoftDefenderForEndpoint", "detection_source": "microsoftDefenderForEndpoint"}, map[string]any{
		"alert_id": fmt.Sprintf("ga-%03d", n), "alert_title": "Suspicious PowerShell on wks-7",
		"assigned_to": fmt.Sprintf("analyst%d@contoso.com", v), "last_update_date_time": updated.Format(time.RFC3339Nano),
		"first_activity_date_time": created.Format(time.RFC3339Nano),
	})
}

// indexed returns which of fields the document id has in the index.
func indexed(t *testing.T, node *searchNode, id string, fields ...string) []string {
	t.Helper()
	filters := make(map[string]any, len(fields))
	for _, f := range fields {
		filters[f] = map[string]any{"exists": map[string]any{"field": f}}
	}
	body, err := json.Marshal(map[string]any{"size": 0, "query": map[string]any{"ids": map[string]any{"values": []string{id}}},
		"aggs": map[string]any{"fields": map[string]any{"filters": map[string]any{"filters": filters}}}})
	require.NoError(t, err)
	answer := node.search(t, "defender-*", string(body))
	require.Equal(t, 1, totalHits(t, answer), "the document %s", id)
	var out []string
	for _, f := range fields {
		if dig(answer, "aggregations", "fields", "buckets", f, "doc_count") == float64(1) {
			out = append(out, f)
		}
	}
	return out
}

// flatten maps a document's leaves to their field paths.
func flatten(prefix string, doc, out map[string]any) {
	for k, v := range doc {
		if sub, ok := v.(map[string]any); ok {
			flatten(prefix+k+".", sub, out)
			continue
		}
		out[prefix+k] = v
	}
}

// set puts value at a field path of doc.
func set(doc map[string]any, path string, value any) {
	keys := strings.Split(path, ".")
	for _, k := range keys[:len(keys)-1] {
		sub, ok := doc[k].(map[string]any)
		if !ok {
			sub = make(map[string]any)
			doc[k] = sub
		}
		doc = sub
	}
	doc[keys[len(keys)-1]] = value
}

// A batch holding a 33 KB path, dates that do not parse, a document the
// pipeline fails on, one with every keyword of the template too long, an
// undeclared field as an object and as a value, and another input's
// metrics is indexed whole: Telegraf's outputs would retry a batch with one
// refused document forever.
func testNeverRefuses(t *testing.T, node *searchNode) {
	const badDate = "not a date"
	now := time.Now().UTC().Truncate(time.Millisecond)
	docs := make([]map[string]any, 0, 30)
	for n := range 24 {
		docs = append(docs, siemDocument(now.Add(-time.Duration(n)*time.Minute), n, 0))
	}
	set(docs[3], "defender_alert.file_path", longPath)
	docs[5] = graphDocument(now, now, 5, 1)
	set(docs[5], "defender_alert.first_activity_date_time", badDate)
	set(docs[7], "defender_alert.mitre_techniques", 5) // not the string the pipeline splits
	// A field the template does not declare (a later plugin's, a
	// processor's), as an object and then as a value: a measurement takes
	// no undeclared field, so neither maps it and neither conflicts.
	set(docs[11], "defender_alert.undeclared.part", "x")
	set(docs[12], "defender_alert.undeclared", "x")
	// Every keyword and date the template declares, and an undeclared string.
	declared := templateFields(t)
	for field, def := range declared {
		switch {
		case field == "measurement_name":
		case def["type"] == "keyword" || dig(def, "fields", "keyword") != nil:
			set(docs[9], field, longPath)
		case def["type"] == "date" && field != "@timestamp":
			set(docs[9], field, badDate)
		}
	}
	set(docs[9], "defender_alert.file_path", longPath)
	docs = append(docs, map[string]any{"@timestamp": now.Format(time.RFC3339Nano), "measurement_name": "defender_poll",
		"tag": map[string]any{"api": "siem", "status": "ok"}, "defender_poll": map[string]any{"requests": 1, "backlog": false}})
	// Another input's metrics sent to the same index, its field as a value
	// and then as an object: they are kept, and mapped not at all.
	for _, usage := range []any{5, map[string]any{"user": 5}} {
		docs = append(docs, map[string]any{"@timestamp": now.Format(time.RFC3339Nano), "measurement_name": "cpu",
			"tag": map[string]any{"cpu": "cpu0"}, "cpu": map[string]any{"usage": usage}})
	}

	answer, err := node.bulk("defender-never-refuses", docs)
	require.NoError(t, err)
	mapping := node.request(t, http.MethodGet, "/defender-never-refuses/_mapping", nil)
	require.Nil(t, dig(mapping, "defender-never-refuses", "mappings", "properties", "defender_alert", "properties", "undeclared"))
	require.Nil(t, dig(mapping, "defender-never-refuses", "mappings", "properties", "cpu"))
	require.NotNil(t, dig(mapping, "defender-never-refuses", "mappings", "properties", "tag", "properties", "cpu"), "a tag of its own")
	items, ok := answer["items"].([]any)
	require.True(t, ok)
	require.Len(t, items, len(docs))
	ids := make([]string, 0, len(items))
	for _, item := range items {
		status, _ := dig(item, "index", "status").(float64)
		require.Equal(t, http.StatusCreated, int(status), "%v", item)
		ids = append(ids, dig(item, "index", "_id").(string))
	}
	idList, err := json.Marshal(ids)
	require.NoError(t, err)
	found := hits(t, node.search(t, "defender-*", `{"size": 100, "query": {"ids": {"values": `+string(idList)+`}}}`))
	require.Len(t, found, len(docs))
	byID := make(map[string]map[string]any, len(found))
	for _, h := range found {
		byID[h["_id"].(string)] = h
	}

	// What each document left out of the index, and the rest as it came.
	// (A value over ignore_above is left out silently; a date that does
	// not parse is listed in _ignored.)
	for i, id := range ids {
		h := byID[id]
		source := h["_source"].(map[string]any)
		switch i {
		case 3:
			require.Nil(t, h["_ignored"])
			require.Equal(t, longPath, dig(source, "file", "path"))
			require.Equal(t, []string{"defender_alert.file_name", "file.name"},
				indexed(t, node, id, "defender_alert.file_path", "file.path", "defender_alert.file_name", "file.name"))
		case 5:
			require.Equal(t, []any{"defender_alert.first_activity_date_time"}, h["_ignored"])
			require.Equal(t, badDate, dig(source, "defender_alert", "first_activity_date_time"))
			require.Equal(t, []string{"defender_alert.alert_id", "defender_alert.last_update_date_time"}, indexed(t, node, id,
				"defender_alert.alert_id", "defender_alert.first_activity_date_time", "defender_alert.last_update_date_time"))
		case 7:
			require.Nil(t, h["_ignored"])
			require.Equal(t, "pipeline_error", dig(source, "event", "kind"))
			require.Contains(t, dig(source, "error", "message"), "splitOnToken")
		case 9:
			// Each long keyword, each text's keyword and each bad date,
			// as given or as the pipeline copied it (file.path, event.id,
			// event.created, ...), is left out; the texts are indexed.
			var long, dates, texts []string
			leaves := make(map[string]any)
			flatten("", source, leaves)
			for field, v := range leaves {
				def := declared[field]
				switch {
				case v == badDate:
					dates = append(dates, field)
				case v != longPath:
				case def == nil || def["type"] != "text":
					long = append(long, field)
				default:
					texts = append(texts, field)
					if dig(def, "fields", "keyword") != nil {
						long = append(long, field+".keyword")
					}
				}
			}
			require.Contains(t, long, "file.path")
			require.Contains(t, long, "event.id")
			require.Contains(t, dates, "event.created")
			require.Contains(t, texts, "message")
			require.Empty(t, indexed(t, node, id, append(long, dates...)...))
			require.ElementsMatch(t, texts, indexed(t, node, id, texts...))
			got := make([]string, 0, len(dates))
			for _, f := range h["_ignored"].([]any) {
				got = append(got, f.(string))
			}
			require.ElementsMatch(t, dates, got)
			require.Equal(t, "alert", dig(source, "event", "kind"))
			// The same fields of an ordinary detection are indexed.
			require.Equal(t, []string{"defender_alert.file_path", "file.path", "event.id", "event.created"},
				indexed(t, node, ids[0], "defender_alert.file_path", "file.path", "event.id", "event.created"))
		default:
			require.Nil(t, h["_ignored"], "%v", source)
		}
	}
}

// 20 Graph alerts and 20 SIEM alerts of five versions each, written in
// shuffled order, a third of the writes twice, in four concurrent bulk
// requests as outputs.opensearch sends a flush: the README's current state
// holds the latest version of each, most recent first.
func testStateAfterShuffledWrites(t *testing.T, node *searchNode) {
	const alerts, versions = 20, 5
	base := time.Now().UTC().Add(-time.Hour).Truncate(time.Millisecond)
	var docs []map[string]any
	var wantOrder []string
	for n := alerts - 1; n >= 0; n-- {
		// A later alert was updated later: it comes first in the state.
		created := base.Add(time.Duration(n) * time.Second)
		for v := range versions {
			docs = append(docs, graphDocument(created, created.Add(time.Duration(v)*time.Minute), n, v))
		}
		wantOrder = append(wantOrder, fmt.Sprintf("ga-%03d", n))
	}
	for n := alerts - 1; n >= 0; n-- {
		for part := range versions {
			docs = append(docs, siemDocument(base.Add(time.Duration(n)*time.Second), n, part))
		}
		// Graph alerts first: SIEM detections have no last_update_date_time.
		wantOrder = append(wantOrder, fmt.Sprintf("da-%03d", n))
	}
	rng := rand.New(rand.NewPCG(22, 1))
	writes := append([]map[string]any(nil), docs...)
	for _, i := range rng.Perm(len(docs))[:len(docs)/3] {
		writes = append(writes, docs[i])
	}
	rng.Shuffle(len(writes), func(i, j int) { writes[i], writes[j] = writes[j], writes[i] })
	// The writes are out of order: the last one of most alerts is not its latest version.
	last := make(map[any]map[string]any)
	for _, w := range writes {
		last[dig(w, "defender_alert", "alert_id")] = w
	}
	stale := 0
	for _, w := range last {
		if dig(w, "tag", "status") != "resolved" && dig(w, "defender_alert", "alert_part") != versions-1 {
			stale++
		}
	}
	require.Greater(t, stale, alerts)

	errs := make([]error, 4)
	var wg sync.WaitGroup
	for i := range errs {
		chunk := writes[i*len(writes)/len(errs) : (i+1)*len(writes)/len(errs)]
		wg.Go(func() {
			_, errs[i] = node.bulk("defender-shuffled", chunk)
		})
	}
	wg.Wait()
	for _, err := range errs {
		require.NoError(t, err)
	}
	require.Equal(t, len(writes), totalHits(t, node.search(t, "defender-*", `{"size": 0, "track_total_hits": true}`)))

	state, order := latestState(t, node)
	require.Equal(t, wantOrder, order)
	// The plugin README's query, for the ten alerts changed last.
	plugin := regexp.MustCompile("(?s)```json\n(\\{[^`]*\"collapse\"[^`]*)```").
		FindStringSubmatch(string(repoFile(t, "plugins/inputs/microsoft_defender/README.md")))
	require.NotNil(t, plugin, "the plugin README's query with collapse")
	_, top := stateOf(t, node.run(t, readmeRequest{http.MethodPost, "defender-*/_search", plugin[1]}))
	require.Equal(t, wantOrder[:10], top)
	for id, h := range state {
		source := h["_source"].(map[string]any)
		if strings.HasPrefix(id, "ga-") {
			require.Equal(t, "resolved", dig(source, "tag", "status"), id)
			require.Equal(t, fmt.Sprintf("analyst%d@contoso.com", versions-1), dig(source, "defender_alert", "assigned_to"), id)
		} else {
			require.Equal(t, fmt.Sprintf("%s:%d", id, versions-1), dig(source, "defender_alert", "full_id"), id)
		}
	}
}

// Graph alert versions from the plugin under a real Telegraf, into an
// index of versions: the README's current state holds each alert's latest
// version, and an alert whose firstActivityDateTime does not parse is
// indexed all the same.
func testGraphVersions(t *testing.T, node *searchNode) {
	sim := simulator.New(simulator.Config{TenantID: "e2e-tenant", ClientID: "e2e-client", ClientSecret: "e2e-secret"})
	server := httptest.NewServer(sim.Handler())
	defer server.Close()

	created := time.Now().UTC().Add(-10 * time.Minute).Truncate(time.Millisecond)
	device := json.RawMessage(`{"@odata.type": "#microsoft.graph.security.deviceEvidence",
  "deviceDnsName": "wks-7.contoso.local", "mdeDeviceId": "dev-7", "rbacGroupName": "Finance"}`)
	alert := func(id string) simulator.GraphAlert {
		return simulator.GraphAlert{
			ID: id, ProviderAlertID: id, IncidentID: "1007", TenantID: "e2e-tenant", Status: "new", Severity: "high",
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
	latest := alert("da-tracked")
	// Another alert, created earlier: two alerts of the same tags and
	// createdDateTime whose lastUpdateDateTime is the same to 100 ns would
	// be the same point to Telegraf, and so the same document id.
	other := alert("da-other")
	other.CreatedDateTime = created.Add(-time.Minute).Format(time.RFC3339Nano)
	badDate := alert("da-bad-date")
	badDate.CreatedDateTime = created.Add(-2 * time.Minute).Format(time.RFC3339Nano)
	badDate.FirstActivityDateTime = "not a date"
	require.NoError(t, sim.AddGraph(other, badDate, latest))

	a := startAgentWithOutput(t, graphSection(server.URL, `initial_lookback = "1h"`, `delay = "0s"`),
		opensearchOutput(node.url, `"defender-graph-history"`, "defender-ecs", "  force_document_id = true\n"))

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
	// Each version once the previous one is the current state.
	for i, change := range versions {
		if i > 0 {
			latest = alert("da-tracked")
			change(&latest)
			require.NoError(t, sim.AddGraph(latest))
		}
		waitFor(t, a, fmt.Sprintf("version %d in the state", i+1), func() bool {
			// The output creates the index on its first write; until its
			// shard has started, a search on it answers 503.
			if status, _ := node.do(t, http.MethodGet, "/_cluster/health/defender-graph-history?wait_for_status=yellow&timeout=1s",
				nil); status != http.StatusOK {
				return false
			}
			state, _ := latestState(t, node)
			return dig(state["da-tracked"], "_source", "defender_alert", "last_update_date_time") ==
				normalizeGraphTime(t, latest.LastUpdateDateTime)
		})
	}
	a.stop(t)

	state, _ := latestState(t, node)
	require.Len(t, state, 3, "one document per alert")
	require.Contains(t, state, "da-other")
	doc := state["da-tracked"]["_source"].(map[string]any)
	require.Equal(t, "resolved", dig(doc, "tag", "status"))
	require.Equal(t, "analyst2@contoso.com", dig(doc, "defender_alert", "assigned_to"))
	require.Equal(t, "truePositive", dig(doc, "defender_alert", "classification"))
	require.Equal(t, "malware", dig(doc, "defender_alert", "determination"))
	require.Equal(t, normalizeGraphTime(t, latest.LastUpdateDateTime), dig(doc, "defender_alert", "resolved_date_time"))
	// The ECS fields of a Graph alert.
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

	// The alert with a date that does not parse: indexed, the date as the
	// plugin emitted it, left out of the index.
	var emitted telegraf.Metric
	for _, m := range byName(a.metrics(t), "defender_alert") {
		if id, _ := m.GetField("alert_id"); id == "da-bad-date" {
			emitted = m
		}
	}
	require.NotNil(t, emitted)
	bad := state["da-bad-date"]
	if first, ok := emitted.GetField("first_activity_date_time"); ok {
		require.Equal(t, first, dig(bad, "_source", "defender_alert", "first_activity_date_time"))
		require.Equal(t, []any{"defender_alert.first_activity_date_time"}, bad["_ignored"], "the date %q", first)
	} else {
		require.Nil(t, bad["_ignored"])
	}

	// The index keeps every version.
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
