package microsoft_defender

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/influxdata/telegraf/config"
	"github.com/influxdata/telegraf/testutil"
)

// statePlugin is a valid plugin on stateFile, not yet initialised.
func statePlugin(stateFile string, logger *testutil.CaptureLogger) *MicrosoftDefender {
	p := validPlugin()
	p.StateFile = stateFile
	p.Log = logger
	p.now = func() time.Time { return fixedNow }
	return p
}

// A directory at the state file's path is refused before anything is
// opened or locked.
func TestStateFileThatIsADirectoryIsRefused(t *testing.T) {
	dir := t.TempDir()
	err := statePlugin(dir, &testutil.CaptureLogger{}).Init()
	require.EqualError(t, err, fmt.Sprintf("state_file %q is a directory, not a regular file: point it at a file of its own", dir))
	require.NoFileExists(t, lockStatePath(dir))
}

// A file that is not JSON, such as a telegraf.conf named by mistake, is
// refused and left as it is.
func TestStateFileThatIsAnotherFileIsRefused(t *testing.T) {
	for name, content := range map[string]string{
		"telegraf.conf": "[agent]\n  interval = \"10s\"\n",
		"a JSON array":  "  [1, 2]",
	} {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "telegraf.conf")
			require.NoError(t, os.WriteFile(path, []byte(content), 0o640))
			logger := &testutil.CaptureLogger{}
			p := statePlugin(path, logger)
			require.EqualError(t, p.Init(), fmt.Sprintf("state_file %q is not a state file of this plugin (it does not hold a JSON object): "+
				"refusing to overwrite it; point state_file at a file of its own", path))
			after, err := os.ReadFile(path)
			require.NoError(t, err)
			require.Equal(t, content, string(after))
			entries, err := os.ReadDir(filepath.Dir(path))
			require.NoError(t, err)
			require.Len(t, entries, 2, "the file and its lock file, nothing moved aside")
			require.Empty(t, logger.Warnings())

			// The refusal released the lock.
			require.NoError(t, os.Remove(path))
			require.NoError(t, statePlugin(path, logger).Init())
		})
	}
}

// An empty file, as `touch` leaves it, is a first run without a warning.
func TestEmptyStateFileIsAFirstRun(t *testing.T) {
	path := filepath.Join(t.TempDir(), "defender.state")
	require.NoError(t, os.WriteFile(path, nil, 0o600))
	logger := &testutil.CaptureLogger{}
	p := statePlugin(path, logger)
	require.NoError(t, p.Init())
	require.Empty(t, logger.Warnings())
	require.Contains(t, logger.Messages()[0].String(), fmt.Sprintf("I! [] State file %q is empty: first run, reading the last 2h0m0s", path))
	require.True(t, p.cursor.watermark.IsZero())
}

// A corrupt state file is moved aside, never overwritten; a second one in
// the same second gets a name of its own.
func TestCorruptStateFileIsMovedAside(t *testing.T) {
	path := filepath.Join(t.TempDir(), "defender.state")
	for i, corrupt := range []string{`{"version":1,"watermark":`, `{"version":1,"watermark":"yesterday"}`} {
		require.NoError(t, os.WriteFile(path, []byte(corrupt), 0o600))
		logger := &testutil.CaptureLogger{}
		p := statePlugin(path, logger)
		require.NoError(t, p.Init())
		aside := path + ".corrupt-20200930T150000Z"
		if i == 1 {
			aside += "-2"
		}
		reason := "unexpected end of JSON input"
		if i == 1 {
			reason = `parsing time "yesterday" as "2006-01-02T15:04:05Z07:00": cannot parse "yesterday" as "2006"`
		}
		require.Equal(t, []string{fmt.Sprintf("W! [] State file %q is corrupt (%s): moved it to %q, starting as on a first run", path, reason, aside)},
			logger.Warnings())
		moved, err := os.ReadFile(aside)
		require.NoError(t, err)
		require.Equal(t, corrupt, string(moved))
		require.NoFileExists(t, path)

		p.stateDirty = true
		p.Stop()
		saved, err := os.ReadFile(path)
		require.NoError(t, err)
		require.Contains(t, string(saved), `"version":1`)
	}
	moved, err := os.ReadFile(path + ".corrupt-20200930T150000Z")
	require.NoError(t, err)
	require.Equal(t, `{"version":1,"watermark":`, string(moved), "the second move left the first alone")
}

// A state file over maxStateFileSize is not read whole but moved aside.
func TestOversizedStateFileIsMovedAside(t *testing.T) {
	path := filepath.Join(t.TempDir(), "defender.state")
	f, err := os.Create(path)
	require.NoError(t, err)
	_, err = f.WriteString(`{"version":1,"seen":{`)
	require.NoError(t, err)
	require.NoError(t, f.Truncate(maxStateFileSize+1)) // sparse: costs no disk
	require.NoError(t, f.Close())

	logger := &testutil.CaptureLogger{}
	p := statePlugin(path, logger)
	require.NoError(t, p.Init())
	aside := path + ".corrupt-20200930T150000Z"
	require.Equal(t, []string{fmt.Sprintf("W! [] State file %q is larger than the 67108864 bytes a state file may hold: "+
		"moved it to %q, starting as on a first run", path, aside)}, logger.Warnings())
	info, err := os.Stat(aside)
	require.NoError(t, err)
	require.Equal(t, maxStateFileSize+1, info.Size())
	require.True(t, p.cursor.watermark.IsZero())
}

