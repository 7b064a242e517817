//go:build e2e

// Package e2e runs the plugin the way users do, pulling from the simulator:
// bin/telegraf-defender under a real Telegraf's [[inputs.execd]], and
// built into Telegraf (bin/telegraf-intree). Its tests need those binaries
// (make build, make telegraf-intree) and are behind the build tag e2e, so
// that go test ./... on a fresh clone leaves them out: make test runs them
// with -tags e2e.
package e2e

import (
	"bytes"
	"context"
	"fmt"
	"hash/fnv"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/influxdata/telegraf"
	"github.com/influxdata/telegraf/metric"
	"github.com/influxdata/telegraf/plugins/parsers/influx"
	"github.com/influxdata/telegraf/testutil"

	simulator "github.com/sectelemetry/telegraf-defender/internal/sim"
)

// binary returns the path of a program `make build` put in bin/.
func binary(t *testing.T, name string) string {
	t.Helper()
	path, err := filepath.Abs(filepath.Join("..", "bin", name))
	require.NoError(t, err)
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("%s is missing: run `make build` (or `make test`, which builds first)", path)
	}
	return path
}

// syncBuffer collects a process's output while it runs.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// agent is a running Telegraf whose file output writes to out.
type agent struct {
	cmd    *exec.Cmd
	out    string
	stderr *syncBuffer
}

// startAgent writes the plugin's config and a telegraf.conf with one
// [[inputs.execd]] running bin/telegraf-defender, and starts Telegraf.
func startAgent(t *testing.T, pluginConf string, env ...string) *agent {
	t.Helper()
	return startAgentWithOutput(t, pluginConf, "", env...)
}

// startAgentWithOutput is startAgent with a further output section.
func startAgentWithOutput(t *testing.T, pluginConf, output string, env ...string) *agent {
	t.Helper()
	return startAgentEvery(t, "1s", pluginConf, output, env...)
}

// startAgentEvery is startAgentWithOutput with another agent interval.
func startAgentEvery(t *testing.T, interval, pluginConf, output string, env ...string) *agent {
	t.Helper()
	dir := t.TempDir()
	pluginPath := filepath.Join(dir, "defender.conf")
	require.NoError(t, os.WriteFile(pluginPath, []byte(pluginConf), 0o600))
	out := filepath.Join(dir, "out.lp")
	quoted := make([]string, 0, len(env))
	for _, e := range env {
		quoted = append(quoted, fmt.Sprintf("%q", e))
	}
	telegrafConf := fmt.Sprintf(`
[agent]
  interval = %q
  flush_interval = "1s"
  omit_hostname = true

[[inputs.execd]]
  command = [%q, "-config", %q, "-poll_interval_disabled"]
  environment = [%s]
  signal = "STDIN"
  restart_delay = "1s"
  data_format = "influx"

[[outputs.file]]
  files = [%q]
  data_format = "influx"
%s`, interval, binary(t, "telegraf-defender"), pluginPath, strings.Join(quoted, ", "), out, output)
	return launch(t, "telegraf", filepath.Join(dir, "telegraf.conf"), telegrafConf, out)
}

// launch writes conf to confPath and starts the Telegraf bin/name with it;
// its file output writes to out.
func launch(t *testing.T, name, confPath, conf, out string) *agent {
	t.Helper()
	require.NoError(t, os.WriteFile(confPath, []byte(conf), 0o600))

	a := &agent{out: out, stderr: &syncBuffer{}}
	a.cmd = exec.Command(binary(t, name), "--config", confPath)
	a.cmd.Stderr = a.stderr
	a.cmd.Stdout = a.stderr
	require.NoError(t, a.cmd.Start())
	t.Cleanup(func() {
		a.stop(t)
		if t.Failed() {
			t.Logf("telegraf's log:\n%s", a.stderr.String())
		}
	})
	return a
}

func (a *agent) stop(t *testing.T) {
	t.Helper()
	if a.cmd.ProcessState != nil {
		return
	}
	a.cmd.Process.Signal(syscall.SIGTERM) //nolint:errcheck // a process already gone is fine
	done := make(chan error, 1)
	go func() { done <- a.cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		a.cmd.Process.Kill() //nolint:errcheck // Wait below reports the outcome
		<-done
		t.Errorf("telegraf did not stop on SIGTERM; its log:\n%s", a.stderr.String())
	}
}

