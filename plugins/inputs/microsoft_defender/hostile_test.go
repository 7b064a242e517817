package microsoft_defender

import (
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/influxdata/telegraf/testutil"
)

// placedDetection is one detection of placedSIEM.
type placedDetection struct {
	id   string
	at   time.Time
	body string // the JSON served; detectionJSON when empty
}

// placedSIEM serves the SIEM API as the plugin expects it: the newest
// `limit` detections with LastProcessedTimeUtc in [since, until], placed by
// their time `at` whatever their body says.
type placedSIEM struct {
	mu         sync.Mutex
	detections []placedDetection
	date       func() string // the Date header; Go's own when nil
	queries    []string
	oldest     bool // `limit` answers the oldest detections, not the newest
}

func (s *placedSIEM) handler(t *testing.T) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		defer s.mu.Unlock()
		q := r.URL.Query()
		s.queries = append(s.queries, q.Get("sinceTimeUtc")+" "+q.Get("untilTimeUtc")+" "+q.Get("limit"))
		since, err1 := time.Parse(time.RFC3339Nano, q.Get("sinceTimeUtc"))
		until, err2 := time.Parse(time.RFC3339Nano, q.Get("untilTimeUtc"))
		if err1 != nil || err2 != nil {
			t.Errorf("bad query %s", r.URL.RawQuery)
		}
		limit, err := strconv.Atoi(q.Get("limit"))
		if err != nil && q.Get("limit") != "" {
			t.Errorf("bad limit %s", r.URL.RawQuery)
		}
		var match []placedDetection
		for _, d := range s.detections {
			if !d.at.Before(since) && !d.at.After(until) {
				match = append(match, d)
			}
		}
		sort.SliceStable(match, func(i, j int) bool { return match[i].at.After(match[j].at) != s.oldest })
		if limit > 0 && len(match) > limit {
			match = match[:limit]
		}
		parts := make([]string, 0, len(match))
		for _, d := range match {
			if d.body != "" {
				parts = append(parts, d.body)
			} else {
				parts = append(parts, detectionJSON(d.id, d.at.Format(time.RFC3339Nano)))
			}
		}
		if s.date != nil {
			w.Header().Set("Date", s.date())
		}
		respond(t, w, []byte("["+strings.Join(parts, ",")+"]"))
	}
}

func countEmitted(acc *testutil.Accumulator, emitted map[string]int) {
	for _, id := range emittedIDs(acc) {
		emitted[id]++
	}
}

// an API whose Date lies before the chunk's start (a clock
// behind, a stale cache, a load balancer with one backend behind) leaves the
// chunk open and resets it to be read whole. But the walk down that chunk
// has already forgotten the identities below its first full answer, so the
// re-read emits them again, in every poll.
func TestDateBehindTheChunkRepeatsNothing(t *testing.T) {
	sim := &placedSIEM{date: func() string { return fixedNow.Add(-3 * time.Hour).Format(http.TimeFormat) }}
	for i := range 6 {
		sim.detections = append(sim.detections, placedDetection{
			id: "d:" + strconv.Itoa(i), at: fixedNow.Add(-time.Duration(50-5*i) * time.Minute)})
	}
	server := stub(t, sim.handler(t))
	plugin := stubbedPlugin(t, server, &testutil.CaptureLogger{})
	plugin.PageSize = 2

	emitted := make(map[string]int)
	for range 3 {
		acc := gatherOK(t, plugin)
		countEmitted(acc, emitted)
	}
	for id, n := range emitted {
		require.Equal(t, 1, n, "%s emitted %d times: %v", id, n, emitted)
	}
}

// answers that grew past max_body_size shrank the requests to
// one detection; the newest detection of the span carries a
// LastProcessedTimeUtc the plugin cannot read. The one-detection answer is
// "full" with no time in the window, so the span is read without a limit,
// which is larger than max_body_size: every poll fails at the same place.
func TestUnreadableTimeAfterShrinkIsNoWall(t *testing.T) {
	sim := &placedSIEM{}
	pad := strings.Repeat("x", 1500)
	for i := range 20 {
		at := fixedNow.Add(-time.Duration(40-i) * time.Minute)
		sim.detections = append(sim.detections, placedDetection{id: "d:" + strconv.Itoa(i), at: at,
			body: `{"FullId":"d:` + strconv.Itoa(i) + `","LastProcessedTimeUtc":"` + at.Format(time.RFC3339Nano) + `","Description":"` + pad + `"}`})
	}
	// The newest: the service placed it at 14:45, its text says otherwise.
	sim.detections = append(sim.detections, placedDetection{id: "bad", at: fixedNow.Add(-15 * time.Minute),
		body: `{"FullId":"bad","LastProcessedTimeUtc":"30/09/2020 14:45"}`})
	server := stub(t, sim.handler(t))
	logger := &testutil.CaptureLogger{}
	plugin := stubbedPlugin(t, server, logger, func(m *MicrosoftDefender) { m.MaxBodySize = 4096 })

	emitted := make(map[string]int)
	for i := range 5 {
		plugin.now = func() time.Time { return fixedNow.Add(time.Duration(i) * time.Minute) }
		acc := gatherOK(t, plugin)
		countEmitted(acc, emitted)
	}
	require.Len(t, emitted, 21, "every detection is emitted: %v", emitted)
	for id, n := range emitted {
		require.Equal(t, 1, n, id)
	}
	require.False(t, plugin.cursor.watermark.IsZero(), "the window is done")
}

