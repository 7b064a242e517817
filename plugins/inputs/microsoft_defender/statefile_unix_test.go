//go:build unix

package microsoft_defender

import (
	"fmt"
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
