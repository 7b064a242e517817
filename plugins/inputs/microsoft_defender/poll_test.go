package microsoft_defender

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/influxdata/telegraf"
	"github.com/influxdata/telegraf/metric"
	"github.com/influxdata/telegraf/testutil"
)

func pollMetrics(acc *testutil.Accumulator) []telegraf.Metric {
	var out []telegraf.Metric
	for _, m := range acc.GetTelegrafMetrics() {
		if m.Name() == measurementPoll {
			out = append(out, m)
		}
	}
	return out
}

func expectedPoll(status string, s pollStats, lag time.Duration) telegraf.Metric {
	return metric.New(measurementPoll, map[string]string{"api": "siem", "status": status}, map[string]interface{}{
		"requests":           s.requests,
		"alerts_received":    s.received,
		"alerts_emitted":     s.emitted,
		"duplicates_dropped": s.duplicates,
		"errors":             s.errors,
		"alerts_skipped":     s.skipped,
		"invalid_fields":     s.invalidFields,
		"out_of_window":      s.outOfWindow,
		"long_ids":           s.longIDs,
		"forgotten_ids":      s.forgottenIDs,
		"alerts_unconfirmed": s.unconfirmed,
		"lag_seconds":        lag.Seconds(),
		"backlog":            status != "ok",
	}, fixedNow)
}

// The poll metric tells what each poll did: here a budget of 2 over a
// window of 3 detections, then the rest with one duplicate from the
// overlap, then a request that fails after one new detection.
func TestPollMetric(t *testing.T) {
	var responses []string
	server := stub(t, func(w http.ResponseWriter, _ *http.Request) {
		body := responses[0]
		responses = responses[1:]
		respond(t, w, []byte(body))
	})
	plugin := stubbedPlugin(t, server, &testutil.CaptureLogger{})
	plugin.MaxAlertsPerGather = 2
	a := detectionJSON("a:1", "2020-09-30T14:10:00Z")
	b := detectionJSON("a:2", "2020-09-30T14:20:00Z")
	c := detectionJSON("a:3", "2020-09-30T14:30:00Z")
	d := detectionJSON("a:4", "2020-09-30T15:40:00Z")

	// The newest two fill the budget: a backlog remains. Nothing lies above
	// them, as the check of the full answer finds.
	responses = []string{"[" + b + "," + c + "]", "[]"}
	acc := gatherOK(t, plugin)
	want := expectedPoll("partial", pollStats{requests: 2, received: 2, emitted: 2}, time.Hour)
	testutil.RequireMetricsEqual(t, []telegraf.Metric{want},
		pollMetrics(acc), testutil.IgnoreFields("duration_seconds"))
	require.Equal(t, []string{"a:2", "a:3"}, emittedIDs(acc))

	// The rest of the span: a and b again (a duplicate); a full answer, so
	// the span below a is asked for too, which holds only a.
	responses = []string{"[" + a + "," + b + "]", "[" + a + "]"}
	acc = gatherOK(t, plugin)
	testutil.RequireMetricsEqual(t, []telegraf.Metric{expectedPoll("ok", pollStats{requests: 2, received: 3, emitted: 1, duplicates: 2}, 0)},
		pollMetrics(acc), testutil.IgnoreFields("duration_seconds"))
	require.Equal(t, []string{"a:1"}, emittedIDs(acc))

	// A new window whose answer breaks off after one new detection.
	plugin.now = func() time.Time { return fixedNow.Add(time.Hour) }
	responses = []string{"[" + d + `]]`}
	var failed testutil.Accumulator
	require.NoError(t, plugin.Gather(&failed))
	require.Len(t, failed.Errors, 1)
	require.True(t, strings.HasPrefix(failed.Errors[0].Error(), "reading the SIEM API answer from"))
	expected := expectedPoll("partial", pollStats{requests: 1, received: 1, emitted: 1, errors: 1}, time.Hour)
	expected.SetTime(fixedNow.Add(time.Hour))
	testutil.RequireMetricsEqual(t, []telegraf.Metric{expected}, pollMetrics(&failed), testutil.IgnoreFields("duration_seconds"))
}

// pagingReader asks for page after page of one chunk and records what the
// poll hands back; its answers decode as the SIEM API's.
type pagingReader struct {
	*siemReader
	afters  []progress // what after answers, in turn; then nothing
	pages   int        // pages it asks for before the chunk is read whole; 0: no end
	asked   []string
	decoded []int // the decoded count of each answer after saw
}

