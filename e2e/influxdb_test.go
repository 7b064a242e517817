//go:build e2e

package e2e

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	simulator "github.com/sectelemetry/telegraf-defender/internal/sim"
)

// influxDB is a real influxd (1.x) on loopback with a temporary data
// directory.
type influxDB struct {
	url string
	cmd *exec.Cmd
}

// startInfluxDB starts influxd, or skips the test where it is not
// installed, except under CI=true, where a skip would hide a missing
// install step.
func startInfluxDB(t *testing.T) *influxDB {
	t.Helper()
	return startInfluxDBOn(t, freePort(t))
}

// startInfluxDBOn is startInfluxDB answering HTTP on httpPort.
func startInfluxDBOn(t *testing.T, httpPort int) *influxDB {
	t.Helper()
	path, err := exec.LookPath("influxd")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("influxd is not installed, and CI=true does not allow skipping: apt-get install -y influxdb")
		}
		t.Skip("influxd is not installed: apt-get install -y influxdb (Debian's InfluxDB 1.x) to run this test")
	}
	dir := t.TempDir()
	rpcPort := freePort(t)
	conf := fmt.Sprintf(`reporting-disabled = true
bind-address = "127.0.0.1:%d"
[meta]
  dir = %q
[data]
  dir = %q
  wal-dir = %q
  query-log-enabled = false
[http]
  bind-address = "127.0.0.1:%d"
  log-enabled = false
[monitor]
  store-enabled = false
[continuous_queries]
  enabled = false
`, rpcPort, filepath.Join(dir, "meta"), filepath.Join(dir, "data"), filepath.Join(dir, "wal"), httpPort)
	confPath := filepath.Join(dir, "influxdb.conf")
	require.NoError(t, os.WriteFile(confPath, []byte(conf), 0o600))

	db := &influxDB{url: fmt.Sprintf("http://127.0.0.1:%d", httpPort)}
	var log syncBuffer
	db.cmd = exec.Command(path, "-config", confPath)
	db.cmd.Stdout, db.cmd.Stderr = &log, &log
	require.NoError(t, db.cmd.Start())
	t.Cleanup(func() {
		db.cmd.Process.Kill() //nolint:errcheck // the test is over
		db.cmd.Wait()         //nolint:errcheck // killed on purpose
		if t.Failed() {
			t.Logf("influxd's log:\n%s", log.String())
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(db.url + "/ping")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusNoContent {
				return db
			}
		}
		require.True(t, time.Now().Before(deadline), "influxd did not answer /ping; its log:\n%s", log.String())
		time.Sleep(50 * time.Millisecond)
	}
}

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// series is one series of an InfluxQL answer.
type series struct {
	Name    string            `json:"name"`
	Tags    map[string]string `json:"tags"`
	Columns []string          `json:"columns"`
	Values  [][]interface{}   `json:"values"`
}

// query runs InfluxQL and returns the series of its one statement.
func (db *influxDB) query(t *testing.T, database, q string) []series {
	t.Helper()
	resp, err := http.Get(db.url + "/query?" + url.Values{"db": {database}, "q": {q}, "epoch": {"ns"}}.Encode())
	require.NoError(t, err)
	defer resp.Body.Close()
	var answer struct {
		Results []struct {
			Series []series `json:"series"`
			Error  string   `json:"error"`
		} `json:"results"`
		Error string `json:"error"`
	}
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&answer))
	require.Empty(t, answer.Error, q)
	require.Len(t, answer.Results, 1, q)
	require.Empty(t, answer.Results[0].Error, q)
	return answer.Results[0].Series
}

