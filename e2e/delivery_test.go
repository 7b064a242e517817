//go:build e2e

package e2e

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	simulator "github.com/sectelemetry/telegraf-defender/internal/sim"
)

// smallBuffer is an [agent] whose buffer, 1,000 metrics, is smaller than
// the tests' backlogs.
const smallBuffer = `
[agent]
  interval = "1s"
  flush_interval = "1s"
  metric_batch_size = 500
  metric_buffer_limit = 1000
  omit_hostname = true
`

// Built into Telegraf with a buffer smaller than the backlog and InfluxDB
// down for the first 15 s: every detection reaches InfluxDB once. With
// max_undelivered_alerts below the buffer the plugin waits for the output
// and Telegraf drops nothing; above it Telegraf drops what overflows, the
// outputs report it rejected, and the plugin reads it again.
func TestInTreeOutputOutageLosesNothing(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name           string
		maxUndelivered int
		drops          bool
	}{
		// In flight: the limit and one answer of half of it, 900.
		{"bounded below the buffer", 600, false},
		{"above the buffer", 5000, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			sim, _, url := newStillSimulator(t, 47, 90)
			port := freePort(t)
			a := startInTree(t, t.TempDir(), "telegraf", smallBuffer+siemSection(url, "e2e-secret", `delay = "0s"`, `initial_lookback = "2h"`,
				"max_requests_per_minute = 600", fmt.Sprintf("max_undelivered_alerts = %d", tc.maxUndelivered))+fmt.Sprintf(`
[[outputs.influxdb]]
  urls = ["http://127.0.0.1:%d"]
  database = "defender"
  timeout = "2s"
`, port))
			want := len(sim.All())
			require.Greater(t, want, 3000, "a backlog larger than the buffer")
			time.Sleep(15 * time.Second) // the outage
			db := startInfluxDBOn(t, port)
			points := func() int {
				for _, s := range db.queryIfExists(t, `SELECT count("full_id") FROM "defender_alert"`) {
					return int(s.Values[0][1].(float64))
				}
				return 0
			}
			waitFor(t, a, "every detection in InfluxDB", func() bool { return points() >= want })
			a.stop(t)
			require.Equal(t, want, points())
			dropped := strings.Contains(a.stderr.String(), "metrics have been dropped")
			require.Equal(t, tc.drops, dropped, "Telegraf's log:\n%s", a.stderr.String())
		})
	}
}

// The external plugin under execd gets no confirmation from Telegraf's
// outputs: with buffer_strategy = "disk", as the README says, a backlog
// larger than metric_buffer_limit survives an InfluxDB outage whole.
func TestExecdOutputOutageWithDiskBuffer(t *testing.T) {
	t.Parallel()
	sim, _, url := newStillSimulator(t, 53, 90)
	dir := t.TempDir()
	port := freePort(t)
	pluginPath := filepath.Join(dir, "defender.conf")
	require.NoError(t, os.WriteFile(pluginPath, []byte(siemSection(url, "e2e-secret", `delay = "0s"`, `initial_lookback = "2h"`,
		"max_requests_per_minute = 600")), 0o600))
	out := filepath.Join(dir, "out.lp")
	a := launch(t, "telegraf", filepath.Join(dir, "telegraf.conf"), fmt.Sprintf(`
[agent]
  interval = "1s"
  flush_interval = "1s"
  metric_batch_size = 500
  metric_buffer_limit = 1000
  buffer_strategy = "disk"
  buffer_directory = %q
  omit_hostname = true

[[inputs.execd]]
  command = [%q, "-config", %q, "-poll_interval_disabled"]
  signal = "STDIN"
  data_format = "influx"

[[outputs.influxdb]]
  urls = ["http://127.0.0.1:%d"]
  database = "defender"
  timeout = "2s"

[[outputs.file]]
  files = [%q]
  data_format = "influx"
`, filepath.Join(dir, "buffer"), binary(t, "telegraf-defender"), pluginPath, port, out), out)
	want := len(sim.All())
	require.Greater(t, want, 3000, "a backlog larger than the buffer")
	waitFor(t, a, "the backlog read during the outage", func() bool { return len(byName(a.metrics(t), "defender_alert")) >= want })
	db := startInfluxDBOn(t, port)
	points := func() int {
		for _, s := range db.queryIfExists(t, `SELECT count("full_id") FROM "defender_alert"`) {
			return int(s.Values[0][1].(float64))
		}
		return 0
	}
	waitFor(t, a, "every detection in InfluxDB", func() bool { return points() >= want })
	a.stop(t)
	require.Equal(t, want, points())
	require.NotContains(t, a.stderr.String(), "metrics have been dropped")
}

// The same outage with OpenSearch: built into Telegraf, a backlog larger
// than the buffer and the node down for the first 15 s; every detection
// becomes one document.
func TestOpenSearchOutageLosesNothingInTree(t *testing.T) {
	t.Parallel()
	sim, _, url := newStillSimulator(t, 59, 90)
	port := freePort(t)
	a := startInTree(t, t.TempDir(), "telegraf", smallBuffer+
		siemSection(url, "e2e-secret", `delay = "0s"`, `initial_lookback = "2h"`, "max_requests_per_minute = 600")+
		opensearchOutput(fmt.Sprintf("http://127.0.0.1:%d", port), `'defender-{{.Time.Format "2006.01.02"}}'`, "defender-ecs",
			"  force_document_id = true\n  ## Down at start: connect again later, buffering meanwhile.\n  startup_error_behavior = \"retry\"\n"))
	want := len(sim.All())
	require.Greater(t, want, 3000, "a backlog larger than the buffer")
	time.Sleep(15 * time.Second) // the outage
	node := startOpenSearch(t, fmt.Sprintf("http.port=%d", port))
	node.install(t)
	documents := func() int {
		node.request(t, http.MethodPost, "/defender-*/_refresh", nil)
		return totalHits(t, node.search(t, "defender-*", `{"size":0,"track_total_hits":true,"query":{"term":{"measurement_name":"defender_alert"}}}`))
	}
	waitFor(t, a, "every detection in OpenSearch", func() bool { return documents() >= want })
	a.stop(t)
	require.Equal(t, want, documents())
}