func (b *pagingReader) next(c *chunk, _ *known) *request {
	if b.pages > 0 && len(b.asked) == b.pages {
		return nil
	}
	u := *b.endpoint
	u.RawQuery = "page=" + strconv.Itoa(len(b.asked)+1)
	b.asked = append(b.asked, u.RawQuery)
	c.siem.asked = &siemAsk{since: c.From, until: c.To}
	return &request{url: &u}
}

func (b *pagingReader) after(_ *chunk, a *answer, _ *known) progress {
	b.decoded = append(b.decoded, a.decoded)
	if len(b.afters) == 0 {
		return progress{}
	}
	pr := b.afters[0]
	b.afters = b.afters[1:]
	return pr
}

// The poll alone decides when reading stops: a reader that would read on
// forever is stopped by the budget, inside an answer, without being asked
// about the answer cut short; a reader's failure fails the poll, and its
// chunk read whole ends it.
func TestPollOwnsTheStop(t *testing.T) {
	for _, tt := range []struct {
		name     string
		afters   []progress
		pages    int
		asked    int
		advanced []int
		emitted  []string
		status   string
		errors   []string
	}{
		{
			name:     "budget",
			asked:    2,
			advanced: []int{2},
			emitted:  []string{"p1:1", "p1:2", "p2:1"},
			status:   "partial",
		},
		{
			name:     "failed",
			afters:   []progress{{err: errors.New("the reader cannot read on")}},
			asked:    1,
			advanced: []int{2},
			emitted:  []string{"p1:1", "p1:2"},
			status:   "partial",
			errors:   []string{"the reader cannot read on"},
		},
		{
			name:     "done",
			pages:    1,
			asked:    1,
			advanced: []int{2},
			emitted:  []string{"p1:1", "p1:2"},
			status:   "ok",
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			server := stub(t, func(w http.ResponseWriter, r *http.Request) {
				page := "p" + strings.TrimPrefix(r.URL.RawQuery, "page=")
				respond(t, w, []byte("["+detectionJSON(page+":1", "2020-09-30T14:30:00Z")+","+detectionJSON(page+":2", "2020-09-30T14:31:00Z")+"]"))
			})
			plugin := stubbedPlugin(t, server, &testutil.CaptureLogger{}, func(m *MicrosoftDefender) { m.MaxAlertsPerGather = 3 })
			b := &pagingReader{siemReader: plugin.reader.(*siemReader), afters: tt.afters, pages: tt.pages}
			plugin.reader = b

			var acc testutil.Accumulator
			require.NoError(t, plugin.Gather(&acc))
			require.Len(t, b.asked, tt.asked)
			require.Equal(t, tt.advanced, b.decoded)
			require.Equal(t, tt.emitted, emittedIDs(&acc))
			require.Len(t, acc.Errors, len(tt.errors))
			for i, err := range acc.Errors {
				require.EqualError(t, err, tt.errors[i])
			}
			polls := pollMetrics(&acc)
			require.Len(t, polls, 1)
			require.Equal(t, tt.status, polls[0].Tags()["status"])
			require.Equal(t, tt.status != "ok", polls[0].Fields()["backlog"])
			require.Equal(t, int64(tt.asked), polls[0].Fields()["requests"])
		})
	}
}

func pollFields(t *testing.T, acc *testutil.Accumulator) map[string]interface{} {
	t.Helper()
	for _, m := range acc.GetTelegrafMetrics() {
		if m.Name() == measurementPoll {
			return m.Fields()
		}
	}
	t.Fatal("no defender_poll metric")
	return nil
}

// An answer that grew past max_body_size after n detections makes the
// next requests of the chunk ask for n; one that breaks again at that cap
// halves it, down to one.
func TestSIEMSizeCapFollowsWhatWasDecoded(t *testing.T) {
	k := &known{log: testutil.Logger{}, maxBodySize: 1024}
	var w siemWalk
	for _, step := range []struct{ decoded, limit int }{{129, 129}, {129, 64}, {3, 3}, {0, 1}, {0, 1}} {
		w.shrink(step.decoded, errBodyTooLarge, k)
		require.Equal(t, step.limit, w.sizeCap, "after %d decoded", step.decoded)
	}
	require.Equal(t, progress{unreadable: fixedNow}, w.passOver(fixedNow))
	require.Zero(t, w.sizeCap, "past the unreadable instant requests have the usual size")
}

