package microsoft_defender

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/influxdata/telegraf/testutil"
)

// A batch the outputs confirmed behind one they have not is confirmed all
// the same: a restart reads again only the unconfirmed, and counts nothing
// twice. (Two outputs, or a retrying one, confirm groups out of order.)
func TestConfirmedBehindAnUnconfirmedBatchIsNotRepeated(t *testing.T) {
	stateFile := filepath.Join(t.TempDir(), "state.json")
	sim := &placedSIEM{detections: []placedDetection{{id: "old", at: fixedNow.Add(-10 * time.Minute)}}}
	server := stub(t, sim.handler(t))
	plugin, acc, _ := deliveryPlugin(t, server, stateFile, func(m *MicrosoftDefender) { m.PageSize = 1 })
	require.NoError(t, plugin.Gather(acc))
	alerts(acc, 0)[0].Accept()
	sim.mu.Lock()
	for i := range 3 {
		sim.detections = append(sim.detections, placedDetection{id: "d:" + strconv.Itoa(i), at: fixedNow.Add(time.Duration(i+1) * time.Minute)})
	}
	sim.mu.Unlock()
	clock := func(d time.Duration) { plugin.now = func() time.Time { return fixedNow.Add(d) } }
	clock(5 * time.Minute)
	before := len(acc.GetTelegrafMetrics())
	require.NoError(t, plugin.Gather(acc)) // saves "old" confirmed
	sent := alerts(acc, before)
	require.Equal(t, []string{"old", "d:2", "d:1", "d:0"}, emittedIDs(acc), "one batch an answer")
	clock(6 * time.Minute)
	require.NoError(t, plugin.Gather(acc))
	sent[1].Accept() // d:1 confirmed, d:2 before it and d:0 after it not yet
	plugin.Stop()
	var counted int64
	for _, m := range counts(acc, 0) {
		counted += m.Fields()["count"].(int64)
	}
	require.Equal(t, int64(2), counted, "old and d:1 counted")

	restarted, again, _ := deliveryPlugin(t, server, stateFile, func(m *MicrosoftDefender) { m.now = plugin.now })
	require.NoError(t, restarted.Gather(again))
	require.Equal(t, []string{"d:2", "d:0"}, emittedIDs(again), "d:1 was confirmed: not sent, nor counted, again")
}

// echoingStatusLine answers with a status line whose reason phrase repeats
// what the request carried: the Authorization header of an API request, the
// form (client_secret) of a token request. net/http's server cannot write
// such a line, so the connection is hijacked.
func echoingStatusLine(t *testing.T, status int) *httptest.Server {
	server := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		echo := r.Header.Get("Authorization")
		if err := r.ParseForm(); err == nil && r.PostForm.Get("client_secret") != "" {
			echo = r.PostForm.Get("client_secret")
		}
		conn, buf, err := w.(http.Hijacker).Hijack()
		if err != nil {
			t.Error(err)
			return
		}
		defer conn.Close()
		fmt.Fprintf(buf, "HTTP/1.1 %d echo %s\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", status, echo)
		buf.Flush()
	}))
	t.Cleanup(server.Close)
	return server
}

// An API answer's reason phrase is the server's text, as its body is: a
// server repeating the token there must not get it into an error.
func TestAPIReasonPhraseEchoingTheTokenIsNotQuoted(t *testing.T) {
	api := echoingStatusLine(t, http.StatusForbidden)
	token := stub(t, func(http.ResponseWriter, *http.Request) { t.Error("no API request to the token stub") })
	logger := &testutil.CaptureLogger{}
	plugin := stubbedPlugin(t, token, logger, func(m *MicrosoftDefender) { m.EndpointURL = api.URL + "/api/alerts" })
	msg, _ := gatherError(t, plugin, logger)
	require.Contains(t, msg, "answered 403")
}

// The token endpoint's reason phrase likewise: one repeating the client
// secret must not get it into an error.
func TestTokenReasonPhraseEchoingTheSecretIsNotQuoted(t *testing.T) {
	login := echoingStatusLine(t, http.StatusBadRequest)
	api := stub(t, func(http.ResponseWriter, *http.Request) { t.Error("no API request without a token") })
	logger := &testutil.CaptureLogger{}
	plugin := stubbedPlugin(t, api, logger, func(m *MicrosoftDefender) { m.LoginEndpoint = login.URL })
	msg, _ := gatherError(t, plugin, logger)
	require.Contains(t, msg, "HTTP 400")
}

