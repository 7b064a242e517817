//go:build e2e

package e2e

import (
	"bytes"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	neturl "net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// execdDiskConf is a telegraf.conf with the disk buffer (the README's advice
// for inputs.execd) running bin/telegraf-defender on its own poll interval of
// a second, and a file output to out.
func execdDiskConf(t *testing.T, bufferDir, pluginPath, out string) string {
	t.Helper()
	return execdDiskConfWith(t, bufferDir, pluginPath, out, `"-poll_interval", "1s"`, "none")
}

// execdDiskConfWith is execdDiskConf with the binary's poll flags and execd's signal.
func execdDiskConfWith(t *testing.T, bufferDir, pluginPath, out, pollFlags, signal string) string {
	t.Helper()
	return fmt.Sprintf(`
[agent]
  interval = "1s"
  flush_interval = "1s"
  buffer_strategy = "disk"
  buffer_directory = %q
  omit_hostname = true

[[inputs.execd]]
  command = [%q, "-config", %q, %s]
  signal = %q
  restart_delay = "1s"
  data_format = "influx"

[[outputs.file]]
  files = [%q]
  data_format = "influx"
`, bufferDir, binary(t, "telegraf-defender"), pluginPath, pollFlags, signal, out)
}

// alertIDs counts the full_id of each defender_alert the agent's file output wrote.
func alertIDs(t *testing.T, a *agent) map[string]int {
	t.Helper()
	seen := make(map[string]int)
	for _, m := range byName(a.metrics(t), "defender_alert") {
		id, _ := m.GetField("full_id")
		seen[id.(string)]++
	}
	return seen
}

// gone reports whether the process pid has ended (gone or a zombie).
func gone(pid int) bool {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	// The state follows the command's closing parenthesis.
	fields := strings.Fields(string(data[bytes.LastIndexByte(data, ')')+1:]))
	return len(fields) > 0 && fields[0] == "Z"
}

// Under inputs.execd with the disk buffer, Telegraf stalls (SIGSTOP: a
// stalled disk, a starved CPU) while the plugin goes on polling. The plugin
// writes the new detections into the stdout pipe, counts them as delivered
// once the write returned and saves its state past them; Telegraf has not
// read them. Then:
//   - Telegraf dies (SIGKILL: the OOM killer, systemd's stop timeout): the
//     kernel drops the pipe's contents with its last reader;
//   - Ctrl-C (SIGINT to the process group, as in `make run`): the plugin
//     stops at once and exits; Telegraf, resuming, reaps it, and exec.Cmd.Wait
//     closes the pipe under execd's reader, which reads it in small chunks.
//     A race: before the fix, it lost them in about half of ten runs here; after it,
//     the plugin would not count them delivered and nothing may be lost.
//
// Restarted on the same state file and disk buffer, nothing reads them
// again: they never reach the output, although the README promises that a
// SIGKILL or clean stop loses nothing.
func TestExecdStalledTelegrafLosesNothing(t *testing.T) {
	t.Parallel()
	t.Run("SIGKILL", func(t *testing.T) {
		stalledTelegrafLosesNothing(t, func(t *testing.T, telegraf *agent, plugin int) {
			require.NoError(t, telegraf.cmd.Process.Kill())
			telegraf.cmd.Wait() //nolint:errcheck // killed
			waitFor(t, telegraf, "the orphaned plugin to end", func() bool { return gone(plugin) })
		})
	})
	t.Run("Ctrl-C", func(t *testing.T) {
		stalledTelegrafLosesNothing(t, func(t *testing.T, telegraf *agent, plugin int) {
			require.NoError(t, syscall.Kill(plugin, syscall.SIGINT))
			waitFor(t, telegraf, "the plugin to stop", func() bool { return gone(plugin) })
			require.NoError(t, telegraf.cmd.Process.Signal(syscall.SIGINT))
			require.NoError(t, telegraf.cmd.Process.Signal(syscall.SIGCONT))
			exited := make(chan error, 1)
			go func() { exited <- telegraf.cmd.Wait() }()
			select {
			case <-exited:
			case <-time.After(30 * time.Second):
				t.Fatalf("telegraf did not stop on SIGINT; its log:\n%s", telegraf.stderr.String())
			}
		})
	})
}

func stalledTelegrafLosesNothing(t *testing.T, end func(t *testing.T, telegraf *agent, plugin int)) {
	t.Parallel()
	sim, clock, url := newStillSimulator(t, 71, 3)
	dir := t.TempDir()
	stateFile := filepath.Join(dir, "defender.state")
	pluginPath := filepath.Join(dir, "defender.conf")
	require.NoError(t, os.WriteFile(pluginPath, []byte(siemSection(url, "e2e-secret", `delay = "0s"`, `initial_lookback = "2h"`,
		"max_requests_per_minute = 600", fmt.Sprintf("state_file = %q", stateFile))), 0o600))
	bufferDir := filepath.Join(dir, "buffer")
	out1 := filepath.Join(dir, "out1.lp")
	first := launch(t, "telegraf", filepath.Join(dir, "telegraf1.conf"), execdDiskConf(t, bufferDir, pluginPath, out1), out1)

	backlog := len(sim.All())
	require.Positive(t, backlog)
	waitFor(t, first, "the backlog in the output", func() bool { return len(alertIDs(t, first)) == backlog })
	plugins := children(t, first.cmd.Process.Pid)
	require.Len(t, plugins, 1, "telegraf runs one telegraf-defender")

	// Telegraf stalls; the detections of the last five minutes appear.
	require.NoError(t, first.cmd.Process.Signal(syscall.SIGSTOP))
	clock.Set(time.Now())
	want := len(sim.All())
	require.Greater(t, want, backlog, "detections appear while Telegraf stalls")
	// The plugin reads them and writes them into the pipe; it used to count
	// them delivered once written and, at a later poll's start, save its
	// state past them. Two polls after they appeared, it has read them.
	asked := len(sim.Requests())
	waitFor(t, first, "two polls of the plugin", func() bool { return len(sim.Requests()) >= asked+2 })
	end(t, first, plugins[0])

	out2 := filepath.Join(dir, "out2.lp")
	second := launch(t, "telegraf", filepath.Join(dir, "telegraf2.conf"), execdDiskConf(t, bufferDir, pluginPath, out2), out2)
	restarted := time.Now()
	waitFor(t, second, "a poll without backlog after the restart", func() bool {
		for _, m := range byName(second.metrics(t), "defender_poll") {
			if backlog, ok := m.GetField("backlog"); ok && !backlog.(bool) && m.Time().After(restarted.Add(time.Second)) {
				return true
			}
		}
		return false
	})
	second.stop(t)

	emitted := alertIDs(t, first)
	for id, n := range alertIDs(t, second) {
		emitted[id] += n
	}
	var missing []string
	all := sim.All()
	for i := range all {
		if d := &all[i]; emitted[d.FullID] == 0 {
			missing = append(missing, d.LastProcessedTimeUtc+" "+d.FullID)
		}
	}
	require.Empty(t, missing, "%d of the %d detections that appeared while Telegraf stalled are lost", len(missing), want-backlog)
}

// Built into Telegraf, InfluxDB answers 401 (a rotated password) for the
// first writes, then takes them: Telegraf's influxdb output drops a batch
// answered 4xx (also 413 over max-body-size, a partial write) and reports it
// written, so the plugin counts it delivered and never reads it again. No
// fix in the plugin can see this; the README says so. The test records the
// limit: it fails once Telegraf's output keeps such batches.
func TestInTreeInfluxDBRefusingWritesLosesTheRefusedBatches(t *testing.T) {
	t.Parallel()
	sim, _, url := newStillSimulator(t, 73, 3)
	db := startInfluxDB(t)
	target, err := neturl.Parse(db.url)
	require.NoError(t, err)
	proxy := httputil.NewSingleHostReverseProxy(target)
	var refused atomic.Int64
	refusing := atomic.Bool{}
	refusing.Store(true)
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/write" && refusing.Load() {
			refused.Add(1)
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusUnauthorized)
			w.Write([]byte(`{"error":"authorization failed"}`)) //nolint:errcheck // the client reads what it can
			return
		}
		proxy.ServeHTTP(w, r)
	}))
	t.Cleanup(front.Close)
	a := startInTree(t, t.TempDir(), "telegraf", "[agent]\n  interval = \"1s\"\n  flush_interval = \"1s\"\n  omit_hostname = true\n"+
		siemSection(url, "e2e-secret", `delay = "0s"`, `initial_lookback = "2h"`)+fmt.Sprintf(`
[[outputs.influxdb]]
  urls = [%q]
  database = "defender"
`, front.URL))
	want := len(sim.All())
	waitFor(t, a, "the backlog in the file output", func() bool { return len(alertIDs(t, a)) == want })
	waitFor(t, a, "a refused write", func() bool { return refused.Load() > 0 })
	refusing.Store(false)
	polls := func() int {
		for _, s := range db.queryIfExists(t, `SELECT count("requests") FROM "defender_poll"`) {
			return int(s.Values[0][1].(float64))
		}
		return 0
	}
	waitFor(t, a, "polls in InfluxDB: it takes writes again", func() bool { return polls() >= 3 })
	a.stop(t)
	require.Less(t, db.alertPoints(t), want, "detections in InfluxDB: the refused batches are dropped by Telegraf's output")
}

