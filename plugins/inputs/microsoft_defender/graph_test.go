package microsoft_defender

import (
	"cmp"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/influxdata/telegraf/config"
	"github.com/influxdata/telegraf/testutil"
)

// graphStub answers the Graph requests of a plugin: the first page of a
// part with page(from, to) for the bounds of its $filter, a next link with
// page of the zero times; a next link in a page may name "{{server}}", and
// a page starting "400 " is refused with that body.
func graphStub(t *testing.T, page func(r *http.Request, from, to time.Time) string,
	configure ...func(*MicrosoftDefender)) (*MicrosoftDefender, *testutil.CaptureLogger, *[]string) {
	t.Helper()
	var requests []string
	var server *httptest.Server
	server = stub(t, func(w http.ResponseWriter, r *http.Request) {
		requests = append(requests, r.URL.RequestURI())
		var from, to time.Time
		if m := filterBounds.FindStringSubmatch(r.URL.Query().Get("$filter")); m != nil {
			var errFrom, errTo error
			from, errFrom = time.Parse(time.RFC3339Nano, m[1])
			to, errTo = time.Parse(time.RFC3339Nano, m[2])
			if err := errors.Join(errFrom, errTo); err != nil {
				t.Errorf("the bounds of %s: %v", m[0], err)
			}
		}
		body := strings.ReplaceAll(page(r, from, to), "{{server}}", server.URL)
		if refusal, ok := strings.CutPrefix(body, "400 "); ok {
			w.WriteHeader(http.StatusBadRequest)
			body = refusal
		}
		respond(t, w, []byte(body))
	})
	logger := &testutil.CaptureLogger{}
	plugin := withDefaults(&MicrosoftDefender{
		API:         "graph",
		EndpointURL: server.URL + graphAlertsPath,
		AuthMethod:  methodAccessToken,
		AccessToken: config.NewSecret([]byte(testAccessToken)),
		MaxWindow:   config.Duration(3 * time.Hour), // one chunk, [12:59, 14:59)
		Delay:       config.Duration(time.Minute),   // the window off the hour, unlike a1's 14:00
		Log:         logger,
		now:         func() time.Time { return fixedNow },
	})
	for _, c := range configure {
		c(plugin)
	}
	require.NoError(t, plugin.Init())
	return plugin, logger, &requests
}

var filterBounds = regexp.MustCompile(`lastUpdateDateTime ge (\S+) and lastUpdateDateTime lt (\S+)`)

// graphAlertJSON is an alert version as Graph sends it.
func graphAlertJSON(id string, at time.Time) string {
	return fmt.Sprintf(`{"id":%q,"lastUpdateDateTime":%q}`, id, at.Format(time.RFC3339Nano))
}

// filtersOf are the $filter bounds of requests, "" for a next link.
func filtersOf(requests []string) []string {
	out := make([]string, 0, len(requests))
	for _, r := range requests {
		u, err := url.Parse(r)
		if err != nil {
			panic(err)
		}
		m := filterBounds.FindStringSubmatch(u.Query().Get("$filter"))
		if m == nil {
			out = append(out, u.RawQuery)
			continue
		}
		out = append(out, strings.TrimPrefix(m[1], "2020-09-30T")+" "+strings.TrimPrefix(m[2], "2020-09-30T"))
	}
	return out
}

// A next link to another host is never followed. A page with one is no
// evidence: the part is split down to the instant of the alert, whose
// chain the link cannot continue; the alert is emitted once, the rest of
// the window read.
func TestGraphNextLinkToAnotherHostIsRefused(t *testing.T) {
	at := fixedNow.Add(-time.Hour)
	plugin, logger, requests := graphStub(t, func(_ *http.Request, from, to time.Time) string {
		if at.Before(from) || !at.Before(to) {
			return `{"value":[]}`
		}
		return `{"value":[` + graphAlertJSON("a1", at) + `],"@odata.nextLink":"https://evil.example.com/steal"}`
	})
	acc := gatherOK(t, plugin)
	require.Equal(t, []string{
		"12:59:00.0000000Z 14:59:00.0000000Z", // a next link: split at the middle, earlier than a1
		"12:59:00.0000000Z 13:59:00.0000000Z", // empty: the rest of the chunk next
		"13:59:00.0000000Z 14:59:00.0000000Z", // split at a1, earlier than the middle
		"13:59:00.0000000Z 14:00:00.0000000Z",
		"14:00:00.0000000Z 14:59:00.0000000Z", // a1 at the start: its instant first
		"14:00:00.0000000Z 14:00:00.0000001Z", // the instant: the link is not followed
		"14:00:00.0000001Z 14:00:00.0000017Z", // sized from the instant, 16 times as wide
		"14:00:00.0000017Z 14:59:00.0000000Z",
	}, filtersOf(*requests))
	host := strings.TrimPrefix(plugin.EndpointURL, "http://")
	host = strings.TrimSuffix(host, graphAlertsPath)
	require.Equal(t, []string{
		`W! [] Graph paging: the Graph API at ` + host + ` sent an @odata.nextLink to another place, not followed: https://(another host):443`,
		`W! [] Alerts sharing lastUpdateDateTime 2020-09-30T14:00:00Z could not all be shown read whole (a next link to another place): ` +
			`1 read, moving on`,
	}, logger.Warnings())
	require.Len(t, detectionMetrics(acc), 2, "the alert and its count")
	poll := pollFields(t, acc)
	require.Equal(t, int64(1), poll["errors"])
	require.Equal(t, false, poll["backlog"])
	require.Equal(t, fixedNow.Add(-time.Minute), plugin.cursor.watermark)
}