// Six sections in one Telegraf, each reading the whole backlog (a tag
// tells them apart), with a buffer of 1,000 and InfluxDB down for the
// first 15 s: each section's every detection reaches InfluxDB.
func TestInTreeManySectionsThroughAnOutage(t *testing.T) {
	const sections = 6
	sim, _, url := newStillSimulator(t, 61, 40)
	port := freePort(t)
	var conf strings.Builder
	conf.WriteString(smallBuffer)
	for i := range sections {
		conf.WriteString(siemSection(url, "e2e-secret", `delay = "0s"`, `initial_lookback = "2h"`, "max_requests_per_minute = 600",
			"[inputs.microsoft_defender.tags]", fmt.Sprintf("  section = \"%d\"", i)))
	}
	a := startInTree(t, t.TempDir(), "telegraf", conf.String()+fmt.Sprintf(`
[[outputs.influxdb]]
  urls = ["http://127.0.0.1:%d"]
  database = "defender"
  timeout = "5s"
`, port))
	want := len(sim.All())
	time.Sleep(15 * time.Second) // the outage
	db := startInfluxDBOn(t, port)
	perSection := func() map[string]int {
		got := make(map[string]int)
		for _, s := range db.queryIfExists(t, `SELECT count("full_id") FROM "defender_alert" GROUP BY "section"`) {
			got[s.Tags["section"]] = int(s.Values[0][1].(float64))
		}
		return got
	}
	all := make(map[string]int)
	for i := range sections {
		all[strconv.Itoa(i)] = want
	}
	waitFor(t, a, "every section's detections in InfluxDB", func() bool {
		got := perSection()
		for _, n := range got {
			if n < want {
				return false
			}
		}
		return len(got) == sections
	})
	a.stop(t)
	require.Equal(t, all, perSection())
}

// Records that share every tag and their time to the 100 ns (two Graph
// alerts created at once, each with three versions that keep every tag; two
// SIEM detections of different alerts with one AlertTime and AlertPart) are
// each their own point in InfluxDB and their own document in OpenSearch
// under force_document_id.
func TestOpenSearchAndInfluxDBKeepRecordsSharingTimeAndTagsApart(t *testing.T) {
	t.Parallel()
	sim := simulator.New(simulator.Config{TenantID: "e2e-tenant", ClientID: "e2e-client", ClientSecret: "e2e-secret"})
	created := time.Now().UTC().Add(-5 * time.Minute).Truncate(time.Second)
	version := func(id string, v int) simulator.GraphAlert {
		assigned := fmt.Sprintf("analyst%d@contoso.com", v)
		return simulator.GraphAlert{ID: id, Status: "new", Severity: "high", Category: "Malware",
			ServiceSource: "microsoftDefenderForEndpoint", DetectionSource: "antivirus", AssignedTo: &assigned,
			CreatedDateTime:    created.Format(time.RFC3339Nano),
			LastUpdateDateTime: created.Add(time.Duration(v) * time.Minute).Format(time.RFC3339Nano)}
	}
	require.NoError(t, sim.AddGraph(version("twin-a", 0), version("twin-b", 0)))
	for _, id := range []string{"da-twin1:1", "da-twin2:1"} {
		d := simDetection(id, "High", "Malware", "Finance", created.Add(time.Minute))
		d.AlertTime = created.Format(time.RFC3339Nano)
		require.NoError(t, sim.Add(d))
	}
	server := httptest.NewServer(sim.Handler())
	t.Cleanup(server.Close)

	db := startInfluxDB(t)
	node := startOpenSearch(t)
	node.install(t)
	a := startInTree(t, t.TempDir(), "telegraf", "[agent]\n  interval = \"1s\"\n  flush_interval = \"1s\"\n"+
		inTreeSections(server.URL)+fmt.Sprintf(`
[[outputs.influxdb]]
  urls = [%q]
  database = "defender"
`, db.url)+opensearchOutput(node.url, `'defender-{{.Time.Format "2006.01.02"}}'`, "defender-ecs", "  force_document_id = true\n"))
	points := func() int {
		for _, s := range db.queryIfExists(t, `SELECT count("alert_id") FROM "defender_alert"`) {
			return int(s.Values[0][1].(float64))
		}
		return 0
	}
	documents := func() int {
		node.request(t, http.MethodPost, "/defender-*/_refresh", nil)
		return totalHits(t, node.search(t, "defender-*", `{"size":0,"track_total_hits":true,"query":{"term":{"measurement_name":"defender_alert"}}}`))
	}
	// The API shows an alert's current version only: each update is added
	// once the one before was read.
	for v, want := range []int{4, 6, 8} {
		if v > 0 {
			require.NoError(t, sim.AddGraph(version("twin-a", v), version("twin-b", v)))
		}
		waitFor(t, a, fmt.Sprintf("%d records in InfluxDB and OpenSearch", want), func() bool { return points() >= want && documents() >= want })
	}
	a.stop(t)
	require.Equal(t, 8, points())
	require.Equal(t, 8, documents())
}