// Plain clean stops of Telegraf (SIGTERM: systemctl stop or restart) in the
// middle of a backlog, under the README's [[inputs.execd]] section and its
// advice, the disk buffer (which slows Telegraf's reading of the pipe): at each
// stop the plugin flushes its last lines, saves its state past them and
// exits, and Telegraf's exec.Cmd.Wait closes the pipe under execd's reader
// before it read them all ("read |0: file already closed" in Telegraf's
// log). What it had not read is lost for good.
func TestExecdCleanRestartsLoseNothing(t *testing.T) {
	t.Parallel()
	const runs = 6
	sim, _, url := newStillSimulator(t, 79, 90)
	dir := t.TempDir()
	stateFile := filepath.Join(dir, "defender.state")
	pluginPath := filepath.Join(dir, "defender.conf")
	require.NoError(t, os.WriteFile(pluginPath, []byte(siemSection(url, "e2e-secret", `delay = "0s"`, `initial_lookback = "2h"`,
		"max_requests_per_minute = 600", fmt.Sprintf("state_file = %q", stateFile))), 0o600))
	run := 0
	start := func() *agent {
		run++
		out := filepath.Join(dir, fmt.Sprintf("out%d.lp", run))
		return launch(t, "telegraf", filepath.Join(dir, fmt.Sprintf("telegraf%d.conf", run)),
			execdDiskConfWith(t, filepath.Join(dir, "buffer"), pluginPath, out, `"-poll_interval_disabled"`, "STDIN"), out)
	}
	emitted := make(map[string]int)
	stops := 0
	for done := false; !done; {
		a := start()
		started := time.Now()
		waitFor(t, a, "a part of the backlog, or its end", func() bool {
			for _, m := range byName(a.metrics(t), "defender_poll") {
				if backlog, ok := m.GetField("backlog"); ok && !backlog.(bool) && m.Time().After(started) {
					done = true
				}
			}
			// The last run works the backlog off.
			return done || stops < runs && len(alertIDs(t, a)) >= 1000
		})
		if !done {
			stops++
		}
		a.stop(t)
		for id, n := range alertIDs(t, a) {
			emitted[id] += n
		}
	}
	var missing []string
	all := sim.All()
	for i := range all {
		if d := &all[i]; emitted[d.FullID] == 0 {
			missing = append(missing, d.LastProcessedTimeUtc+" "+d.FullID)
		}
	}
	require.Empty(t, missing, "%d of %d detections lost over %d clean restarts", len(missing), len(all), stops)
	t.Logf("%d detections over %d clean restarts, %d emitted", len(all), stops, len(emitted))
}
