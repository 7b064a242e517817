package sim

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// The malformed answers are not JSON a decoder of depth 10,000 reads, and
// keep the rest of the body.
func TestMalformed(t *testing.T) {
	body := []byte(`[{"FullId":"a","AlertPart":0},{"FullId":"b","AlertPart":1}]`)
	doubled := `[{"FullId":"a","AlertPart":0},,{"FullId":"b","AlertPart":1}]` // not JSON: no JSONEq
	require.Equal(t, doubled, string(malformed(body, FaultSyntax)))
	require.Equal(t, `[,,]`, string(malformed([]byte(`[]`), FaultSyntax)))
	nested := malformed(body, FaultNested)
	require.True(t, strings.HasPrefix(string(nested), `[{"Nested":[[[`))
	require.True(t, strings.HasSuffix(string(nested), `]]],"FullId":"a","AlertPart":0},{"FullId":"b","AlertPart":1}]`))
	require.Equal(t, nestedDepth+1, strings.Count(string(nested), "["), "the array of detections and the member")
	var v any
	require.ErrorContains(t, json.Unmarshal(nested, &v), "exceeded max depth")
	require.Equal(t, `{"Nested":`+strings.Repeat("[", nestedDepth)+strings.Repeat("]", nestedDepth)+`}`,
		string(malformed([]byte(`{}`), FaultNested)))
}

// limit answers the oldest detections with LimitOldest, the newest without.
func TestSIEMLimitOldest(t *testing.T) {
	for _, oldest := range []bool{false, true} {
		sim := New(Config{Now: func() time.Time { return simNow }, SIEM: SIEMBehaviour{LimitOldest: oldest}})
		for i := range 3 {
			require.NoError(t, sim.Add(Detection{FullID: string(rune('a' + i)),
				LastProcessedTimeUtc: simNow.Add(time.Duration(i-3) * time.Minute).Format(TimeLayout)}))
		}
		got := sim.selectDetections(siemQuery{since: simNow.Add(-time.Hour), until: simNow, limit: 2}, simNow)
		want := []string{"b", "c"}
		if oldest {
			want = []string{"a", "b"}
		}
		require.Equal(t, want, []string{got[0].FullID, got[1].FullID})
	}
}

// MaxLimit lowers a larger limit, and no limit, to itself: the newest come.
func TestSIEMMaxLimit(t *testing.T) {
	sim := New(Config{Now: func() time.Time { return simNow }, SIEM: SIEMBehaviour{MaxLimit: 2}})
	for i := range 3 {
		require.NoError(t, sim.Add(Detection{FullID: string(rune('a' + i)),
			LastProcessedTimeUtc: simNow.Add(time.Duration(i-3) * time.Minute).Format(TimeLayout)}))
	}
	for _, limit := range []int{0, 3, 2} {
		got := sim.selectDetections(siemQuery{since: simNow.Add(-time.Hour), until: simNow, limit: limit}, simNow)
		require.Len(t, got, 2, "limit %d", limit)
		require.Equal(t, []string{"b", "c"}, []string{got[0].FullID, got[1].FullID}, "limit %d", limit)
	}
	got := sim.selectDetections(siemQuery{since: simNow.Add(-time.Hour), until: simNow, limit: 1}, simNow)
	require.Equal(t, "c", got[0].FullID)
}
