package microsoft_defender

import (
	"io"
	"runtime"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// hugeKnownEvidencePage is hugeEvidencePage with the 100 MB under a key
// the evidence decoder knows (deviceDnsName), in the second evidence,
// after the device evidence was found.
func hugeKnownEvidencePage(size int64) io.Reader {
	return io.MultiReader(
		strings.NewReader(`{"value":[{"id":"a","lastUpdateDateTime":"2026-01-01T00:00:00Z","evidence":[`+
			`{"@odata.type":"#microsoft.graph.security.deviceEvidence","deviceDnsName":"h","rbacGroupName":"g"},`+
			`{"@odata.type":"#microsoft.graph.security.processEvidence","deviceDnsName":"`),
		io.LimitReader(repeatedByte('x'), size),
		strings.NewReader(`"}]}]}`))
}

// memory must not grow with the evidence's size (BENCHMARKS.md:
// 0.29 MB per 100 MB alert). It does when the bytes sit under a key the
// evidence decoder knows, in any evidence, even after the device evidence
// it wants was found.
func TestHugeEvidenceAfterTheDeviceIsNotHeld(t *testing.T) {
	const size = 20 << 20
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	_, err := decodeGraphPage(hugeKnownEvidencePage(size), func(a *graphAlert) bool {
		require.Equal(t, "g", a.device.RbacGroupName)
		require.Equal(t, 2, a.evidenceCount)
		return true
	})
	require.NoError(t, err)
	runtime.ReadMemStats(&after)
	allocated := after.TotalAlloc - before.TotalAlloc
	require.Less(t, allocated, uint64(4<<20))
}