// Cut fields are warned of like other problems: ten alerts a poll, then a
// line saying the rest are only counted.
func TestCutFieldWarningsAreRateLimited(t *testing.T) {
	long := strings.Repeat("x", maxFieldBytes+1)
	sim := &placedSIEM{}
	for i := range 15 {
		at := fixedNow.Add(-time.Duration(30-i) * time.Minute)
		id := "cut:" + strconv.Itoa(i)
		sim.detections = append(sim.detections, placedDetection{id: id, at: at,
			body: `{"FullId":"` + id + `","LastProcessedTimeUtc":"` + at.Format(time.RFC3339Nano) + `","CommandLine":"` + long + `"}`})
	}
	logger := &testutil.CaptureLogger{}
	plugin := stubbedPlugin(t, stub(t, sim.handler(t)), logger)
	acc := gatherOK(t, plugin)
	require.Len(t, emittedIDs(acc), 15)
	var cut int
	for _, w := range logger.Warnings() {
		if strings.Contains(w, "were cut to that length") {
			cut++
		}
	}
	require.Equal(t, maxProblemsLogged, cut)
	require.Contains(t, logger.Warnings(),
		"W! [] More records with problems in this poll are only counted (defender_poll: alerts_skipped, invalid_fields, out_of_window)")
}

// A detection without FullId, AlertId or IocUniqueId is told apart by its
// content: read again by the next poll's overlap, it is dropped as a
// duplicate, while another with other content is not.
func TestDetectionWithoutIdsIsDeduplicatedByContent(t *testing.T) {
	at := fixedNow.Add(-5 * time.Minute).Format(time.RFC3339Nano) // within both polls' windows
	body := `[{"LastProcessedTimeUtc":"` + at + `","AlertTitle":"one"},{"LastProcessedTimeUtc":"` + at + `","AlertTitle":"two"}]`
	plugin := stubbedPlugin(t, stub(t, holding(t, at, body)), &testutil.CaptureLogger{})
	first := gatherOK(t, plugin)
	plugin.now = func() time.Time { return fixedNow.Add(time.Minute) }
	second := gatherOK(t, plugin)
	var titles []string
	for _, acc := range []*testutil.Accumulator{first, second} {
		for _, m := range acc.GetTelegrafMetrics() {
			if title, ok := m.GetField("alert_title"); ok {
				titles = append(titles, title.(string))
			}
		}
	}
	require.ElementsMatch(t, []string{"one", "two"}, titles)
	duplicates, _ := pollMetrics(second)[0].GetField("duplicates_dropped")
	require.Equal(t, int64(2), duplicates)
}

// Identities over 512 bytes are held as a hash: a repeat is still dropped,
// the cursor holds 71 bytes for each, and the poll counts them, warning once.
func TestLongIdentitiesAreHeldAsAHash(t *testing.T) {
	at := fixedNow.Add(-5 * time.Minute).Format(time.RFC3339Nano)
	records := make([]string, 0, 3)
	for i := range 3 {
		records = append(records, detectionJSON(strings.Repeat("x", 60000)+strconv.Itoa(i), at))
	}
	body := "[" + strings.Join(records, ",") + "]"
	logger := &testutil.CaptureLogger{}
	plugin := stubbedPlugin(t, stub(t, holding(t, at, body)), logger)
	first := gatherOK(t, plugin)
	require.Len(t, emittedIDs(first), 3)
	longIDs, _ := pollMetrics(first)[0].GetField("long_ids")
	require.Equal(t, int64(3), longIDs)
	for id := range plugin.cursor.seen {
		require.Len(t, id, len("sha256:")+64)
	}
	var warned int
	for _, w := range logger.Warnings() {
		if strings.Contains(w, "has an identity longer than 512 bytes") {
			warned++
		}
	}
	require.Equal(t, 1, warned)

	plugin.now = func() time.Time { return fixedNow.Add(time.Minute) }
	second := gatherOK(t, plugin)
	require.Empty(t, emittedIDs(second), "repeats are dropped")
}

