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
	"net/http/httputil"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/stretchr/testify/require"

	"github.com/influxdata/telegraf/plugins/parsers/influx"

	simulator "github.com/sectelemetry/telegraf-defender/internal/sim"
)

// Telegraf's outputs.opensearch and outputs.elasticsearch fail a whole
// batch when the server refuses one document of it, and retry that batch
// for ever: one refused document would hold every document behind it. So
// the template and the pipeline must accept whatever the plugin can emit.
// Here SIEM detections, Graph alert versions (with their evidence) and
// incident versions carry hostile values, drawn with a fixed seed, in every
// string the plugin turns into a field or a tag; the plugin built into
// Telegraf sends them through both outputs into a real node, behind a proxy
// that records each bulk request and answer. The node refused nothing,
// Telegraf logged no output error, each output sent every metric Telegraf
// emitted, each document sent is in that output's indices exactly once as
// it was sent, and every field the plugin emitted is one the template
// declares, so that "dynamic": false leaves none of them unsearchable.
func TestOpenSearchNeverRefusesHostileValues(t *testing.T) {
	// Both outputs at once write some 120 MB: the node refuses (429) a bulk
	// request that would take its bytes in flight over 10% of the heap
	// (indexing_pressure.memory.limit), and 512 MB leave that to chance.
	t.Setenv("OPENSEARCH_HEAP", "1g")
	// outputs.elasticsearch refuses a server below version 5.
	node := startOpenSearch(t, "compatibility.override_main_response_version=true")
	node.install(t)
	sim, counts := hostileSimulator(t, 22)
	server := httptest.NewServer(sim.Handler())
	t.Cleanup(server.Close)

	proxy := bulkRecorder(t, node.url)
	dir := t.TempDir()
	lookback, delay := `initial_lookback = "2h"`, `delay = "0s"`
	conf := fmt.Sprintf(`
[agent]
  interval = "2s"
  flush_interval = "1s"
  omit_hostname = true
%s%s%s
[[outputs.opensearch]]
  urls = [%[4]q]
  index_name = 'defender-os-{{.Time.Format "2006.01.02"}}'
  manage_template = false
  template_name = "defender"
  timeout = "60s"
  force_document_id = true
  use_pipeline = "defender-ecs"

## It sends a batch as one bulk request, which must stay under the
## node's limits (see above, and http.max_content_length, 100 MB).
[[outputs.elasticsearch]]
  metric_batch_size = 20
  urls = [%[4]q]
  index_name = "defender-es-%%Y.%%m.%%d"
  manage_template = false
  timeout = "60s"
  force_document_id = true
  use_pipeline = "defender-ecs"

`, siemSection(server.URL, "e2e-secret", lookback, delay), graphSection(server.URL, lookback, delay, "include_evidence = true"),
		incidentSection(server.URL, "e2e-secret", lookback, delay), proxy.url)
	a := startInTree(t, dir, "telegraf", conf)

	// Each section has emitted what it read and then polled without
	// finding anything new.
	apis := [...]string{"siem", "graph", "graph_incidents"}
	deadline := time.Now().Add(3 * time.Minute)
	for {
		done := 0
		polls := emittedPolls(t, a)
		for _, api := range apis {
			busy := false
			for _, m := range polls {
				if m.Tags["api"] != api {
					continue
				}
				if m.Fields["alerts_emitted"].(int64) > 0 || m.Fields["backlog"].(bool) {
					busy = true
				} else if busy {
					done++
					break
				}
			}
		}
		if done == len(apis) {
			break
		}
		require.True(t, time.Now().Before(deadline), "the sections did not finish reading; telegraf's log:\n%s", a.stderr.String())
		time.Sleep(time.Second)
	}
	a.stop(t)

	requests, size := proxy.volume()
	t.Logf("%d bulk requests of %d MB in all", requests, size>>20)
	require.Empty(t, proxy.refusals(), "bulk requests or documents the node refused")
	log := a.stderr.String()
	for _, line := range strings.Split(log, "\n") {
		require.NotRegexp(t, `^\S+ E! \[(outputs\.|agent\] Error writing)`, line, "telegraf logged an output error")
	}
	require.NotContains(t, log, "failed to index")
	require.NotContains(t, log, "indexing failure")

	// The plugin emitted every hostile record, once or more.
	emitted := emittedMetrics(t, a)
	records := map[string]map[string]bool{"siem": {}, "graph": {}, "incident": {}}
	for _, m := range emitted {
		switch {
		case m.Name == "defender_alert" && m.Fields["full_id"] != nil:
			records["siem"][m.Fields["full_id"].(string)] = true
		case m.Name == "defender_alert":
			records["graph"][fmt.Sprint(m.Fields["alert_id"], "@", m.Fields["last_update_date_time"])] = true
		case m.Name == "defender_incident":
			records["incident"][fmt.Sprint(m.Fields["incident_id"], "@", m.Fields["last_update_date_time"])] = true
		}
	}
	for kind, n := range counts {
		require.Len(t, records[kind], n, "%s records emitted", kind)
	}

	// The values reached the outputs as hostile as they were drawn.
	var long, controls, cjk int
	declared := templateFields(t)
	names := make(map[string]bool)
	for _, m := range emitted {
		names[m.Name] = true
		for key, v := range m.Fields {
			require.Contains(t, declared, m.Name+"."+key, "a field the template does not declare: not searchable under \"dynamic\": false")
			s, ok := v.(string)
			if !ok {
				continue
			}
			if utf8.RuneCountInString(s) > 8191 {
				long++
			}
			if strings.ContainsAny(s, "\x00\x01\x1b\u0085") {
				controls++
			}
			if strings.ContainsRune(s, '攻') {
				cjk++
			}
		}
	}
	require.Len(t, names, 5, "measurements: %v", names)
	t.Logf("%d metrics emitted; %d field values over 8191 characters, %d with control characters, %d with CJK",
		len(emitted), long, controls, cjk)
	require.Positive(t, long)
	require.Positive(t, controls)
	require.Positive(t, cjk)

	// Each output sent every metric Telegraf emitted (to the file output),
	// and each document it sent is in its indices exactly once, as sent.
	// The documents are taken from the bulk requests, and compared with the
	// metrics on name, time and fields, per distinct tags: line protocol,
	// the file output's format, cannot keep a tag value that ends in a
	// backslash, and the document id hashes the tags.
	want := make(map[string]int)
	series := make(map[string]bool)
	for _, m := range emitted {
		tags, err := json.Marshal(m.Tags)
		require.NoError(t, err)
		if key := m.key(t); !series[key+" "+string(tags)] {
			series[key+" "+string(tags)] = true
			want[key]++
		}
	}
	ignored := 0
	for _, output := range []string{"defender-os-", "defender-es-"} {
		docs := proxy.documents(output)
		got := make(map[string]int)
		for _, doc := range docs {
			got[doc.key(t)]++
		}
		require.Equal(t, want, got, "%s: the metrics sent", output)

		pattern := output + "*"
		require.Equal(t, len(docs), totalHits(t, node.search(t, pattern, `{"size": 0, "track_total_hits": true}`)), "%s: documents", pattern)
		ids := make([]string, 0, len(docs))
		for id := range docs {
			ids = append(ids, id)
		}
		for start := 0; start < len(ids); start += 10 {
			chunk := ids[start:min(start+10, len(ids))]
			list, err := json.Marshal(chunk)
			require.NoError(t, err)
			found := hits(t, node.search(t, pattern, `{"size": 10, "_source": ["@timestamp", "measurement_name", "tag", "defender_*"],
  "query": {"ids": {"values": `+string(list)+`}}}`))
			require.Len(t, found, len(chunk), "%s: documents of %v", pattern, chunk)
			for _, h := range found {
				var sent map[string]any
				require.NoError(t, json.Unmarshal(docs[h["_id"].(string)].source, &sent))
				source := h["_source"].(map[string]any)
				name := sent["measurement_name"].(string)
				for _, key := range []string{"@timestamp", "measurement_name", "tag", name} {
					require.Equal(t, sent[key], source[key], "%s: %s of %s", pattern, key, h["_id"])
				}
				if h["_ignored"] != nil {
					ignored++
				}
			}
		}
	}
	// Values the index left out and kept in _source: dates that do not parse.
	require.Positive(t, ignored)
}

