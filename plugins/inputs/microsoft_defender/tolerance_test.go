package microsoft_defender

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/influxdata/telegraf"
	"github.com/influxdata/telegraf/config"
	"github.com/influxdata/telegraf/metric"
	"github.com/influxdata/telegraf/testutil"
)

// A record whose values do not fit is emitted without them, one that is no
// record at all is skipped, and neither stops the ones after it nor the
// cursor: the same answer served every poll would otherwise block the
// window for good.
func TestRecordsThatDoNotFitAreNotAWall(t *testing.T) {
	body := "[" + strings.Join([]string{
		detectionJSON("a:1", "2020-09-30T14:00:00Z"),
		`{"FullId":"b:1","AlertPart":1e400,"ReportID":99999999999999999999,"AlertTitle":5,"RemediationIsSuccess":2,` +
			`"AlertTime":"30/09/2020 14:00","LastProcessedTimeUtc":"2020-09-30T14:10:00Z"}`,
		`1`,
		`null`,
		`{"FullId":"c:1","LastProcessedTimeUtc":"0001-01-01 00:00:00"}`,
		`{"FullId":"d:1","AlertTime":"3000-01-01T00:00:00Z","LastProcessedTimeUtc":"2001-01-01T00:00:00Z"}`,
		detectionJSON("e:1", "2020-09-30T14:20:00Z"),
	}, ",") + "]"
	server := stub(t, func(w http.ResponseWriter, _ *http.Request) {
		respond(t, w, []byte(body))
	})
	logger := &testutil.CaptureLogger{}
	plugin := stubbedPlugin(t, server, logger)

	acc := gatherOK(t, plugin)
	require.Equal(t, fixedNow, plugin.cursor.watermark, "the window is done")
	require.Equal(t, []string{"a:1", "b:1", "c:1", "d:1", "e:1"}, emittedIDs(acc))

	windowEnd := fixedNow
	expected := []telegraf.Metric{
		metric.New(measurementAlert, nil, map[string]interface{}{
			"full_id":                 "b:1",
			"last_processed_time_utc": "2020-09-30T14:10:00Z",
			"invalid_field_names":     "AlertPart,ReportID,AlertTitle,RemediationIsSuccess,AlertTime",
		}, eventTime(time.Date(2020, 9, 30, 14, 10, 0, 0, time.UTC), "b:1")),
		// No time that a metric can hold: stamped at the window's end, where
		// the cursor remembers it.
		metric.New(measurementAlert, nil, map[string]interface{}{
			"full_id":             "c:1",
			"invalid_field_names": "LastProcessedTimeUtc",
		}, eventTime(windowEnd, "c:1")),
		metric.New(measurementAlert, nil, map[string]interface{}{
			"full_id":                 "d:1",
			"last_processed_time_utc": "2001-01-01T00:00:00Z",
			"invalid_field_names":     "AlertTime",
		}, eventTime(time.Date(2001, 1, 1, 0, 0, 0, 0, time.UTC), "d:1")),
	}
	var odd []telegraf.Metric
	for _, m := range acc.GetTelegrafMetrics() {
		if id, _ := m.GetField("full_id"); m.Name() == measurementAlert && id != "a:1" && id != "e:1" {
			odd = append(odd, m)
		}
	}
	testutil.RequireMetricsEqual(t, expected, odd)

	testutil.RequireMetricsEqual(t,
		[]telegraf.Metric{expectedPoll("ok", pollStats{
			requests: 1, received: 7, emitted: 5, skipped: 2, invalidFields: 7, outOfWindow: 2,
		}, 0)},
		pollMetrics(acc), testutil.IgnoreFields("duration_seconds"))

	require.Equal(t, []string{
		`W! [] Detection 1 at byte 117 ("b:1") emitted without the values that do not fit: ` +
			`AlertPart: 1e400 is not an integer; ` +
			`ReportID: 99999999999999999999 is not an integer; ` +
			`AlertTitle: a JSON number where a string was expected; ` +
			`RemediationIsSuccess: 2 is not a boolean; ` +
			`AlertTime: "30/09/2020 14:00" is not an RFC 3339 timestamp`,
		`W! [] Detection 2 at byte 301 skipped: a JSON number where an object was expected`,
		`W! [] Detection 3 at byte 303 skipped: it has neither a valid LastProcessedTimeUtc nor a FullId, AlertId or IocUniqueId`,
		`W! [] Detection 4 at byte 308 ("c:1") emitted without the values that do not fit: ` +
			`LastProcessedTimeUtc: "0001-01-01 00:00:00" lies outside the years 1678 to 2262 that a metric's time can hold`,
		`W! [] Detection 4 at byte 308 ("c:1"): its time is outside the window asked for, or unknown; it is emitted, and the cursor does not use its time`,
		`W! [] Detection 5 at byte 370 ("d:1") emitted without the values that do not fit: ` +
			`AlertTime: "3000-01-01T00:00:00Z" lies outside the years 1678 to 2262 that a metric's time can hold`,
		`W! [] Detection 5 at byte 370 ("d:1"): its time is outside the window asked for, or unknown; it is emitted, and the cursor does not use its time`,
	}, logger.Warnings())

	// The same answer again: every record it holds is known, none repeats.
	acc = gatherOK(t, plugin)
	require.Empty(t, emittedIDs(acc))
}