// Past maxRememberedBytes the identities of the oldest records are
// forgotten, with one warning and a counter: a later poll emits those again,
// onto the same points, and nothing is lost.
func TestRememberedIdentitiesAreCapped(t *testing.T) {
	records := make([]string, 0, 4)
	for i := range 4 {
		at := fixedNow.Add(-time.Duration(8-2*i) * time.Minute).Format(time.RFC3339Nano) // within the overlap
		records = append(records, detectionJSON(fmt.Sprintf("f:%058d", i), at))          // 60 bytes: 100 with its time
	}
	body := "[" + strings.Join(records, ",") + "]"
	saved := maxRememberedBytes
	maxRememberedBytes = 250
	t.Cleanup(func() { maxRememberedBytes = saved })
	logger := &testutil.CaptureLogger{}
	plugin := stubbedPlugin(t, stub(t, func(w http.ResponseWriter, _ *http.Request) { respond(t, w, []byte(body)) }), logger)

	first := gatherOK(t, plugin)
	require.Len(t, emittedIDs(first), 4)
	forgotten, _ := pollMetrics(first)[0].GetField("forgotten_ids")
	require.Equal(t, int64(2), forgotten)
	require.ElementsMatch(t, []string{fmt.Sprintf("f:%058d", 2), fmt.Sprintf("f:%058d", 3)}, slices.Collect(maps.Keys(plugin.cursor.seen)))
	require.Equal(t, []string{"W! [] The identities held to drop repeats passed 250 bytes: forgot the 2 oldest, " +
		"which a later poll may emit again onto the same points (defender_poll: forgotten_ids)"}, logger.Warnings())

	plugin.now = func() time.Time { return fixedNow.Add(time.Minute) }
	second := gatherOK(t, plugin)
	var again []telegraf.Metric
	for _, m := range first.GetTelegrafMetrics() {
		if id, _ := m.GetField("full_id"); id == fmt.Sprintf("f:%058d", 0) || id == fmt.Sprintf("f:%058d", 1) {
			again = append(again, m)
		}
	}
	testutil.RequireMetricsEqual(t, again, alerts(second, 0), testutil.SortMetrics())
}

// A walk that needs more requests in a row than a poll may send (here one
// a minute, polls 30 s apart) still advances: the step a poll stopped
// before, the check above a full answer, is the next poll's first request.
func TestWalkStepsOutlastThePoll(t *testing.T) {
	sim := &placedSIEM{}
	for i := range 5 {
		sim.detections = append(sim.detections, placedDetection{id: "d:" + strconv.Itoa(i), at: fixedNow.Add(-time.Duration(50-10*i) * time.Minute)})
	}
	plugin := stubbedPlugin(t, stub(t, sim.handler(t)), &testutil.CaptureLogger{}, func(m *MicrosoftDefender) {
		m.PageSize, m.MaxRequestsPerMinute = 2, 1
	})
	emitted := make([]string, 0, 5)
	for i := range 16 {
		plugin.now = func() time.Time { return fixedNow.Add(time.Duration(i) * 30 * time.Second) }
		emitted = append(emitted, emittedIDs(gatherOK(t, plugin))...)
	}
	require.Equal(t, []string{"d:4", "d:3", "d:2", "d:1", "d:0"}, emitted)
}

// A service whose `limit` answers the oldest detections of a window, not
// the newest as documented, would make the walk skip what lies above them:
// the check after a full answer finds one there, and the poll fails with an
// error that says so instead of moving on.
func TestLimitThatAnswersTheOldestIsAnError(t *testing.T) {
	sim := &placedSIEM{oldest: true}
	for i := range 5 {
		sim.detections = append(sim.detections, placedDetection{id: "d:" + strconv.Itoa(i), at: fixedNow.Add(-time.Duration(50-10*i) * time.Minute)})
	}
	plugin := stubbedPlugin(t, stub(t, sim.handler(t)), &testutil.CaptureLogger{}, func(m *MicrosoftDefender) { m.PageSize = 2 })
	msg, _ := gatherError(t, plugin, nil)
	require.Equal(t, "the SIEM API's answer to limit=2 held not the newest detections of 2020-09-30T14:00:00Z to 2020-09-30T15:00:00Z: "+
		"one at 2020-09-30T14:30:00Z came only when asked for above them; it would lose detections, so the window is not read on", msg)
	require.True(t, plugin.cursor.watermark.IsZero(), "the window is not read past")
}

