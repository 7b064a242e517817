package microsoft_defender

import (
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/stretchr/testify/require"

	"github.com/influxdata/telegraf/testutil"
)

func detectionJSON(fullID, lastProcessed string) string {
	return fmt.Sprintf(`{"AlertId":"a","FullId":%q,"Severity":"High","Category":"Malware","LastProcessedTimeUtc":%q}`, fullID, lastProcessed)
}

func TestMalformedResponses(t *testing.T) {
	good := detectionJSON("a:1", "2020-09-30T14:00:00Z")
	tests := []struct {
		name    string
		body    string
		emitted int
		want    string
	}{
		{"object instead of array", `{"value":[]}`, 0,
			`reading the SIEM API answer from %s: response is not a JSON array of detections: it is a JSON object`},
		{"html page with 200", "<html><body>Sign in</body></html>", 0,
			`reading the SIEM API answer from %s: response is not a JSON array: invalid JSON at byte 0: invalid character '<' at start of value`},
		{"empty body", "", 0,
			`reading the SIEM API answer from %s: response is not a JSON array: response truncated at byte 0`},
		{"truncated array", "[" + good + `,{"AlertId":"b","Full`, 1,
			`reading the SIEM API answer from %s: detection 1: response truncated at byte 137`},
		{"missing closing bracket", "[" + good, 1,
			`reading the SIEM API answer from %s: after detection 0: response truncated at byte 116`},
		{"two answers in one body", "[" + good + "][" + good + "]", 1,
			`reading the SIEM API answer from %s: after the closing bracket: invalid JSON at byte 117: more follows the answer`},
		{"a lone opening bracket", "[", 0,
			`reading the SIEM API answer from %s: after the opening bracket: response truncated at byte 1`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			server := stub(t, func(w http.ResponseWriter, _ *http.Request) {
				respond(t, w, []byte(tt.body))
			})
			logger := &testutil.CaptureLogger{}
			plugin := stubbedPlugin(t, server, logger)
			msg, acc := gatherError(t, plugin, logger)
			require.Equal(t, fmt.Sprintf(tt.want, strings.TrimPrefix(server.URL, "http://")), msg)
			alerts := 0
			for _, m := range acc.GetTelegrafMetrics() {
				if m.Name() == measurementAlert {
					alerts++
				}
			}
			require.Equal(t, tt.emitted, alerts)
			require.True(t, plugin.cursor.watermark.IsZero(), "a failed poll must not advance the cursor")
		})
	}
}

// A poll whose answer is malformed half way emits what it decoded, keeps
// its window, and the next poll emits the rest without repeating anything.
func TestFailedPollIsRetriedWithoutDuplicates(t *testing.T) {
	first := detectionJSON("a:1", "2020-09-30T14:00:00Z")
	second := detectionJSON("a:2", "2020-09-30T14:10:00Z")
	responses := []string{"[" + first + `]]`, "[" + first + "," + second + "]"}
	var queries []url.Values
	server := stub(t, func(w http.ResponseWriter, r *http.Request) {
		queries = append(queries, r.URL.Query())
		respond(t, w, []byte(responses[len(queries)-1]))
	})
	logger := &testutil.CaptureLogger{}
	plugin := stubbedPlugin(t, server, logger)

	_, acc := gatherError(t, plugin, logger)
	require.Equal(t, []string{"a:1"}, emittedIDs(acc))
	require.Len(t, queries, 1, "a malformed answer would fail again: not retried")

	acc = gatherOK(t, plugin)
	require.Equal(t, []string{"a:2"}, emittedIDs(acc))
	require.Len(t, queries, 2)
	require.Equal(t, queries[0], queries[1], "the next poll asks for the same window")
	require.Equal(t, fixedNow, plugin.cursor.watermark)
}

// A truncated answer is transient: the request is retried in the same poll,
// and what the first attempt emitted is not emitted again.
func TestTruncatedAnswerIsRetriedAtOnce(t *testing.T) {
	first := detectionJSON("a:1", "2020-09-30T14:00:00Z")
	second := detectionJSON("a:2", "2020-09-30T14:10:00Z")
	responses := []string{"[" + first + `,{"Full`, "[" + first + "," + second + "]"}
	var requests int
	server := stub(t, func(w http.ResponseWriter, _ *http.Request) {
		requests++
		respond(t, w, []byte(responses[requests-1]))
	})
	logger := &testutil.CaptureLogger{}
	plugin := stubbedPlugin(t, server, logger)

	acc := gatherOK(t, plugin)
	require.Equal(t, []string{"a:1", "a:2"}, emittedIDs(acc))
	require.Equal(t, 2, requests)
	require.Len(t, logger.Warnings(), 1)
	require.Regexp(t, `^W! \[\] Retry 1 of 3 in (\d+ms|1s) \(backing off\): `+
		`reading the SIEM API answer from 127.0.0.1:\d+: detection 1: response truncated at byte 123$`, logger.Warnings()[0])
	require.Equal(t, fixedNow, plugin.cursor.watermark)
}