func TestGraphEvidenceOverTheFieldCapIsLeftOut(t *testing.T) {
	huge := strings.Repeat("x", maxFieldBytes)
	body := `{"value":[{"id":"a1","lastUpdateDateTime":"2020-09-30T14:00:00Z",` +
		`"evidence":[{"@odata.type":"#microsoft.graph.security.urlEvidence","url":"` + huge + `"}]}]}`
	server := stub(t, func(w http.ResponseWriter, _ *http.Request) {
		respond(t, w, []byte(body))
	})
	logger := &testutil.CaptureLogger{}
	plugin := withDefaults(&MicrosoftDefender{
		API:             "graph",
		EndpointURL:     server.URL + graphAlertsPath,
		AuthMethod:      methodAccessToken,
		AccessToken:     config.NewSecret([]byte(testAccessToken)),
		IncludeEvidence: true,
		MaxWindow:       config.Duration(3 * time.Hour), // one request: the stub ignores the window
		Log:             logger,
		now:             func() time.Time { return fixedNow },
	})
	require.NoError(t, plugin.Init())
	alerts := detectionMetrics(gatherOK(t, plugin))
	require.NotEmpty(t, alerts)
	require.False(t, alerts[0].HasField("evidence"))
	require.Equal(t, int64(1), alerts[0].Fields()["evidence_count"])
	require.Equal(t, []string{`W! [] Alert "a1@2020-09-30T14:00:00Z": fields evidence (left out) longer than 32766 bytes were cut to that length`},
		logger.Warnings())
}

func TestMalformedGraphPages(t *testing.T) {
	good := `{"id":"a","lastUpdateDateTime":"2026-01-01T00:00:00Z"}`
	tests := []struct {
		name    string
		body    string
		decoded int
		want    string
	}{
		{"array instead of object", `[` + good + `]`, 0,
			`response is not a JSON object with a value array: it is a JSON array`},
		{"html page", `<html>`, 0,
			`response is not a JSON object: invalid JSON at byte 0: invalid character '<' at start of value`},
		{"value is an object", `{"value":{}}`, 0,
			`value is not an array: it is a JSON object`},
		{"cut in the second alert", `{"value":[` + good + `,{"id":"b","lastUp`, 1,
			`alert 1: response truncated at byte 82`},
		{"next link is a number", `{"value":[` + good + `],"@odata.nextLink":3}`, 1,
			`@odata.nextLink: JSON number where a string was expected`},
		{"two pages in one body", `{"value":[]}{"value":[]}`, 0,
			`invalid JSON at byte 12: more follows the answer`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			decoded := 0
			_, err := decodeGraphPage(strings.NewReader(tt.body), evidenceNeeds{raw: true}, func(*graphAlert) bool {
				decoded++
				return true
			})
			require.EqualError(t, err, tt.want)
			require.Equal(t, tt.decoded, decoded)
		})
	}
}

// A handler that stops takes the rest of the page with it: no error, no
// next link, nothing more handled.
func TestGraphPageStopsWhenTheHandlerDoes(t *testing.T) {
	alert := func(id string) string {
		return `{"id":"` + id + `","lastUpdateDateTime":"2026-01-01T00:00:00Z"}`
	}
	for _, body := range []string{
		`{"value":[` + alert("a") + `,` + alert("b") + `,` + alert("c") + `],"@odata.nextLink":"https://graph.microsoft.com/next"}`,
		`{"@odata.nextLink":"https://graph.microsoft.com/next","value":[` + alert("a") + `,` + alert("b") + `]}`,
	} {
		var handled []string
		next, err := decodeGraphPage(strings.NewReader(body), evidenceNeeds{raw: true}, func(a *graphAlert) bool {
			handled = append(handled, a.ID)
			return len(handled) < 2
		})
		require.NoError(t, err)
		require.Empty(t, next)
		require.Equal(t, []string{"a", "b"}, handled)
	}
}