// A full answer whose oldest entry carries a time far before the window
// must not move the walk's upper bound below it: the walk goes on from the
// oldest time inside the window, and nothing in between is lost.
func TestTimesOutsideTheWindowDoNotMoveTheWalk(t *testing.T) {
	var queries []string
	server := stub(t, func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		queries = append(queries, q.Get("sinceTimeUtc")[11:16]+"-"+q.Get("untilTimeUtc")[11:16])
		switch q.Get("untilTimeUtc") {
		case "2020-09-30T15:00:00.0000000Z":
			// Full (limit 3): the newest two, and one from 2001.
			respond(t, w, []byte("["+detectionJSON("a:3", "2020-09-30T14:50:00Z")+","+
				detectionJSON("a:2", "2020-09-30T14:40:00Z")+","+detectionJSON("old", "2001-01-01T00:00:00Z")+"]"))
		case "2020-09-30T14:40:00.0000000Z":
			respond(t, w, []byte("["+detectionJSON("a:2", "2020-09-30T14:40:00Z")+","+detectionJSON("a:1", "2020-09-30T14:05:00Z")+"]"))
		default:
			t.Errorf("unexpected window %s", r.URL.RawQuery)
		}
	})
	logger := &testutil.CaptureLogger{}
	plugin := stubbedPlugin(t, server, logger)
	plugin.PageSize = 3

	acc := gatherOK(t, plugin)
	require.Equal(t, []string{"14:00-15:00", "14:50-15:00", "14:00-14:40"}, queries, "the newest check after the full answer")
	require.Equal(t, []string{"a:3", "a:2", "old", "a:1"}, emittedIDs(acc))
	require.Equal(t, fixedNow, plugin.cursor.watermark)
}

// A full answer with no time inside the window tells nothing of how far
// down it reached: the newest instant is found with one-detection requests,
// read whole, and the walk goes on below it.
func TestFullAnswerWithoutATimeInTheWindowIsWalked(t *testing.T) {
	// The API places x:1 at 14:30 and x:2 at 14:20, but their texts say
	// otherwise; a:1 at 14:05 is below them.
	sim := &placedSIEM{detections: []placedDetection{
		{id: "x:1", at: time.Date(2020, 9, 30, 14, 30, 0, 0, time.UTC), body: detectionJSON("x:1", "2001-01-01T00:00:00Z")},
		{id: "x:2", at: time.Date(2020, 9, 30, 14, 20, 0, 0, time.UTC), body: detectionJSON("x:2", "2099-01-01T00:00:00Z")},
		{id: "a:1", at: time.Date(2020, 9, 30, 14, 5, 0, 0, time.UTC)},
	}}
	server := stub(t, sim.handler(t))
	logger := &testutil.CaptureLogger{}
	plugin := stubbedPlugin(t, server, logger)
	plugin.PageSize = 2

	acc := gatherOK(t, plugin)
	require.Equal(t, []string{"x:1", "x:2", "a:1"}, emittedIDs(acc))
	require.Equal(t, fixedNow, plugin.cursor.watermark)
	require.Contains(t, logger.Warnings(), "W! [] The SIEM API answered 2 detection(s) for 2020-09-30T14:00:00Z to 2020-09-30T15:00:00Z, "+
		"none with a LastProcessedTimeUtc inside that window: finding the newest instant with one-detection requests")
	// One search of about 35 probes for the hour, then the instants.
	require.Less(t, len(sim.queries), 45)
}