// bulkProxy passes requests to a node and keeps what it refused of each
// bulk request: outputs.opensearch logs nothing when a whole request is
// refused, and outputs.elasticsearch logs one document of a batch.
type bulkProxy struct {
	url      string
	mu       sync.Mutex
	refused  []string
	sent     map[string]sentDocument // by index and id
	requests int
	bytes    int64 // of the bulk requests' bodies
}

func bulkRecorder(t *testing.T, target string) *bulkProxy {
	t.Helper()
	to, err := url.Parse(target)
	require.NoError(t, err)
	p := &bulkProxy{sent: make(map[string]sentDocument)}
	proxy := &httputil.ReverseProxy{}
	proxy.Rewrite = func(r *httputil.ProxyRequest) {
		r.SetURL(to)
		req := r.Out
		req.Header.Del("Accept-Encoding") // answers the proxy can read
		if !strings.HasSuffix(req.URL.Path, "/_bulk") || req.Body == nil {
			return
		}
		body, err := io.ReadAll(req.Body)
		req.Body = io.NopCloser(bytes.NewReader(body))
		p.mu.Lock()
		defer p.mu.Unlock()
		p.requests++
		p.bytes += int64(len(body))
		if err != nil {
			p.refused = append(p.refused, "reading a bulk request: "+err.Error())
			return
		}
		// Lines in pairs: the action, naming index and id, and the document.
		lines := bytes.Split(bytes.TrimSuffix(body, []byte("\n")), []byte("\n"))
		for i := 0; i+1 < len(lines); i += 2 {
			var action map[string]struct {
				Index string `json:"_index"`
				ID    string `json:"_id"`
			}
			if err := json.Unmarshal(lines[i], &action); err != nil || len(action) != 1 {
				p.refused = append(p.refused, fmt.Sprintf("an action the test does not read: %.200s", lines[i]))
				return
			}
			for _, a := range action {
				p.sent[a.Index+"/"+a.ID] = sentDocument{index: a.Index, source: lines[i+1]}
			}
		}
	}
	proxy.ModifyResponse = func(resp *http.Response) error {
		if !strings.HasSuffix(resp.Request.URL.Path, "/_bulk") {
			return nil
		}
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			return err
		}
		resp.Body = io.NopCloser(bytes.NewReader(body))
		var answer struct {
			Errors bool             `json:"errors"`
			Items  []map[string]any `json:"items"`
		}
		p.mu.Lock()
		defer p.mu.Unlock()
		if resp.StatusCode != http.StatusOK || json.Unmarshal(body, &answer) != nil {
			p.refused = append(p.refused, fmt.Sprintf("%s: %.500s", resp.Status, body))
			return nil
		}
		for _, item := range answer.Items {
			for _, result := range item {
				if e := dig(result, "error"); e != nil {
					p.refused = append(p.refused, fmt.Sprintf("%v: %.500v", dig(result, "status"), e))
				}
			}
		}
		return nil
	}
	server := httptest.NewServer(proxy)
	t.Cleanup(server.Close)
	p.url = server.URL
	return p
}

