package microsoft_defender

import (
	"errors"
	"net/http"
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
		"lag_seconds":        lag.Seconds(),
		"backlog":            s.backlog,
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

	// The newest two fill the budget: a backlog remains.
	responses = []string{"[" + b + "," + c + "]"}
	acc := gatherOK(t, plugin)
	want := expectedPoll("partial", pollStats{requests: 1, received: 2, emitted: 2, backlog: true}, time.Hour)
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
	expected := expectedPoll("partial", pollStats{requests: 1, received: 1, emitted: 1, errors: 1, backlog: true}, time.Hour)
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
		w.shrink(step.decoded, k)
		require.Equal(t, step.limit, w.sizeCap, "after %d decoded", step.decoded)
	}
	require.Equal(t, progress{unreadable: fixedNow}, w.passOver(fixedNow))
	require.Zero(t, w.sizeCap, "past the unreadable instant requests have the usual size")
}