// Three alerts share one instant and come one a page, whatever $top says,
// in a chain that leads back: after one look behind the first short page's
// next link shows pages of one, the part is split down to the instant, whose
// chain is followed until a link leads back; each alert is emitted once,
// with a warning that the instant is not shown whole.
func TestGraphChainOfAnInstantEndsAtALinkBack(t *testing.T) {
	at := fixedNow.Add(-time.Hour)
	plugin, logger, requests := graphStub(t, func(r *http.Request, from, to time.Time) string {
		switch r.URL.Query().Get("page") {
		case "b":
			return `{"value":[` + graphAlertJSON("b1", at) + `],"@odata.nextLink":"{{server}}` + graphAlertsPath + `?page=c"}`
		case "c":
			return `{"value":[` + graphAlertJSON("c1", at) + `],"@odata.nextLink":"{{server}}` + graphAlertsPath + `?page=b"}`
		}
		if at.Before(from) || !at.Before(to) {
			return `{"value":[]}`
		}
		return `{"value":[` + graphAlertJSON("a1", at) + `],"@odata.nextLink":"{{server}}` + graphAlertsPath + `?page=b"}`
	})
	acc := gatherOK(t, plugin)
	require.Equal(t, []string{
		"12:59:00.0000000Z 14:59:00.0000000Z",
		"page=b", // behind a short first page: not empty, so pages hold one and the part is split
		"12:59:00.0000000Z 13:59:00.0000000Z",
		"13:59:00.0000000Z 14:59:00.0000000Z",
		"13:59:00.0000000Z 14:00:00.0000000Z",
		"14:00:00.0000000Z 14:59:00.0000000Z",
		"14:00:00.0000000Z 14:00:00.0000001Z",
		"page=b",
		"page=c",
		"14:00:00.0000001Z 14:00:00.0000002Z",
		"14:00:00.0000002Z 14:59:00.0000000Z",
	}, filtersOf(*requests))
	require.Equal(t, []string{
		`W! [] Alerts sharing lastUpdateDateTime 2020-09-30T14:00:00Z could not all be shown read whole (a next link leads back): 3 read, moving on`,
	}, logger.Warnings())
	var ids []string
	for _, m := range acc.GetTelegrafMetrics() {
		if m.Name() == measurementAlert {
			id, _ := m.GetField("alert_id")
			ids = append(ids, id.(string))
		}
	}
	require.ElementsMatch(t, []string{"a1", "b1", "c1"}, ids)
	require.Equal(t, fixedNow.Add(-time.Minute), plugin.cursor.watermark)
}

// A chain of one instant that adds an alert on every page ends after
// max_alerts_per_gather / page_size + 1 pages; one that adds nothing new,
// or whose next link is refused, ends at once, and the poll goes on.
func TestGraphChainOfAnInstantIsBounded(t *testing.T) {
	at := fixedNow.Add(-time.Hour)
	for name, tt := range map[string]struct {
		pageOf      func(n int) string
		refuse      bool // the first next link
		pages, read int
		why         string
	}{
		"endless":     {func(n int) string { return graphAlertJSON(fmt.Sprint("a", n), at) }, false, 11, 11, "11 pages read"},
		"nothing new": {func(int) string { return graphAlertJSON("a", at) }, false, 2, 1, "a page added nothing new"},
		"refused": {func(int) string { return graphAlertJSON("a", at) }, true, 2, 1, "a next link was refused: Graph API at {{host}} " +
			`answered 400 Bad Request (the query was refused: check service_sources and severities): body "{\"error\":{\"code\":\"BadRequest\"}}"`},
	} {
		t.Run(name, func(t *testing.T) {
			plugin, logger, requests := graphStub(t, func(r *http.Request, from, to time.Time) string {
				n, err := strconv.Atoi(cmp.Or(r.URL.Query().Get("page"), "0"))
				if err != nil {
					t.Errorf("page: %v", err)
				}
				if n == 0 && (at.Before(from) || !at.Before(to)) {
					return `{"value":[]}`
				}
				if n == 1 && tt.refuse {
					return `400 {"error":{"code":"BadRequest"}}`
				}
				return fmt.Sprintf(`{"value":[%s],"@odata.nextLink":"{{server}}%s?page=%d"}`, tt.pageOf(n), graphAlertsPath, n+1)
			}, func(m *MicrosoftDefender) { m.PageSize, m.MaxAlertsPerGather = 10, 100 })
			gatherOK(t, plugin)
			// The instant's request and the chain behind it.
			filters := filtersOf(*requests)
			start := slices.Index(filters, "14:00:00.0000000Z 14:00:00.0000001Z")
			require.GreaterOrEqual(t, start, 0, filters)
			chain := 1
			for _, f := range filters[start+1:] {
				if !strings.HasPrefix(f, "page=") {
					break
				}
				chain++
			}
			require.Equal(t, tt.pages, chain)
			host := strings.TrimSuffix(strings.TrimPrefix(plugin.EndpointURL, "http://"), graphAlertsPath)
			require.Equal(t, []string{fmt.Sprintf("W! [] Alerts sharing lastUpdateDateTime 2020-09-30T14:00:00Z could not all be shown "+
				"read whole (%s): %d read, moving on", strings.ReplaceAll(tt.why, "{{host}}", host), tt.read)}, logger.Warnings())
			require.Equal(t, fixedNow.Add(-time.Minute), plugin.cursor.watermark)
		})
	}
}