// sentDocument is a document of a bulk request.
type sentDocument struct {
	index  string
	source []byte
}

// key is what tells the document's metric apart: its name, time and
// fields (in the JSON of the outputs).
func (d sentDocument) key(t *testing.T) string {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(d.source))
	dec.UseNumber()
	var doc map[string]any
	require.NoError(t, dec.Decode(&doc))
	at, err := time.Parse(time.RFC3339Nano, doc["@timestamp"].(string))
	require.NoError(t, err)
	name := doc["measurement_name"].(string)
	fields, err := json.Marshal(doc[name])
	require.NoError(t, err)
	return fmt.Sprintf("%s %d %s", name, at.UnixNano(), fields)
}

// documents returns the last version sent of each document of the indices
// starting with prefix, by id.
func (p *bulkProxy) documents(prefix string) map[string]sentDocument {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make(map[string]sentDocument)
	for key, d := range p.sent {
		if strings.HasPrefix(d.index, prefix) {
			out[key[strings.IndexByte(key, '/')+1:]] = d
		}
	}
	return out
}

// volume is how many bulk requests of how many bytes the proxy passed.
func (p *bulkProxy) volume() (int, int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.requests, p.bytes
}

func (p *bulkProxy) refusals() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.refused...)
}

// emittedMetric is a metric Telegraf emitted.
type emittedMetric struct {
	Name   string
	Tags   map[string]string
	Fields map[string]any
	Time   time.Time
}