// After an answer that fits, a size cap doubles, back to none once it
// reaches what a request asks for.
func TestSIEMSizeCapGrowsBack(t *testing.T) {
	r := &siemReader{endpoint: &url.URL{Scheme: "https", Host: "siem.example", Path: "/api/alerts"}}
	k := &known{log: testutil.Logger{}, perRequest: 100, unreadable: func(time.Time, time.Time) (time.Time, bool) { return time.Time{}, false }}
	c := &chunk{From: fixedNow.Add(-time.Hour), To: fixedNow}
	c.siem.sizeCap = 25
	for _, want := range []int{50, 0} {
		r.next(c, k)
		r.after(c, &answer{decoded: 1, inWindow: 1, oldest: fixedNow, newest: fixedNow}, k)
		require.Equal(t, want, c.siem.sizeCap)
		c.To = fixedNow
	}
}

// A malformed answer is retried before it counts as unreadable: one that
// comes right the second time costs a retry, not a shrink of the requests.
func TestMalformedAnswerIsRetriedFirst(t *testing.T) {
	good := "[" + detectionJSON("a:1", "2020-09-30T14:30:00Z") + "," + detectionJSON("a:2", "2020-09-30T14:20:00Z") + "]"
	answers := []string{`[{"FullId":"a:1","LastProcessedTimeUtc":"2020-09-30T14:30:00Z"},{"FullId":"a:2",,}]`, good}
	logger := &testutil.CaptureLogger{}
	plugin := stubbedPlugin(t, stub(t, func(w http.ResponseWriter, _ *http.Request) {
		body := answers[0]
		if len(answers) > 1 {
			answers = answers[1:]
		}
		respond(t, w, []byte(body))
	}), logger)
	plugin.sleep = func(context.Context, time.Duration) error { return nil }
	acc := gatherOK(t, plugin)
	require.Equal(t, []string{"a:1", "a:2"}, emittedIDs(acc))
	require.Len(t, logger.Warnings(), 1)
	require.Contains(t, logger.Warnings()[0], "Retry 1 of 3")
	require.Contains(t, logger.Warnings()[0], "invalid JSON")
	require.Zero(t, plugin.cursor.pending, "the window is read whole")
}

// Identities that JSON would escape or alter (controls, HTML characters,
// invalid UTF-8) are held as a hash, so that the state file holds each as it
// is, in its length: after a restart the repeats are still dropped.
func TestIdentitiesJSONWouldAlterSurviveARestart(t *testing.T) {
	at := fixedNow.Add(-5 * time.Minute).Format(time.RFC3339Nano)
	ids := []string{"da637:1", `a\u0001b`, "<&>", `quote\"`, `\u2028`, strings.Repeat(`\u001f`, 500)} // as JSON spells them
	records := make([]string, 0, len(ids))
	for _, id := range ids {
		records = append(records, `{"FullId":"`+id+`","LastProcessedTimeUtc":"`+at+`"}`)
	}
	body := "[" + strings.Join(records, ",") + "]"
	server := stub(t, holding(t, at, body))
	stateFile := filepath.Join(t.TempDir(), "state.json")
	withState := func(m *MicrosoftDefender) { m.StateFile = stateFile }

	first := stubbedPlugin(t, server, &testutil.CaptureLogger{}, withState)
	require.Len(t, emittedIDs(gatherOK(t, first)), len(ids))
	first.Stop()
	require.Contains(t, first.cursor.seen, "da637:1")
	for id := range first.cursor.seen {
		require.Regexp(t, `^(sha256:[0-9a-f]{64}|da637:1)$`, id)
	}
	saved, err := os.ReadFile(stateFile)
	require.NoError(t, err)
	require.NotContains(t, string(saved), `\`, "no id takes more room in the state file than in memory")

	second := stubbedPlugin(t, server, &testutil.CaptureLogger{}, withState, func(m *MicrosoftDefender) {
		m.now = func() time.Time { return fixedNow.Add(time.Minute) }
	})
	acc := gatherOK(t, second)
	second.Stop()
	require.Empty(t, emittedIDs(acc), "repeats are dropped after the restart")
	duplicates, _ := pollMetrics(acc)[0].GetField("duplicates_dropped")
	require.Equal(t, int64(len(ids)), duplicates)
}
