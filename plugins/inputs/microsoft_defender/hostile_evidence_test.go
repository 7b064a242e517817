package microsoft_defender

import (
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"runtime"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/influxdata/telegraf"
	"github.com/influxdata/telegraf/testutil"
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
// 0.51 MB per 100 MB alert). It grew once when the bytes sat under a key the
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

// Strings longer than maxStringBytes are cut before the decoder sees them
// (it holds each token whole), and nothing the plugin emits changes: the
// fields are cut to maxFieldBytes anyway, and evidence holding such a
// string is too long to be emitted. What follows a cut string decodes as
// before, and its place is told in the body's bytes.
func TestCutStringsChangeNothingEmitted(t *testing.T) {
	title := longString(3 * maxStringBytes)
	commandLine := longString(5 * maxStringBytes)
	first := `{"id":"a","title":"` + title + `","lastUpdateDateTime":"2026-01-01T00:00:00Z","evidence":[` +
		`{"@odata.type":"#microsoft.graph.security.processEvidence","processCommandLine":"` + commandLine + `"},` +
		`{"@odata.type":"#microsoft.graph.security.deviceEvidence","deviceDnsName":"` + title + `","rbacGroupName":"g"}],"severity":"high"}`
	second := `{"id":"b","title":"t","lastUpdateDateTime":"2026-01-01T00:00:01Z","mitreTechniques":"x","evidence":[]}`
	body := `{"value":[` + first + "," + second + `],"@odata.nextLink":"https://graph.microsoft.com/next"}`

	// Reads of a few bytes put the places where a quote is escaped, and
	// where a string may be cut, across reads.
	for _, chunk := range []int{7, 1000, 64 * 1024} {
		t.Run(fmt.Sprintf("reads of %d bytes", chunk), func(t *testing.T) {
			requireCutChangesNothing(t, body, second, chunk)
		})
	}
}

func requireCutChangesNothing(t *testing.T, body, second string, chunk int) {
	var want []graphAlert
	wantMeta, err := decodeGraphPageWithEncodingJSON([]byte(body), func(a *graphAlert) { want = append(want, *a) })
	require.NoError(t, err)
	var got []graphAlert
	meta, err := decodeGraphPage(chunkedReader{strings.NewReader(body), chunk}, func(a *graphAlert) bool {
		require.Less(t, len(a.Title), 2*maxStringBytes, "the title is cut")
		got = append(got, *a)
		return true
	})
	require.NoError(t, err)
	require.Equal(t, wantMeta, meta)
	require.Len(t, got, 2)
	require.Equal(t, int64(strings.Index(body, `{"id":"b"`)), got[1].issues.offset)
	require.Equal(t, fmt.Sprintf("mitreTechniques (byte %d of the object): a JSON string where an array of strings was expected",
		strings.Index(second, `"x"`)), got[1].issues.String())
	for i := range got {
		got[i].includeEvidence, want[i].includeEvidence = true, true
		gotMetric, gotCut := got[i].metric()
		wantMetric, wantCut := want[i].metric()
		testutil.RequireMetricsEqual(t, []telegraf.Metric{wantMetric}, []telegraf.Metric{gotMetric})
		require.Equal(t, wantCut, gotCut)
		require.Equal(t, want[i].evidenceCount, got[i].evidenceCount)
	}
	require.True(t, got[0].evidenceLeftOut)
	require.Equal(t, "g", got[0].device.RbacGroupName)
}

// What is left out of a string is still checked: malformed JSON there
// fails the alert as it would whole, at its byte of the body.
func TestCutStringsStayChecked(t *testing.T) {
	for _, tt := range []struct {
		name string
		bad  string
		at   int // of the malformed byte in bad
	}{
		{"invalid escape", `\x`, 1},
		{"invalid \\u", `\u12x4`, 4},
		{"control character", "\x01", 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			body := `{"value":[{"id":"a","title":"` + longString(2*maxStringBytes) + tt.bad + `"}]}`
			_, err := decodeGraphPage(strings.NewReader(body), func(*graphAlert) bool { return true })
			require.ErrorContains(t, err, fmt.Sprintf("alert 0: invalid JSON at byte %d: invalid character ", strings.LastIndex(body, tt.bad)+tt.at))
		})
	}
}

// The cutter tells strings as the decoder does, whatever the reads: at the
// end of each read it is inside a string exactly when a byte-by-byte
// lexer is, and strings shorter than maxStringBytes pass unchanged.
func TestStringCutterFollowsStrings(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	pieces := []string{`a`, `\\`, `\"`, `\\\"`, `\\\\`, `\u00e9`, `\n`, `é`}
	for round := range 40 {
		var doc bytes.Buffer
		for doc.Len() < 150000 {
			doc.WriteString(`,"`)
			for range rng.IntN(40) {
				doc.WriteString(pieces[rng.IntN(len(pieces))])
			}
			doc.WriteString(`":[1,true]`)
		}
		input := doc.Bytes()
		body := &bodyReader{r: bytes.NewReader(input), cutting: true}
		var out []byte
		var lex stringLexer
		read := 0
		// Reads longer than maxStringBytes are followed string by string.
		buf := make([]byte, 1+rng.IntN(300))
		if round%2 == 1 {
			buf = make([]byte, maxStringBytes+1+rng.IntN(40000))
		}
		for {
			n, err := body.Read(buf[:1+rng.IntN(len(buf))])
			out = append(out, buf[:n]...)
			lex.feed(input[read:body.n])
			read = int(body.n)
			require.Equal(t, lex.in, body.strings.inString, "round %d at byte %d", round, body.n)
			if err != nil {
				break
			}
		}
		require.Equal(t, input, out, "round %d", round)
	}
}

// stringLexer follows JSON strings byte by byte: in tells whether what it
// was fed ends inside one.
type stringLexer struct {
	in, escape bool
}

func (l *stringLexer) feed(p []byte) {
	for _, c := range p {
		switch {
		case !l.in:
			l.in = c == '"'
		case l.escape:
			l.escape = false
		case c == '\\':
			l.escape = true
		case c == '"':
			l.in = false
		}
	}
}