// metrics parses the lines Telegraf's file output wrote whole so far: a
// write in progress may have left half a line at the end.
func (a *agent) metrics(t *testing.T) []telegraf.Metric {
	t.Helper()
	data, err := os.ReadFile(a.out)
	if os.IsNotExist(err) {
		return nil
	}
	require.NoError(t, err)
	data = data[:bytes.LastIndexByte(data, '\n')+1]
	parser := &influx.Parser{}
	require.NoError(t, parser.Init())
	metrics, err := parser.Parse(data)
	require.NoError(t, err)
	return metrics
}

// waitFor polls cond until it holds or the deadline passes: the agent works
// on its own schedule, so the test waits for an observable condition.
func waitFor(t *testing.T, a *agent, what string, cond func() bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-ctx.Done():
			polls := byName(a.metrics(t), "defender_poll")
			last := "none"
			if len(polls) > 0 {
				last = fmt.Sprint(polls[len(polls)-1].Fields())
			}
			t.Fatalf("timed out waiting for %s after %d polls (the last: %s); telegraf's log:\n%s", what, len(polls), last, a.stderr.String())
		case <-tick.C:
		}
	}
}

func byName(metrics []telegraf.Metric, name string) []telegraf.Metric {
	var out []telegraf.Metric
	for _, m := range metrics {
		if m.Name() == name {
			out = append(out, m)
		}
	}
	return out
}

func simDetection(fullID, severity, category, group string, lastProcessed time.Time) simulator.Detection {
	alertID, _, _ := strings.Cut(fullID, ":")
	return simulator.Detection{
		AlertTime:            lastProcessed.Add(-time.Minute).Format(simulator.TimeLayout),
		LastProcessedTimeUtc: lastProcessed.Format(simulator.TimeLayout),
		AlertID:              alertID,
		FullID:               fullID,
		Severity:             severity,
		Category:             category,
		MachineGroup:         group,
		Source:               "EDR",
		AlertTitle:           category + " on wks-1",
		ComputerDNSName:      "wks-1.contoso.local",
	}
}

func expectedAlert(t *testing.T, d *simulator.Detection) telegraf.Metric {
	t.Helper()
	alertTime, err := time.Parse(time.RFC3339Nano, d.AlertTime)
	require.NoError(t, err)
	lastProcessed, err := time.Parse(time.RFC3339Nano, d.LastProcessedTimeUtc)
	require.NoError(t, err)
	tags := map[string]string{"severity": strings.ToLower(d.Severity), "category": d.Category, "detection_source": d.Source}
	if d.MachineGroup != "" {
		tags["machine_group"] = d.MachineGroup
	}
	return metric.New("defender_alert", tags, map[string]interface{}{
		"alert_id":                d.AlertID,
		"full_id":                 d.FullID,
		"alert_title":             d.AlertTitle,
		"computer_dns_name":       d.ComputerDNSName,
		"alert_part":              int64(0),
		"report_id":               int64(0),
		"alert_time":              alertTime.UTC().Format(time.RFC3339Nano),
		"last_processed_time_utc": lastProcessed.UTC().Format(time.RFC3339Nano),
	}, pointTime(alertTime, d.FullID))
}

// pointTime is where the plugin's README places a record: in the second of
// its time, at a fraction from an FNV-1a hash of its identity (a SIEM
// detection's FullId).
func pointTime(t time.Time, identity string) time.Time {
	h := fnv.New64a()
	h.Write([]byte(identity))
	return t.Truncate(time.Second).Add(time.Duration(h.Sum64() % uint64(time.Second)))
}