// Malformed JSON is no reason to split a part: it comes back whatever
// part is asked. The poll fails, every request asked for the whole window,
// and the position stays.
func TestGraphMalformedPageIsNotSplit(t *testing.T) {
	plugin, _, requests := graphStub(t, func(*http.Request, time.Time, time.Time) string {
		return `{"value":[{"id":"a1","lastUpdateDateTime":"2020-09-30T14:00:00Z"},{"id":]}`
	})
	var acc testutil.Accumulator
	require.NoError(t, plugin.Gather(&acc))
	require.Len(t, acc.Errors, 1)
	require.Contains(t, acc.Errors[0].Error(), "alert 1: invalid JSON at byte")
	require.NotEmpty(t, *requests)
	for _, f := range filtersOf(*requests) {
		require.Equal(t, "12:59:00.0000000Z 14:59:00.0000000Z", f)
	}
	require.True(t, plugin.cursor.watermark.IsZero())
	require.Equal(t, fixedNow.Add(-2*time.Hour-time.Minute), plugin.cursor.pending.From)
}

// A next link is the service's and may be refused a poll later (an expired
// $skiptoken): a chain the poll's deadline cut is asked for again from its
// first page, never resumed at the link kept, which would skip the rest of
// the instant for good. (No chain proves an instant whole: the warning is
// the one any chain gets.)
func TestNextLinkIsNotResumedAPollLater(t *testing.T) {
	at := fixedNow.Add(-time.Hour)
	clock, poll := fixedNow, 1
	link := func(page int) string {
		return fmt.Sprintf(`"@odata.nextLink":"{{server}}%s?page=%d&poll=%d"`, graphAlertsPath, page, poll)
	}
	plugin, logger, _ := graphStub(t, func(r *http.Request, from, to time.Time) string {
		q := r.URL.Query()
		switch {
		case q.Get("page") != "" && q.Get("poll") != strconv.Itoa(poll):
			return `400 {"error":{"code":"BadRequest","message":"skiptoken expired"}}`
		case q.Get("page") == "1":
			clock = fixedNow.Add(2 * time.Hour) // the poll's interval ends here
			return fmt.Sprintf(`{"value":[%s,%s],%s}`, graphAlertJSON("a2", at), graphAlertJSON("a3", at), link(2))
		case q.Get("page") == "2":
			return fmt.Sprintf(`{"value":[%s]}`, graphAlertJSON("a4", at))
		case at.Before(from) || !at.Before(to):
			return `{"value":[]}`
		case to.Sub(from) != tick:
			return fmt.Sprintf(`{"value":[%s,%s]}`, graphAlertJSON("a0", at), graphAlertJSON("a1", at))
		}
		return fmt.Sprintf(`{"value":[%s,%s],%s}`, graphAlertJSON("a0", at), graphAlertJSON("a1", at), link(1))
	}, func(m *MicrosoftDefender) { m.PageSize = 2 })
	plugin.now = func() time.Time { return clock }
	var ids []string
	for range 3 {
		for _, m := range gatherOK(t, plugin).GetTelegrafMetrics() {
			if id, ok := m.GetField("alert_id"); ok && m.Name() == measurementAlert {
				ids = append(ids, id.(string))
			}
		}
		poll++
	}
	require.ElementsMatch(t, []string{"a0", "a1", "a2", "a3", "a4"}, ids)
	require.Equal(t, []string{"W! [] Alerts sharing lastUpdateDateTime 2020-09-30T14:00:00Z could not all be shown read whole " +
		"(a chain of 3 pages, which proves nothing): 5 read, moving on"}, logger.Warnings())
}
