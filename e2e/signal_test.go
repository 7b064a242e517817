//go:build e2e

package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	simulator "github.com/sectelemetry/telegraf-defender/internal/sim"
)

// SIGTERM, or the end of stdin (how Telegraf's execd stops a process, ten
// seconds before it kills it), ends a poll whose request hangs, instead of
// waiting for the request's timeout (an hour here); the process exits
// cleanly and leaves a consistent state file.
func TestStoppingEndsAPollInFlight(t *testing.T) {
	t.Run("SIGTERM", func(t *testing.T) {
		endsAPollInFlight(t, func(cmd *exec.Cmd, _ io.WriteCloser) error { return cmd.Process.Signal(syscall.SIGTERM) })
	})
	t.Run("stdin closes", func(t *testing.T) {
		endsAPollInFlight(t, func(_ *exec.Cmd, stdin io.WriteCloser) error { return stdin.Close() })
	})
}

func endsAPollInFlight(t *testing.T, end func(*exec.Cmd, io.WriteCloser) error) {
	sim := simulator.New(simulator.Config{TenantID: "e2e-tenant", ClientID: "e2e-client", ClientSecret: "e2e-secret",
		Seed: 3, Rate: 5, History: time.Hour})
	sim.Inject(simulator.FaultHang, 1)
	server := httptest.NewServer(sim.Handler())
	defer server.Close()

	dir := t.TempDir()
	stateFile := filepath.Join(dir, "defender.state")
	confPath := filepath.Join(dir, "defender.conf")
	require.NoError(t, os.WriteFile(confPath, []byte(siemSection(server.URL, "e2e-secret",
		`timeout = "1h"`, fmt.Sprintf("state_file = %q", stateFile))), 0o600))

	cmd := exec.Command(binary(t, "telegraf-defender"), "-config", confPath, "-poll_interval_disabled")
	stdin, err := cmd.StdinPipe()
	require.NoError(t, err)
	var stdout, stderr syncBuffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	require.NoError(t, cmd.Start())
	defer cmd.Process.Kill() //nolint:errcheck // already gone when the test passes

	_, err = stdin.Write([]byte("\n"))
	require.NoError(t, err)
	deadline := time.Now().Add(30 * time.Second)
	for !hasRequest(sim, "/api/alerts") {
		require.True(t, time.Now().Before(deadline), "no poll started; stderr:\n%s", stderr.String())
		time.Sleep(10 * time.Millisecond)
	}

	signalled := time.Now()
	require.NoError(t, end(cmd, stdin))
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	select {
	case err := <-exited:
		require.NoError(t, err, "stderr:\n%s", stderr.String())
	case <-time.After(30 * time.Second):
		t.Fatalf("telegraf-defender still runs 30s after it was told to stop; stderr:\n%s", stderr.String())
	}
	t.Logf("exited %s after it was told to stop", time.Since(signalled).Round(time.Millisecond))

	require.Contains(t, stderr.String(), "I! Poll cancelled: the plugin is stopping; the next start resumes here\n")
	require.Contains(t, stdout.String(), "defender_poll,api=siem,status=partial ")
	data, err := os.ReadFile(stateFile)
	require.NoError(t, err)
	var state struct {
		Version int `json:"version"`
	}
	require.NoError(t, json.Unmarshal(data, &state))
	require.Equal(t, 1, state.Version)
}

func hasRequest(sim *simulator.Server, suffix string) bool {
	for _, r := range sim.Requests() {
		if strings.HasSuffix(r.URL.Path, suffix) {
			return true
		}
	}
	return false
}