// The whole pipeline: simulator -> bin/telegraf-defender -> a real
// Telegraf -> a real InfluxDB. The points per severity, category and
// machine group equal the simulator's ground truth, the counts add up,
// and every query of the dashboard runs and returns rows.
func TestInfluxDBPipelineAndDashboard(t *testing.T) {
	db := startInfluxDB(t)
	sim := simulator.New(simulator.Config{TenantID: "e2e-tenant", ClientID: "e2e-client", ClientSecret: "e2e-secret",
		Seed: 31, Rate: 6, History: 3 * time.Hour, BurstEvery: 40 * time.Minute, BurstSize: 30})
	server := httptest.NewServer(sim.Handler())
	defer server.Close()

	a := startAgentWithOutput(t, searchPluginSection(server.URL), fmt.Sprintf(`
[[outputs.influxdb]]
  urls = [%q]
  database = "defender"
`, db.url))

	// Polls with a backlog, then polls that find nothing new to read.
	waitFor(t, a, "the backlog to be worked off", func() bool {
		return len(db.queryIfExists(t, `SELECT "requests" FROM "defender_poll" WHERE "backlog" = false`)) > 0
	})
	waitFor(t, a, "the counts to add up", func() bool { return db.countsAddUp(t, "defender_alert", "alert_id") })
	a.stop(t)

	polls := db.query(t, "defender", `SELECT "requests" FROM "defender_poll"`)
	require.Len(t, polls, 1)
	first := time.Unix(0, int64(polls[0].Values[0][0].(float64)))
	last := time.Unix(0, int64(polls[0].Values[len(polls[0].Values)-1][0].(float64)))

	want := make(map[string]int)
	total := 0
	for _, d := range sim.All() {
		lpt, err := time.Parse(time.RFC3339Nano, d.LastProcessedTimeUtc)
		require.NoError(t, err)
		if lpt.Before(first.Add(-2*time.Hour)) || lpt.After(last) {
			continue
		}
		want[strings.ToLower(d.Severity)+"|"+d.Category+"|"+d.MachineGroup]++
		total++
	}
	got := make(map[string]int)
	for _, s := range db.query(t, "defender", `SELECT count("full_id") FROM "defender_alert" GROUP BY "severity", "category", "machine_group"`) {
		got[s.Tags["severity"]+"|"+s.Tags["category"]+"|"+s.Tags["machine_group"]] = int(s.Values[0][1].(float64))
	}
	require.Equal(t, want, got)

	counts := db.query(t, "defender", `SELECT sum("count") FROM "defender_alert_count"`)
	require.Len(t, counts, 1)
	require.Equal(t, total, int(counts[0].Values[0][1].(float64)))

	dashboard, err := os.ReadFile(filepath.Join("..", "dashboards", "defender-influxdb.json"))
	require.NoError(t, err)
	// The incident panels' queries run in TestInTreeIncidentsIntoInfluxDB.
	_, queries := incidentQueries(dashboardQueries(t, dashboard))
	require.Len(t, queries, 10)
	for _, q := range queries {
		// Grafana's macros, as Grafana expands them for "the last day".
		q = strings.NewReplacer("$timeFilter", "time > now() - 1d", "$__interval", "1m").Replace(q)
		rows := 0
		for _, s := range db.query(t, "defender", q) {
			rows += len(s.Values)
		}
		require.Positive(t, rows, "the dashboard query returned no rows: %s", q)
	}
}

// queryIfExists is query for a database that may not exist yet.
// countsAddUp reports whether the counts of measurement+"_count" add up to
// its points, counted by a field each has: the plugin counts an alert once
// the outputs confirmed it, so the counts follow the points by a flush and a poll.
func (db *influxDB) countsAddUp(t *testing.T, measurement, field string) bool {
	t.Helper()
	points := db.queryIfExists(t, fmt.Sprintf(`SELECT count(%q) FROM %q`, field, measurement))
	counts := db.queryIfExists(t, fmt.Sprintf(`SELECT sum("count") FROM %q`, measurement+"_count"))
	return len(points) == 1 && len(counts) == 1 && points[0].Values[0][1] == counts[0].Values[0][1]
}

func (db *influxDB) queryIfExists(t *testing.T, q string) []series {
	t.Helper()
	for _, s := range db.query(t, "", "SHOW DATABASES") {
		for _, v := range s.Values {
			if v[0] == "defender" {
				return db.query(t, "defender", q)
			}
		}
	}
	return nil
}

// dashboardQueries returns the InfluxQL of every panel target.
func dashboardQueries(t *testing.T, dashboard []byte) []string {
	t.Helper()
	var d struct {
		Panels []struct {
			Targets []struct {
				Query string `json:"query"`
			} `json:"targets"`
		} `json:"panels"`
	}
	require.NoError(t, json.Unmarshal(dashboard, &d))
	var queries []string
	for _, p := range d.Panels {
		for _, target := range p.Targets {
			queries = append(queries, target.Query)
		}
	}
	return queries
}
