//go:build unix

package microsoft_defender

import (
	"fmt"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// A FIFO as federated_token_file would hang the read until a writer came,
// and /dev/zero never ends: both are refused before a byte is read.
func TestFederatedTokenFileThatIsAFIFOOrADeviceIsRefused(t *testing.T) {
	fifo := filepath.Join(t.TempDir(), "token")
	require.NoError(t, unix.Mkfifo(fifo, 0o600))
	for file, kind := range map[string]string{fifo: "a named pipe (FIFO)", "/dev/zero": "a device"} {
		recorder := &recordedRequests{}
		plugin := signInPlugin(t, recorder, func(m *MicrosoftDefender) {
			signInMethods(t)["workload identity"](m)
			m.FederatedTokenFile = file
		})
		_, err := plugin.tokens.token(t.Context())
		require.EqualError(t, err, fmt.Sprintf("workload identity: reading federated_token_file %q: %s, not a regular file", file, kind))
		require.Empty(t, recorder.requests)
	}
}