// key is sentDocument.key of the metric.
func (m emittedMetric) key(t *testing.T) string {
	t.Helper()
	fields, err := json.Marshal(m.Fields)
	require.NoError(t, err)
	return fmt.Sprintf("%s %d %s", m.Name, m.Time.UnixNano(), fields)
}

// emittedMetrics is what the agent's file output wrote.
func emittedMetrics(t *testing.T, a *agent) []emittedMetric {
	t.Helper()
	metrics := a.metrics(t)
	out := make([]emittedMetric, 0, len(metrics))
	for _, m := range metrics {
		out = append(out, emittedMetric{Name: m.Name(), Tags: m.Tags(), Fields: m.Fields(), Time: m.Time()})
	}
	return out
}

// emittedPolls is the defender_poll metrics the agent's file output wrote
// so far: its lines alone, since a line the output is writing may end
// inside a field holding a line break.
func emittedPolls(t *testing.T, a *agent) []emittedMetric {
	t.Helper()
	data, err := os.ReadFile(a.out)
	if os.IsNotExist(err) {
		return nil
	}
	require.NoError(t, err)
	var lines []byte
	for line := range bytes.Lines(data) {
		if bytes.HasPrefix(line, []byte("defender_poll,")) && bytes.HasSuffix(line, []byte("\n")) {
			lines = append(lines, line...)
		}
	}
	parser := &influx.Parser{}
	require.NoError(t, parser.Init())
	metrics, err := parser.Parse(lines)
	require.NoError(t, err)
	out := make([]emittedMetric, 0, len(metrics))
	for _, m := range metrics {
		out = append(out, emittedMetric{Name: m.Name(), Tags: m.Tags(), Fields: m.Fields(), Time: m.Time()})
	}
	return out
}

