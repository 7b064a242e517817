//go:build unix

package microsoft_defender

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/influxdata/telegraf/testutil"
)

// A FIFO at the state file's path would hang a read until a writer came;
// it is refused before it is opened. So is a device.
func TestStateFileThatIsAFIFOOrADeviceIsRefused(t *testing.T) {
	fifo := filepath.Join(t.TempDir(), "defender.state")
	require.NoError(t, unix.Mkfifo(fifo, 0o600))
	require.EqualError(t, statePlugin(fifo, &testutil.CaptureLogger{}).Init(),
		fmt.Sprintf("state_file %q is a named pipe (FIFO), not a regular file: point it at a file of its own", fifo))
	require.NoFileExists(t, lockStatePath(fifo))

	require.EqualError(t, statePlugin("/dev/null", &testutil.CaptureLogger{}).Init(),
		`state_file "/dev/null" is a device, not a regular file: point it at a file of its own`)
	require.NoFileExists(t, "/dev/null.lock")
}

// Two names of one state file, one a symbolic link, share its lock: the
// second instance fails at Init. A save through the link writes the file it
// points to and leaves the link a link.
func TestStateFileThroughASymlinkSharesItsLock(t *testing.T) {
	dir := t.TempDir()
	path, link := filepath.Join(dir, "defender.state"), filepath.Join(dir, "link.state")
	require.NoError(t, os.Symlink(path, link))
	first := statePlugin(path, &testutil.CaptureLogger{})
	require.NoError(t, first.Init())
	second := statePlugin(link, &testutil.CaptureLogger{})
	require.EqualError(t, second.Init(), fmt.Sprintf("state_file %q is in use by another process or plugin instance, which holds its lock %q: "+
		"give each instance a state file of its own", path, path+".lock"))
	first.Stop()

	viaLink := statePlugin(link, &testutil.CaptureLogger{})
	require.NoError(t, viaLink.Init())
	viaLink.stateDirty = true
	require.NoError(t, viaLink.commitState())
	viaLink.Stop()
	info, err := os.Lstat(link)
	require.NoError(t, err)
	require.NotZero(t, info.Mode()&os.ModeSymlink, "the link stays a link")
	require.FileExists(t, path)
}
