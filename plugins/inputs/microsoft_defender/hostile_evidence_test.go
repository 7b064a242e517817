package microsoft_defender

import (
	"fmt"
	"io"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/influxdata/telegraf"
	"github.com/influxdata/telegraf/config"
	"github.com/influxdata/telegraf/testutil"
)

// repeatedString is an endless stream of one string.
type repeatedString struct {
	s   string
	off int
}

func (r *repeatedString) Read(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		c := copy(p[n:], r.s[r.off:])
		n += c
		r.off = (r.off + c) % len(r.s)
	}
	return n, nil
}

// manyEntriesPage is a Graph page of three alerts, the second with size
// bytes of small evidence entries after its device evidence, and where the
// third starts.
func manyEntriesPage(size int64) (io.Reader, int64) {
	entry := `{"@odata.type":"#microsoft.graph.security.ipEvidence","ipAddress":"10.0.0.1","tags":["a","b"]},`
	head := `{"value":[{"id":"a","lastUpdateDateTime":"2026-01-01T00:00:00Z"},` +
		`{"id":"big","lastUpdateDateTime":"2026-01-01T00:00:00Z","evidence":[` +
		`{"@odata.type":"#microsoft.graph.security.deviceEvidence","deviceDnsName":"h","rbacGroupName":"g"},`
	entries := size / int64(len(entry)) * int64(len(entry))
	return io.MultiReader(strings.NewReader(head), io.LimitReader(&repeatedString{s: entry}, entries),
		strings.NewReader(`{}]},{"id":"c","lastUpdateDateTime":"2026-01-01T00:00:00Z"}]}`)), int64(len(head)) + entries + 5
}

// A record longer than maxRecordBytes is skipped, the ones after it read.
// Skipping it holds one token at a time: 12 MiB of evidence entries cost
// what a few entries do.
func TestRecordOverTheCapIsSkippedInBoundedMemory(t *testing.T) {
	page, third := manyEntriesPage(12 << 20)
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	var summary []string
	_, err := decodeGraphPage(page, evidenceNeeds{raw: true}, func(a *graphAlert) bool {
		summary = append(summary, a.issues.where()+" "+a.ID+" skip="+a.issues.skip)
		return true
	})
	require.NoError(t, err)
	runtime.ReadMemStats(&after)
	require.Equal(t, []string{
		"Alert 0 at byte 10 a skip=",
		"Alert 1 at byte 65 big skip=it is larger than 8 MiB, the most one record may take",
		fmt.Sprintf("Alert 2 at byte %d c skip=", third),
	}, summary)
	require.Less(t, after.TotalAlloc-before.TotalAlloc, uint64(4<<20))
}

// Over the cap, a detection or an alert is skipped with a warning that
// names it, counted in alerts_skipped, and the records after it emitted.
func TestRecordOverTheCapIsCounted(t *testing.T) {
	at := fixedNow.Add(-30 * time.Minute).Format(time.RFC3339Nano)
	huge := strings.Repeat("x", maxRecordBytes)
	for _, tt := range []struct {
		api, body, warning string
		emitted            []string
	}{
		{"siem", "[" + detectionJSON("a:1", at) + `,{"FullId":"big","LastProcessedTimeUtc":"` + at + `","CommandLine":"` + huge + `"},` +
			detectionJSON("a:2", at) + "]", "W! [] Detection 1 at byte 117 skipped: it is larger than 8 MiB, the most one record may take",
			[]string{"a:1", "a:2"}},
		{"graph", `{"value":[{"id":"a","lastUpdateDateTime":"` + at + `"},{"id":"big","lastUpdateDateTime":"` + at +
			`","evidence":[{"processCommandLine":"` + huge + `"}]},{"id":"c","lastUpdateDateTime":"` + at + `"}]}`,
			"W! [] Alert 1 at byte 65 skipped: it is larger than 8 MiB, the most one record may take", []string{"a", "c"}},
	} {
		t.Run(tt.api, func(t *testing.T) {
			server := stub(t, holding(t, at, tt.body))
			logger := &testutil.CaptureLogger{}
			plugin := stubbedPlugin(t, server, logger, func(m *MicrosoftDefender) {
				if tt.api == "graph" {
					m.API = "graph"
					m.EndpointURL = server.URL + graphAlertsPath
					m.RefreshToken = config.Secret{}
				}
			})
			acc := gatherOK(t, plugin)
			var ids []string
			for _, m := range acc.GetTelegrafMetrics() {
				if id, ok := m.GetField("full_id"); ok {
					ids = append(ids, id.(string))
				} else if id, ok := m.GetField("alert_id"); ok {
					ids = append(ids, id.(string))
				}
			}
			require.Equal(t, tt.emitted, ids)
			skipped, _ := pollMetrics(acc)[0].GetField("alerts_skipped")
			require.Equal(t, int64(1), skipped)
			require.Equal(t, []string{tt.warning}, logger.Warnings())
		})
	}
}

