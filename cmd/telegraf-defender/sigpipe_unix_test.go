//go:build unix

package main

import (
	"bytes"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	simulator "github.com/sectelemetry/telegraf-defender/internal/sim"
)

// Once Telegraf is gone, a write to stdout killed the process: Go's default
// for SIGPIPE on fd 1 and 2. Stop never ran and the state was not saved. The
// write fails instead: the run stops the plugin, which saves its state, and
// ends with its error and exit status 1.
func TestBrokenStdoutEndsTheRunThroughStop(t *testing.T) {
	sim := simulator.New(simulator.Config{TenantID: simTenant, ClientID: simClientID, ClientSecret: simSecret,
		Seed: 3, Rate: 1, History: time.Hour})
	handler, asked, once := sim.Handler(), make(chan struct{}), sync.Once{}
	server := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/api/alerts" {
			once.Do(func() { close(asked) })
		}
		handler.ServeHTTP(w, r)
	}))
	defer server.Close()
	dir := t.TempDir()
	stateFile, confFile := filepath.Join(dir, "defender.state"), filepath.Join(dir, "defender.conf")
	require.NoError(t, os.WriteFile(confFile, fmt.Appendf(nil, "[[inputs.microsoft_defender]]\n  api = \"siem\"\n  endpoint_url = %q\n"+
		"  login_endpoint = %q\n  tenant_id = %q\n  client_id = %q\n  client_secret = %q\n  state_file = %q\n",
		server.URL+"/api/alerts", server.URL, simTenant, simClientID, simSecret, stateFile), 0o600))

	cmd := exec.Command(os.Args[0], "-config", confFile, "-poll_interval_disabled")
	cmd.Env = append(os.Environ(), runMainEnv+"=1")
	stdin, err := cmd.StdinPipe()
	require.NoError(t, err)
	stdoutRead, stdoutWrite, err := os.Pipe()
	require.NoError(t, err)
	require.NoError(t, stdoutRead.Close()) // Telegraf is gone
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = stdoutWrite, &stderr
	require.NoError(t, cmd.Start())
	defer cmd.Process.Kill() //nolint:errcheck // gone when the test passes
	require.NoError(t, stdoutWrite.Close())

	_, err = stdin.Write([]byte("\n"))
	require.NoError(t, err)
	select {
	case <-asked: // the poll runs: it ends writing its defender_poll line
	case <-time.After(30 * time.Second):
		t.Fatal("no poll started")
	}
	require.NoError(t, stdin.Close())
	err = cmd.Wait()
	var exit *exec.ExitError
	require.ErrorAs(t, err, &exit)
	require.Equal(t, 1, exit.ExitCode(), "%v; stderr:\n%s", err, stderr.String())
	require.Regexp(t, "\nE! writing metrics to stdout: write /dev/stdout: broken pipe\n$", stderr.String())
	require.FileExists(t, stateFile, "Stop saved the state")
}