// A Graph alert whose values do not fit is emitted without them; one
// without an id, or no object, is skipped; the page goes on.
func TestGraphAlertsThatDoNotFitAreNotAWall(t *testing.T) {
	body := `{"value":[` + strings.Join([]string{
		`{"id":"a","mitreTechniques":"T1059","title":7,"lastUpdateDateTime":"2026-01-01T00:00:00Z"}`,
		`{"lastUpdateDateTime":"2026-01-01T00:00:00Z"}`,
		`"x"`,
		`{"id":"b","lastUpdateDateTime":"2026-01-01T00:00:00Z","evidence":[{},2]}`,
		`{"id":"c","lastUpdateDateTime":"2026-01-01T00:00:00Z","evidence":{}}`,
	}, ",") + `]}`
	var got []*graphAlert
	next, err := decodeGraphPage(strings.NewReader(body), evidenceNeeds{raw: true}, func(a *graphAlert) bool {
		c := *a
		got = append(got, &c)
		return true
	})
	require.NoError(t, err)
	require.Empty(t, next)
	summary := make([]string, 0, len(got))
	for _, a := range got {
		summary = append(summary, a.issues.where()+" "+a.ID+" skip="+a.issues.skip+" invalid="+a.issues.String())
	}
	require.Equal(t, []string{
		`Alert 0 at byte 10 a skip= invalid=mitreTechniques: a JSON string where an array of strings was expected; ` +
			`title: a JSON number where a string was expected`,
		`Alert 1 at byte 101  skip=it has no id invalid=`,
		`Alert 2 at byte 147  skip=a JSON string where an object was expected invalid=`,
		`Alert 3 at byte 151 b skip= invalid=evidence: evidence 1: a JSON number where an evidence object was expected`,
		`Alert 4 at byte 224 c skip= invalid=evidence: a JSON object where an array was expected`,
	}, summary)
	require.Nil(t, got[0].MitreTechniques)
	require.Nil(t, got[3].Evidence.raw, "evidence that does not decode is not emitted")

	m, _ := got[0].metric()
	require.Equal(t, "a", m.Fields()["alert_id"])
	require.NotContains(t, m.Fields(), "mitre_techniques")
}

// A Graph version whose lastUpdateDateTime does not parse is emitted once,
// not in every poll whose window returns it again.
func TestGraphAlertWithoutATimeIsEmittedOnce(t *testing.T) {
	page := `{"value":[{"id":"a","lastUpdateDateTime":"yesterday","severity":"high"}]}`
	var requests int
	server := stub(t, func(w http.ResponseWriter, _ *http.Request) {
		requests++
		respond(t, w, []byte(page))
	})
	plugin := stubbedPlugin(t, server, &testutil.CaptureLogger{}, func(m *MicrosoftDefender) {
		m.API = "graph"
		m.EndpointURL = server.URL + graphAlertsPath
		m.RefreshToken = config.Secret{}
	})
	var alerts int
	for i := range 3 {
		plugin.now = func() time.Time { return fixedNow.Add(time.Duration(i) * time.Minute) }
		acc := gatherOK(t, plugin)
		for _, m := range acc.GetTelegrafMetrics() {
			if m.Name() == measurementAlert {
				alerts++
				require.Equal(t, "lastUpdateDateTime", m.Fields()["invalid_field_names"])
				require.Equal(t, eventTime(fixedNow, "a@0001-01-01T00:00:00Z"), m.Time(), "stamped when first read")
			}
		}
	}
	require.Equal(t, 3, requests)
	require.Equal(t, 1, alerts)
}