// chunkedReader reads r in chunks of at most n bytes, as a connection does.
type chunkedReader struct {
	r io.Reader
	n int
}

func (c chunkedReader) Read(p []byte) (int, error) {
	return c.r.Read(p[:min(len(p), c.n)])
}

// longString is n bytes of JSON string content, escapes among them, the
// quote among them escaped.
func longString(n int) string {
	var b strings.Builder
	for b.Len() < n {
		b.WriteString(`xxxxxxxxxxxxx\"yy\\zz\u00e9\n`)
	}
	return b.String()
}

// Strings far longer than a field, read in chunks of any size, decode as
// encoding/json decodes them and are emitted cut to maxFieldBytes; evidence
// that long is left out; what follows decodes as before, and its place is
// told in the body's bytes.
func TestLongStringsDecodeAsEncodingJSON(t *testing.T) {
	title := longString(6 * maxFieldBytes)
	commandLine := longString(10 * maxFieldBytes)
	first := `{"id":"a","title":"` + title + `","lastUpdateDateTime":"2026-01-01T00:00:00Z","evidence":[` +
		`{"@odata.type":"#microsoft.graph.security.processEvidence","processCommandLine":"` + commandLine + `"},` +
		`{"@odata.type":"#microsoft.graph.security.deviceEvidence","deviceDnsName":"` + title + `","rbacGroupName":"g"}],"severity":"high"}`
	second := `{"id":"b","title":"t","lastUpdateDateTime":"2026-01-01T00:00:01Z","mitreTechniques":"x","evidence":[]}`
	body := `{"value":[` + first + "," + second + `],"@odata.nextLink":"https://graph.microsoft.com/next"}`

	for _, chunk := range []int{7, 1000, 64 * 1024} {
		t.Run(fmt.Sprintf("reads of %d bytes", chunk), func(t *testing.T) {
			requireLikeEncodingJSON(t, body, chunk)
		})
	}
}

func requireLikeEncodingJSON(t *testing.T, body string, chunk int) {
	var want []graphAlert
	wantMeta, err := decodeGraphPageWithEncodingJSON([]byte(body), func(a *graphAlert) { want = append(want, *a) })
	require.NoError(t, err)
	var got []graphAlert
	meta, err := decodeGraphPage(chunkedReader{strings.NewReader(body), chunk}, evidenceNeeds{raw: true}, func(a *graphAlert) bool {
		got = append(got, *a)
		return true
	})
	require.NoError(t, err)
	require.Equal(t, wantMeta, meta)
	require.Len(t, got, 2)
	require.Equal(t, int64(strings.Index(body, `{"id":"b"`)), got[1].issues.offset)
	require.Equal(t, "mitreTechniques: a JSON string where an array of strings was expected", got[1].issues.String())
	for i := range got {
		gotMetric, gotCut := got[i].metric()
		wantMetric, wantCut := want[i].metric()
		testutil.RequireMetricsEqual(t, []telegraf.Metric{wantMetric}, []telegraf.Metric{gotMetric})
		require.Equal(t, wantCut, gotCut)
		require.Equal(t, want[i].Evidence.count, got[i].Evidence.count)
	}
	require.True(t, got[0].Evidence.leftOut)
	require.Equal(t, "g", got[0].Evidence.device.RbacGroupName)
}

// Malformed JSON deep in a long string fails the alert at its byte of the
// body.
func TestMalformedJSONInALongStringIsPlaced(t *testing.T) {
	for _, tt := range []struct {
		name, bad, want string
	}{
		{"invalid escape", `\x`, "invalid escape sequence `\\x` in string"},
		{"invalid \\u", `\u12x4`, "invalid escape sequence `\\u12x4` in string"},
		{"control character", "\x01", `invalid character '\x01' in string (expecting non-control character)`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			body := `{"value":[{"id":"a","title":"` + longString(4*maxFieldBytes) + tt.bad + `"}]}`
			_, err := decodeGraphPage(strings.NewReader(body), evidenceNeeds{raw: true}, func(*graphAlert) bool { return true })
			require.EqualError(t, err, fmt.Sprintf("alert 0: invalid JSON at byte %d: %s", strings.LastIndex(body, tt.bad), tt.want))
			require.Equal(t, failUnreadable, classify(err).class)
		})
	}
}