// A state the plugin could not read back is not written.
func TestStateOverTheCapIsNotWritten(t *testing.T) {
	server := stub(t, func(w http.ResponseWriter, _ *http.Request) {
		respond(t, w, []byte("["+detectionJSON("a:1", "2020-09-30T14:00:00Z")+","+detectionJSON("b:1", "2020-09-30T14:10:00Z")+"]"))
	})
	path := filepath.Join(t.TempDir(), "defender.state")
	p := stubbedPlugin(t, server, &testutil.CaptureLogger{}, func(m *MicrosoftDefender) { m.StateFile = path })
	gatherOK(t, p)
	data, err := json.Marshal(p.state())
	require.NoError(t, err)
	saved := maxStateFileSize
	maxStateFileSize = int64(len(data) - 1)
	t.Cleanup(func() { maxStateFileSize = saved })

	var acc testutil.Accumulator
	require.NoError(t, p.Gather(&acc))
	require.Len(t, acc.Errors, 1)
	require.EqualError(t, acc.Errors[0], fmt.Sprintf("saving the state to %q failed, a restart would repeat detections: "+
		"the state is %d bytes, more than the %d a state file may hold: lower overlap", path, len(data), len(data)-1))
	require.NoFileExists(t, path)
}

// A second plugin instance on the same state file fails at Init, naming the
// file; once the first stops, the file is free.
func TestSecondInstanceOnAStateFileFails(t *testing.T) {
	path := filepath.Join(t.TempDir(), "defender.state")
	first := statePlugin(path, &testutil.CaptureLogger{})
	require.NoError(t, first.Init())

	second := statePlugin(path, &testutil.CaptureLogger{})
	require.EqualError(t, second.Init(), fmt.Sprintf("state_file %q is in use by another process or plugin instance, which holds its lock %q: "+
		"give each instance a state file of its own", path, path+".lock"))

	first.Stop()
	third := statePlugin(path, &testutil.CaptureLogger{})
	require.NoError(t, third.Init())
	third.Stop()
}

// holdLockEnv makes the test binary a process that holds a state file's
// lock until its stdin closes or it is killed.
const holdLockEnv = "DEFENDER_TEST_HOLD_STATE_LOCK"

// Another process holding the lock makes Init fail; when that process dies
// (SIGKILL, as in a crash), the operating system releases its lock and the
// plugin starts.
func TestStateFileLockedByAnotherProcess(t *testing.T) {
	if path := os.Getenv(holdLockEnv); path != "" {
		lock, err := lockState(path)
		require.NoError(t, err)
		fmt.Println("locked")
		io.Copy(io.Discard, os.Stdin) //nolint:errcheck // any end of stdin ends the helper
		require.NoError(t, lock.Close())
		return
	}

	path := filepath.Join(t.TempDir(), "defender.state")
	cmd := exec.Command(os.Args[0], "-test.run=^TestStateFileLockedByAnotherProcess$")
	cmd.Env = append(os.Environ(), holdLockEnv+"="+path)
	stdin, err := cmd.StdinPipe()
	require.NoError(t, err)
	defer stdin.Close()
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	line, err := bufio.NewReader(stdout).ReadString('\n')
	require.NoError(t, err)
	require.Equal(t, "locked\n", line)

	err = statePlugin(path, &testutil.CaptureLogger{}).Init()
	require.EqualError(t, err, fmt.Sprintf("state_file %q is in use by another process or plugin instance, which holds its lock %q: "+
		"give each instance a state file of its own", path, path+".lock"))

	require.NoError(t, cmd.Process.Kill())
	require.Error(t, cmd.Wait(), "killed")
	p := statePlugin(path, &testutil.CaptureLogger{})
	require.NoError(t, p.Init())
	p.Stop()
}

// A state file belongs to the stream it was read from: a change of the
// stream makes it foreign, an unrelated change does not.
func TestStreamChangesOnlyWithTheStream(t *testing.T) {
	base := validPlugin()
	require.NoError(t, base.Init())
	unrelated := validPlugin()
	unrelated.Timeout = config.Duration(time.Minute)
	unrelated.PageSize = 100
	unrelated.ClientSecret = config.NewSecret([]byte("rotated"))
	unrelated.MachineGroups = nil
	require.NoError(t, unrelated.Init())
	require.Equal(t, base.source(), unrelated.source())

	for name, change := range map[string]func(*MicrosoftDefender){
		"region":         func(m *MicrosoftDefender) { m.Region = "uk" },
		"tenant":         func(m *MicrosoftDefender) { m.TenantID = "fabrikam.onmicrosoft.com" },
		"machine groups": func(m *MicrosoftDefender) { m.MachineGroups = []string{"Servers"} },
	} {
		other := validPlugin()
		change(other)
		require.NoError(t, other.Init())
		require.NotEqual(t, base.source(), other.source(), name)
	}
}