// graphIgnoringTheFilter answers every request with a full page (of two) of
// versions a month old, as a Graph service that ignores $filter would (a
// proxy dropping the query, an API change).
func graphIgnoringTheFilter(t *testing.T) (*MicrosoftDefender, *testutil.CaptureLogger, *[]string) {
	outside := fixedNow.Add(-30 * 24 * time.Hour)
	return graphStub(t, func(*http.Request, time.Time, time.Time) string {
		return fmt.Sprintf(`{"value":[%s,%s]}`, graphAlertJSON("x1", outside), graphAlertJSON("x2", outside))
	}, func(m *MicrosoftDefender) { m.PageSize = 2 })
}

func outOfWindowWarnings(logger *testutil.CaptureLogger) []string {
	var out []string
	for _, w := range logger.Warnings() {
		if strings.Contains(w, "outside the window asked for") {
			out = append(out, w)
		}
	}
	return out
}

// Versions outside the part asked for are warned of once a poll, as other
// problems of records are (defender_poll counts them all): not once a
// request, up to max_requests_per_minute lines a minute.
func TestGraphOutOfWindowIsWarnedOfOnceAPoll(t *testing.T) {
	// Each page holds a month-old version besides the one of the part, if any: the part is split many times.
	outside, inside := fixedNow.Add(-30*24*time.Hour), fixedNow.Add(-time.Hour)
	plugin, logger, requests := graphStub(t, func(_ *http.Request, from, to time.Time) string {
		if inside.Before(from) || !inside.Before(to) {
			return fmt.Sprintf(`{"value":[%s]}`, graphAlertJSON("x1", outside))
		}
		return fmt.Sprintf(`{"value":[%s,%s]}`, graphAlertJSON("x1", outside), graphAlertJSON("in", inside))
	}, func(m *MicrosoftDefender) { m.PageSize = 2 })
	var acc testutil.Accumulator
	require.NoError(t, plugin.Gather(&acc))
	require.Greater(t, len(*requests), 1)
	require.Equal(t, []string{"W! [] The Graph API sent 1 alert last updated outside the window asked for, " +
		"[2020-09-30T12:59:00Z, 2020-09-30T14:59:00Z) (the first: x1@2020-08-31T15:00:00Z): left out"}, outOfWindowWarnings(logger))
}

// A full page of versions all outside the part tells nothing of the part:
// splitting it, down to 100 ns and on 100 ns at a time, spends a poll's
// requests to move the window by nanoseconds (60 requests, 100 ns, at the
// default rate limit). The poll should stop with an error instead, as for a
// SIEM API answering other than the newest: nothing is lost.
func TestGraphIgnoringTheFilterIsNoCrawl(t *testing.T) {
	plugin, _, requests := graphIgnoringTheFilter(t)
	var acc testutil.Accumulator
	require.NoError(t, plugin.Gather(&acc))
	require.Len(t, *requests, 1, "a page of versions outside the part, none inside, is no reason to split it")
	require.Len(t, acc.Errors, 1)
	require.EqualError(t, acc.Errors[0], "the Graph API answered [2020-09-30T12:59:00Z, 2020-09-30T14:59:00Z) with 2 alerts, "+
		"all last updated outside it: it does not apply $filter, so the window is not read on")
}

// Detections of one SIEM alert share its AlertTime, and so its second, and
// their tags: their points differ only by the fraction hashed from FullId.
// In 10^7 steps of 100 ns, two of an alert's first 19,061 detections
// (FullIds ..._0 to ..._19060), _255 and _19060, shared one, and InfluxDB
// kept one of them (a shared point was even odds at about 3,700 detections
// in one second). The fraction spans the 10^9 nanoseconds now: a hundred
// times fewer clashes (even odds at about 37,000), these two apart.
func TestSIEMDetectionsOfOneAlertShareAPointHundredTimesLessOften(t *testing.T) {
	at := fixedNow.Add(-10 * time.Minute).Format(time.RFC3339Nano)
	detection := func(part int) string {
		return fmt.Sprintf(`{"AlertId":"da637471234567891234_-1234567890","FullId":"da637471234567891234_-1234567890_%d",`+
			`"Severity":"High","Category":"Ransomware","AlertTime":%q,"LastProcessedTimeUtc":%q}`, part, at, at)
	}
	requireOwnPoints(t, "["+detection(255)+","+detection(19060)+"]")
}