func TestExecdUnderRealTelegraf(t *testing.T) {
	sim := simulator.New(simulator.Config{TenantID: "e2e-tenant", ClientID: "e2e-client", ClientSecret: "e2e-$ecret"})
	server := httptest.NewServer(sim.Handler())
	defer server.Close()

	now := time.Now().UTC().Truncate(time.Millisecond)
	initial := []simulator.Detection{
		simDetection("da1:A", "High", "Ransomware", "Finance", now.Add(-90*time.Minute)),
		simDetection("da1:B", "High", "Ransomware", "Finance", now.Add(-90*time.Minute)),
		simDetection("da2:A", "Informational", "Discovery", "", now.Add(-5*time.Minute)),
	}
	require.NoError(t, sim.Add(initial...))

	a := startAgent(t, siemSection(server.URL, "${E2E_DEFENDER_SECRET}",
		"## The simulator shows detections at once: no need to wait for late ones.",
		`delay = "0s"`), "E2E_DEFENDER_SECRET=e2e-$ecret")

	waitFor(t, a, "the first three detections", func() bool { return len(byName(a.metrics(t), "defender_alert")) >= 3 })

	// A detection that arrives later flows in with a later poll.
	later := simDetection("da3:A", "Medium", "Execution", "Servers-EU", time.Now().UTC().Truncate(time.Millisecond))
	require.NoError(t, sim.Add(later))
	waitFor(t, a, "the later detection", func() bool { return len(byName(a.metrics(t), "defender_alert")) >= 4 })

	// Let several more polls run over the same data; none may repeat it.
	polls := len(sim.Requests())
	waitFor(t, a, "three more polls", func() bool { return len(sim.Requests()) >= polls+3 })
	a.stop(t)

	metrics := a.metrics(t)
	expected := make([]telegraf.Metric, 0, 4)
	all := append(initial[:len(initial):len(initial)], later)
	for i := range all {
		expected = append(expected, expectedAlert(t, &all[i]))
	}
	testutil.RequireMetricsEqual(t, expected, byName(metrics, "defender_alert"), testutil.SortMetrics())

	// Counts are stamped at the end of each poll's window: compare without time.
	testutil.RequireMetricsEqual(t, []telegraf.Metric{
		metric.New("defender_alert_count",
			map[string]string{"severity": "high", "category": "Ransomware", "machine_group": "Finance"},
			map[string]interface{}{"count": int64(2)}, time.Unix(0, 0)),
		metric.New("defender_alert_count",
			map[string]string{"severity": "informational", "category": "Discovery"},
			map[string]interface{}{"count": int64(1)}, time.Unix(0, 0)),
		metric.New("defender_alert_count",
			map[string]string{"severity": "medium", "category": "Execution", "machine_group": "Servers-EU"},
			map[string]interface{}{"count": int64(1)}, time.Unix(0, 0)),
	}, byName(metrics, "defender_alert_count"), testutil.SortMetrics(), testutil.IgnoreTime())

	require.NotContains(t, a.stderr.String(), "e2e-$ecret")
	require.NotContains(t, a.stderr.String(), "simtok-")
}

// The plugin's errors reach Telegraf's log as errors of the execd input,
// not as unparsed stderr lines, and without the secret.
func TestExecdLogsReachTelegrafAtTheirLevel(t *testing.T) {
	sim := simulator.New(simulator.Config{TenantID: "e2e-tenant", ClientID: "e2e-client", ClientSecret: "right"})
	server := httptest.NewServer(sim.Handler())
	defer server.Close()

	a := startAgent(t, siemSection(server.URL, "wrong-secret-value"))

	want := "E! [inputs.execd] Error in plugin: token request to " + strings.TrimPrefix(server.URL, "http://") +
		" failed: HTTP 401 Unauthorized: invalid_client (AADSTS7000215)"
	waitFor(t, a, "the token error in Telegraf's log", func() bool { return strings.Contains(a.stderr.String(), want) })
	a.stop(t)
	log := a.stderr.String()
	// execd logs lines without a level prefix as `stderr: "..."` errors.
	require.NotContains(t, log, `stderr: "`)
	require.NotContains(t, log, "wrong-secret-value")
}

// siemSection is a [[inputs.microsoft_defender]] section reading the SIEM
// API of the simulator at url as the e2e app with secret; keys are its
// further lines (keys, comments, sub-tables).
func siemSection(url, secret string, keys ...string) string {
	return pluginSection(fmt.Sprintf("  api = \"siem\"\n  endpoint_url = \"%[1]s/api/alerts\"\n  login_endpoint = \"%[1]s\"\n", url), secret, keys)
}

// graphSection is the same for Graph alerts_v2.
func graphSection(url string, keys ...string) string {
	return pluginSection(fmt.Sprintf("  api = \"graph\"\n  endpoint_url = \"%[1]s/v1.0/security/alerts_v2\"\n"+
		"  login_endpoint = \"%[1]s\"\n  scopes = [\"https://graph.microsoft.com/.default\"]\n", url), "e2e-secret", keys)
}

func pluginSection(endpoints, secret string, keys []string) string {
	var b strings.Builder
	b.WriteString("\n[[inputs.microsoft_defender]]\n" + endpoints)
	fmt.Fprintf(&b, "  tenant_id = \"e2e-tenant\"\n  client_id = \"e2e-client\"\n  client_secret = %q\n", secret)
	for _, k := range keys {
		b.WriteString("  " + k + "\n")
	}
	return b.String()
}