// the newest detection fits in max_body_size, but with the
// array's brackets the one-detection answer does not: it is decoded (and
// emitted), then the answer fails as too large with one detection decoded,
// which is neither "shrink" nor "giant": every poll fails there.
func TestDetectionThatFitsWithoutTheBracketIsNoWall(t *testing.T) {
	sim := &placedSIEM{}
	sim.detections = append(sim.detections, placedDetection{id: "small", at: fixedNow.Add(-40 * time.Minute)})
	head := `{"FullId":"big","LastProcessedTimeUtc":"` + fixedNow.Add(-20*time.Minute).Format(time.RFC3339Nano) + `","Description":"`
	big := head + strings.Repeat("x", 4096-1-len(head)-2) + `"}`
	require.Len(t, "["+big, 4096)
	sim.detections = append(sim.detections, placedDetection{id: "big", at: fixedNow.Add(-20 * time.Minute), body: big})
	server := stub(t, sim.handler(t))
	plugin := stubbedPlugin(t, server, &testutil.CaptureLogger{}, func(m *MicrosoftDefender) { m.MaxBodySize = 4096 })

	emitted := make(map[string]int)
	for range 3 {
		var acc testutil.Accumulator
		require.NoError(t, plugin.Gather(&acc))
		countEmitted(&acc, emitted)
	}
	require.Equal(t, map[string]int{"small": 1, "big": 1}, emitted)
}

// Three detections share one instant; each fits in max_body_size, the
// three together do not. The instant is skipped with a warning that says
// so and counted once.
func TestSharedInstantOverTheLimitIsReported(t *testing.T) {
	sim := &placedSIEM{}
	at := fixedNow.Add(-30 * time.Minute)
	pad := strings.Repeat("x", 1500)
	for i := range 3 {
		id := "s:" + strconv.Itoa(i)
		sim.detections = append(sim.detections, placedDetection{id: id, at: at,
			body: `{"FullId":"` + id + `","LastProcessedTimeUtc":"` + at.Format(time.RFC3339Nano) + `","Description":"` + pad + `"}`})
	}
	server := stub(t, sim.handler(t))
	logger := &testutil.CaptureLogger{}
	plugin := stubbedPlugin(t, server, logger, func(m *MicrosoftDefender) {
		m.MaxBodySize = 4096
		m.PageSize = 2
	})
	acc := gatherOK(t, plugin)
	// The API has no order inside an instant to page by: what one limited
	// request returns is emitted, the rest of the instant cannot be had.
	require.Equal(t, []string{"s:0", "s:1"}, emittedIDs(acc))
	skipped, _ := pollMetrics(acc)[0].GetField("alerts_skipped")
	require.Equal(t, int64(1), skipped, "one instant skipped")
	require.Contains(t, logger.Warnings(), "W! [] The records the SIEM API holds at 2020-09-30T14:30:00Z cannot be read "+
		"(larger than max_body_size, 4096 bytes, alone or together, or not JSON): they are skipped; raise max_body_size if they are large")
}

// one record the reader cannot parse (here an unknown member
// nested deeper than 10000 levels; an invalid escape does the same) fails
// every poll at the same place: the detections below it are never read.
func TestMalformedDetectionIsNoWall(t *testing.T) {
	deep := strings.Repeat("[", 10001) + strings.Repeat("]", 10001)
	sim := &placedSIEM{}
	sim.detections = append(sim.detections,
		placedDetection{id: "old", at: fixedNow.Add(-40 * time.Minute)},
		placedDetection{id: "deep", at: fixedNow.Add(-20 * time.Minute),
			body: `{"FullId":"deep","LastProcessedTimeUtc":"` + fixedNow.Add(-20*time.Minute).Format(time.RFC3339Nano) + `","Extra":` + deep + `}`})
	server := stub(t, sim.handler(t))
	plugin := stubbedPlugin(t, server, &testutil.CaptureLogger{})
	emitted := make(map[string]int)
	for range 3 {
		var acc testutil.Accumulator
		require.NoError(t, plugin.Gather(&acc))
		countEmitted(&acc, emitted)
	}
	require.Equal(t, 1, emitted["old"], "the detection below the deep one is read: %v", emitted)
}

// a value that does not fit is quoted in the warning cut to 64
// bytes before the message is scrubbed of secrets: a bearer token the API
// echoes in a record straddles the cut and is logged all but its tail.
func TestProblemQuoteNeverHoldsPartOfASecret(t *testing.T) {
	body := `[{"FullId":"a:1","LastProcessedTimeUtc":"2020-09-30T14:10:00Z","AlertPart":"Bearer ` + testAccessToken + `"}]`
	server := stub(t, func(w http.ResponseWriter, _ *http.Request) { respond(t, w, []byte(body)) })
	logger := &testutil.CaptureLogger{}
	plugin := stubbedPlugin(t, server, logger)
	gatherOK(t, plugin)
	for _, w := range logger.Warnings() {
		require.NotContains(t, w, testAccessToken[:40], "most of the access token is logged")
	}
}