// hostileSimulator serves, within the last hour, SIEM detections, Graph
// alerts of one or two versions and incident versions whose strings are
// hostile values drawn from seed; it returns how many of each it holds
// (siem, graph, incident).
func hostileSimulator(t *testing.T, seed uint64) (*simulator.Server, map[string]int) {
	t.Helper()
	rng := rand.New(rand.NewPCG(seed, 0))
	h := func() string { return hostile(rng) }
	sim := simulator.New(simulator.Config{TenantID: "e2e-tenant", ClientID: "e2e-client", ClientSecret: "e2e-secret"})
	now := time.Now().UTC().Truncate(time.Millisecond)
	// A time the API's filter finds, or a hostile one that it never reads.
	when := func() string {
		if rng.IntN(3) == 0 {
			return h()
		}
		return hostileTime(rng, now)
	}
	counts := map[string]int{"siem": 120, "graph": 0, "incident": 0}
	for i := range counts["siem"] {
		d := simulator.Detection{
			AlertTime: when(), ComputerDNSName: h(), AlertTitle: h(), Category: h(), Severity: h(), AlertID: strconv.Itoa(i) + "#" + h(),
			Actor: h(), LinkToWDATP: h(), IocName: h(), IocValue: h(), CreatorIocName: h(), CreatorIocValue: h(), Sha1: h(),
			FileName: h(), FilePath: h(), IPAddress: h(), URL: h(), IoaDefinitionID: h(), UserName: h(),
			AlertPart: rng.IntN(1<<20) - 1<<19, LastProcessedTimeUtc: now.Add(-time.Duration(rng.IntN(3600)) * time.Second).Format(simulator.TimeLayout),
			ThreatCategory: h(), ThreatFamily: h(), ThreatName: h(), RemediationAction: h(), Source: h(), Md5: h(), Sha256: h(),
			UserDomain: h(), LogOnUsers: h(), MachineDomain: h(), MachineName: h(), InternalIPv4List: h(), InternalIPv6List: h(),
			FileHash: h(), DeviceID: h(), MachineGroup: h(), Description: h(), DeviceCreatedMachineTags: h(), CloudCreatedMachineTags: h(),
			CommandLine: h(), IncidentLinkToWDATP: h(), ReportID: rng.Int64() - 1<<62, LinkToMTP: h(), IncidentLinkToMTP: h(),
			ExternalID: h(), IocUniqueID: h(),
		}
		d.FullID = d.AlertID + ":" + strconv.Itoa(d.AlertPart)
		if rng.IntN(2) == 0 {
			b := rng.IntN(2) == 0
			d.RemediationIsSuccess, d.WasExecutingWhileDetected = &b, &b
		}
		require.NoError(t, sim.Add(d))
	}
	hp := func() *string {
		if rng.IntN(5) == 0 {
			return nil
		}
		s := h()
		return &s
	}
	alertIDs := make([]string, 0, 60)
	for i := range 60 {
		a := simulator.GraphAlert{
			ID: strconv.Itoa(i) + "#" + h(), ProviderAlertID: h(), IncidentID: h(), TenantID: h(), Status: h(), Severity: h(),
			Classification: hp(), Determination: hp(), ServiceSource: h(), DetectionSource: h(), DetectorID: h(), Category: h(),
			Title: h(), Description: h(), RecommendedActions: h(), AlertWebURL: h(), IncidentWebURL: h(), ActorDisplayName: hp(),
			ThreatDisplayName: hp(), ThreatFamilyName: hp(), MitreTechniques: []string{h(), h(), h()}, AssignedTo: hp(),
			CreatedDateTime: when(), ResolvedDateTime: hp(), FirstActivityDateTime: when(), LastActivityDateTime: h(),
		}
		device, err := json.Marshal(map[string]any{"@odata.type": "#microsoft.graph.security.deviceEvidence",
			"deviceDnsName": h(), "mdeDeviceId": h(), "rbacGroupName": h(), "osPlatform": h()})
		require.NoError(t, err)
		other, err := json.Marshal(map[string]any{"@odata.type": "#microsoft.graph.security.processEvidence",
			"processCommandLine": h(), "detectionStatus": h(), "remediationStatusDetails": h()})
		require.NoError(t, err)
		a.Evidence = []json.RawMessage{device, other}
		alertIDs = append(alertIDs, a.ID)
		// The API serves an alert's current version alone: one each.
		a.LastUpdateDateTime = now.Add(-time.Duration(rng.IntN(3600)) * time.Second).Format(time.RFC3339Nano)
		require.NoError(t, sim.AddGraph(a))
		counts["graph"]++
	}
	for i := range 40 {
		in := simulator.GraphIncident{
			ID: strconv.Itoa(i) + "#" + h(), TenantID: h(), Status: h(), Severity: h(), Classification: h(), Determination: h(),
			DisplayName: h(), Description: h(), AssignedTo: hp(), IncidentWebURL: h(), RedirectIncidentID: hp(),
			CreatedDateTime: when(), LastUpdateDateTime: now.Add(-time.Duration(rng.IntN(3600)) * time.Second).Format(time.RFC3339Nano),
			CustomTags: []string{h(), h()}, SystemTags: []string{h()}, Comments: []map[string]string{{"comment": h()}},
			AlertIDs: []string{alertIDs[rng.IntN(len(alertIDs))], h()},
		}
		require.NoError(t, sim.AddIncidents(in))
		counts["incident"]++
	}
	return sim, counts
}