// Each poll asks for [watermark - overlap, now - delay]: the overlap
// returns detections already emitted, which are dropped, and identities
// are forgotten once no window can return them.
func TestWindowsOverlapAndDuplicatesAreDropped(t *testing.T) {
	now := fixedNow
	lastProcessed := fixedNow.Add(-2 * time.Minute) // 14:58
	var queries []string
	server := stub(t, func(w http.ResponseWriter, r *http.Request) {
		since, err := time.Parse(time.RFC3339Nano, r.URL.Query().Get("sinceTimeUtc"))
		if err != nil {
			t.Error(err)
		}
		until, err := time.Parse(time.RFC3339Nano, r.URL.Query().Get("untilTimeUtc"))
		if err != nil {
			t.Error(err)
		}
		queries = append(queries, since.Format("15:04")+"-"+until.Format("15:04"))
		if lastProcessed.Before(since) || lastProcessed.After(until) {
			respond(t, w, []byte("[]"))
			return
		}
		respond(t, w, []byte("["+detectionJSON("a:1", lastProcessed.Format(time.RFC3339Nano))+"]"))
	})
	plugin := stubbedPlugin(t, server, &testutil.CaptureLogger{})
	plugin.now = func() time.Time { return now }

	require.Equal(t, []string{"a:1"}, emittedIDs(gatherOK(t, plugin)))
	for _, later := range []time.Duration{time.Minute, 20 * time.Minute, time.Hour} {
		now = fixedNow.Add(later)
		acc := gatherOK(t, plugin)
		require.Empty(t, detectionMetrics(acc), "a poll that emits nothing emits no counts either")
	}
	// Each answer holding a:1 is checked below it (14:57:59.9999999) for a limit the service lowered.
	require.Equal(t, []string{"14:00-15:00", "14:00-14:57", "14:50-15:01", "14:50-14:57", "14:51-15:20", "14:51-14:57", "15:10-16:00"}, queries)
	require.Empty(t, plugin.cursor.seen, "identities no window can return are forgotten")
}

func emittedIDs(acc *testutil.Accumulator) []string {
	var ids []string
	for _, m := range acc.GetTelegrafMetrics() {
		if id, ok := m.GetField("full_id"); ok {
			ids = append(ids, id.(string))
		}
	}
	return ids
}

// A string of megabytes, within maxRecordBytes, is not worth losing a
// detection over: the field is cut to what outputs accept, with a warning
// naming the detection and the field.
func TestHugeStringsAreCut(t *testing.T) {
	huge := strings.Repeat("A", maxRecordBytes/2)
	body := `[{"FullId":"a:1","Severity":"High","CommandLine":"` + huge + `","Category":"` + huge[:1000] +
		`","LastProcessedTimeUtc":"2020-09-30T14:00:00Z"}]`
	server := stub(t, func(w http.ResponseWriter, _ *http.Request) {
		respond(t, w, []byte(body))
	})
	logger := &testutil.CaptureLogger{}
	plugin := stubbedPlugin(t, server, logger)
	acc := gatherOK(t, plugin)
	alerts := detectionMetrics(acc)
	require.NotEmpty(t, alerts)
	commandLine, ok := alerts[0].GetField("command_line")
	require.True(t, ok)
	require.Len(t, commandLine, 32766, "the longest term Lucene takes: OpenSearch refuses a longer keyword")
	require.Len(t, alerts[0].Tags()["category"], maxTagBytes)
	require.Equal(t, []string{`W! [] Alert "a:1": fields command_line longer than 32766 bytes were cut to that length`}, logger.Warnings())
}

// The decoder follows encoding/json where the SIEM API's generations
// differ: keys in another case match, null leaves a field as it is, the
// last of repeated keys wins, and unknown keys of any shape are skipped. A
// value that does not fit is named as the API documents its key.
func TestDecoderFollowsEncodingJSON(t *testing.T) {
	body := `[{"fullid":"a:1","FullId":"a:2","AlertTitle":"t","AlertTitle":null,"ALERTPART":3,"AlertPart":null,"reportid":"x",` +
		`"Unknown":{"x":[1,"\"",{"y":null}]},"lastProcessedTimeUtc":"2020-09-30T14:00:00Z","Description":"caf\u00e9 \ud83d\ude00"}]`
	dec, err := newDetectionDecoder(strings.NewReader(body))
	require.NoError(t, err)
	var d detection
	require.NoError(t, dec.next(&d))
	require.Equal(t, "a:2", d.FullID)
	require.Equal(t, "t", d.AlertTitle)
	require.Equal(t, optional[int64]{value: 3, set: true}, d.AlertPart)
	require.Equal(t, `ReportID: "x" is not an integer`, d.issues.String())
	require.Equal(t, "café 😀", d.Description)
	require.Equal(t, time.Date(2020, 9, 30, 14, 0, 0, 0, time.UTC), d.lastProcessed)
	require.ErrorIs(t, dec.next(&d), io.EOF)
}

// All strings of a detection share one allocation; the identity the cursor
// keeps must be a copy, or each remembered identity would keep its whole
// detection in memory.
func TestRememberedIdentityDoesNotPinItsDetection(t *testing.T) {
	dec, err := newDetectionDecoder(strings.NewReader("[" + detectionJSON("a:1", "2020-09-30T14:00:00Z") + "]"))
	require.NoError(t, err)
	var d detection
	require.NoError(t, dec.next(&d))
	c := &cursor{seen: map[string]time.Time{}}
	c.remember(d.identity(), d.lastProcessed)
	require.Len(t, c.seen, 1)
	for id := range c.seen {
		require.Equal(t, "a:1", id)
		require.NotEqual(t, addressOf(d.FullID), addressOf(id))
	}
	var counter alertCounter
	counter.add(d.countKey())
	require.NotEqual(t, addressOf(d.Category), addressOf(counter.order[0].category))
}

// addressOf is where a string's bytes are, to tell a copy from a substring.
func addressOf(s string) uintptr {
	return uintptr(unsafe.Pointer(unsafe.StringData(s))) //nolint:gosec // an address compared, nothing read through it
}