// hostileTime is a time the APIs may send: now, the ends of the years a
// metric can hold, the epoch, in other forms and offsets.
func hostileTime(rng *rand.Rand, now time.Time) string {
	switch rng.IntN(8) {
	case 0:
		return "1678-01-02T00:00:00Z"
	case 1:
		return "2262-04-10T23:59:59.9999999Z"
	case 2:
		return "1970-01-01T00:00:00Z"
	case 3:
		return now.Add(-time.Hour).In(time.FixedZone("", -(13*3600 + 45*60))).Format(time.RFC3339Nano)
	case 4:
		return now.Add(-time.Minute).Format("2006-01-02 15:04:05.999999999")
	default:
		return now.Add(-time.Duration(rng.IntN(3600)) * time.Second).Format(simulator.TimeLayout)
	}
}

// Runes for hostile strings: C0 and C1 controls, line and paragraph
// separators, a byte order mark, noncharacters, zero-width and bidi
// marks, combining marks, CJK, and outside the basic plane (two UTF-16
// units each, four bytes of UTF-8).
var hostileRunes = []rune("\x00\x01\x07\x08\t\n\v\f\r\x1b\x1f\x7f\u0080\u0085\u009f\u00a0\u2028\u2029\ufeff\ufffe\uffff" +
	"\u200b\u200d\u202e\u2066\u0301\u0336攻撃者がフォルダ名を選ぶ제목😀𝕏🏳️‍🌈𐀀\U0010FFFD\"\\'{}[]<>&%$.,:;=-_/ aZ09")

// hostileWords are values that look like something else: numbers, dates,
// JSON, Mustache and Painless, field names and paths.
var hostileWords = []string{
	"0", "-1", "1e400", "-1e400", "NaN", "Infinity", "-Infinity", "0x1F", "99999999999999999999", "1.7976931348623157e309", "007",
	"true", "false", "null", "", " ", "\t\n", "not a date", "2024-13-45T99:99:99Z", "0000-00-00T00:00:00Z", "0001-01-01T00:00:00Z",
	"9999-12-31T23:59:59.9999999Z", "+292278994-08-17T07:12:55.807Z", "-292275055-05-16T16:47:04.192Z", "1700000000000",
	"30/09/2020 14:00", `{"a": 1}`, "[1, 2]", `{"@timestamp": 5}`, "{{{tag.severity}}}", "{{#x}}{{/x}}", "{{", "}}",
	"ctx._source", "params.scores", "a.b", ".", "..", "_id", "_source", "@timestamp", "measurement_name", `C:\Temp\..\..\`,
	"' OR 1=1 --", "\\u0000", "%s%n%x", "\xff\xfe invalid UTF-8 \xc3", "\x00",
}

// hostile draws a hostile string: huge, on a limit, made of hostile runes,
// or a hostile word; the lengths straddle ignore_above (8191 characters),
// Lucene's term limit (32,766 bytes) and the plugin's cut (32,766 bytes).
func hostile(rng *rand.Rand) string {
	runes := func(n int) string {
		var b strings.Builder
		for range n {
			b.WriteRune(hostileRunes[rng.IntN(len(hostileRunes))])
		}
		return b.String()
	}
	switch rng.IntN(16) {
	case 0:
		return runes(6000 + rng.IntN(30000))
	case 1:
		return strings.Repeat("a", 8191+rng.IntN(2))
	case 2:
		return strings.Repeat("攻", 10921+rng.IntN(4)) // 32,763 to 32,772 bytes
	case 3:
		return strings.Repeat("😀", 4095+rng.IntN(2)) // 8,190 or 8,192 UTF-16 units
	case 4:
		return `C:\Temp\` + strings.Repeat("攻", 11000)
	case 5:
		return strings.Repeat("\x00\x01\x1b", 100+rng.IntN(3000))
	case 6, 7, 8, 9:
		return hostileWords[rng.IntN(len(hostileWords))]
	case 10, 11, 12:
		return runes(1 + rng.IntN(200))
	default:
		return "wks-" + strconv.Itoa(rng.IntN(1000)) + ".contoso.local"
	}
}

// A template of the user's own that refuses the plugin's documents (here
// tag.severity as a number): Telegraf logs each refused document and
// retries the batch, the plugin stops reading at max_undelivered_alerts
// (plus what the answer that reached it held),
// and once the template is fixed every detection of the backlog is one
// document: nothing was lost or written twice.
func TestOpenSearchRefusingTemplateLosesNothing(t *testing.T) {
	const limit = 400
	node := startOpenSearch(t)
	node.request(t, http.MethodPut, "/_ingest/pipeline/defender-ecs", repoFile(t, "dashboards/defender-ecs-pipeline.json"))
	node.request(t, http.MethodPut, "/_index_template/defender", []byte(`{"index_patterns": ["defender-*"],
  "template": {"mappings": {"properties": {"tag": {"properties": {"severity": {"type": "long"}}}}}}}`))
	sim, _, simURL := newStillSimulator(t, 67, 40)
	want := len(sim.All())
	require.Greater(t, want, 3*limit, "a backlog larger than the limit")
	a := startInTree(t, t.TempDir(), "telegraf", "[agent]\n  interval = \"2s\"\n  flush_interval = \"1s\"\n  omit_hostname = true\n"+
		siemSection(simURL, "e2e-secret", `delay = "0s"`, `initial_lookback = "2h"`, fmt.Sprintf("max_undelivered_alerts = %d", limit))+
		opensearchOutput(node.url, `'defender-{{.Time.Format "2006.01.02"}}'`, "defender-ecs", "  force_document_id = true\n"))

	alerts := func() int { return len(byName(a.metrics(t), "defender_alert")) }
	waitFor(t, a, "a refused batch in Telegraf's log", func() bool {
		return strings.Contains(a.stderr.String(), "E! [agent] Error writing to outputs.opensearch: failed to index")
	})
	require.Contains(t, a.stderr.String(),
		"E! [outputs.opensearch] error while OpenSearch bulkIndexing: mapper_parsing_exception: failed to parse field [tag.severity] of type [long]")
	// The plugin stops reading: a poll that has sent the limit waits, up to
	// a minute, for its alerts to be confirmed, and reports them then as
	// unconfirmed, with a backlog left.
	var poll emittedMetric
	for deadline := time.Now().Add(3 * time.Minute); ; time.Sleep(time.Second) {
		if polls := emittedPolls(t, a); len(polls) > 0 {
			poll = polls[0]
			break
		}
		require.True(t, time.Now().Before(deadline), "no poll within three minutes; telegraf's log:\n%s", a.stderr.String())
	}
	held := alerts()
	t.Logf("held at %d alerts (max_undelivered_alerts = %d) of %d: %v", held, limit, want, poll.Fields)
	require.Equal(t, int64(held), poll.Fields["alerts_unconfirmed"])
	require.Equal(t, true, poll.Fields["backlog"])
	require.Less(t, held, 2*limit)
	require.Less(t, held, want)

	// The user fixes the template: the shipped one, and the index made
	// with the old one deleted. The batch retried goes in, and the rest.
	require.Equal(t, held, alerts(), "the plugin read on while its alerts were refused")
	node.request(t, http.MethodPut, "/_index_template/defender", repoFile(t, "dashboards/defender-index-template.json"))
	node.request(t, http.MethodDelete, "/defender-*", nil)
	documents := func() map[string]int {
		if status, _ := node.do(t, http.MethodGet, "/_cluster/health/defender-*?wait_for_status=yellow&timeout=1s", nil); status != http.StatusOK {
			return nil
		}
		answer := node.search(t, "defender-*", fmt.Sprintf(`{"size": 0, "track_total_hits": true,
  "query": {"term": {"measurement_name": "defender_alert"}},
  "aggs": {"ids": {"terms": {"field": "defender_alert.full_id", "size": %d}}}}`, want+10))
		if dig(answer, "aggregations") == nil { // no index yet
			return nil
		}
		got := make(map[string]int)
		for _, b := range buckets(t, answer, "ids") {
			got[b["key"].(string)] = int(b["doc_count"].(float64))
		}
		return got
	}
	waitFor(t, a, "every detection in OpenSearch", func() bool { return len(documents()) >= want })
	a.stop(t)
	all := make(map[string]int, want)
	for _, d := range sim.All() {
		all[d.FullID] = 1
	}
	require.Equal(t, all, documents())
}
