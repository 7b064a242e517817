package microsoft_defender

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/influxdata/telegraf/config"
	"github.com/influxdata/telegraf/testutil"
)

// A next link to another host is never followed: the page it came with
// ends the part when it is short of a full page, and the poll goes on.
func TestGraphNextLinkToAnotherHostIsRefused(t *testing.T) {
	var requests []string
	server := stub(t, func(w http.ResponseWriter, r *http.Request) {
		requests = append(requests, r.Host+r.URL.Path)
		respond(t, w, []byte(`{"value":[{"id":"a1","lastUpdateDateTime":"2020-09-30T14:00:00Z"}],"@odata.nextLink":"https://evil.example.com/steal"}`))
	})
	logger := &testutil.CaptureLogger{}
	plugin := withDefaults(&MicrosoftDefender{
		API:         "graph",
		EndpointURL: server.URL + graphAlertsPath,
		AuthMethod:  methodAccessToken,
		AccessToken: config.NewSecret([]byte(testAccessToken)),
		MaxWindow:   config.Duration(3 * time.Hour), // one part: the stub ignores the window
		Log:         logger,
		now:         func() time.Time { return fixedNow },
	})
	require.NoError(t, plugin.Init())
	acc := gatherOK(t, plugin)
	host := strings.TrimPrefix(server.URL, "http://")
	require.Equal(t, []string{host + graphAlertsPath}, requests)
	require.Equal(t, []string{`W! [] Graph paging: the Graph API at ` + host +
		` sent an @odata.nextLink to another place, not followed: "https://evil.example.com/steal"`}, logger.Warnings())
	require.Len(t, detectionMetrics(acc), 2, "the alert and its count")
	poll := pollFields(t, acc)
	require.Equal(t, int64(1), poll["errors"])
	require.Equal(t, false, poll["backlog"])
	require.Equal(t, fixedNow, plugin.cursor.watermark)
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
	require.Equal(t, []string{`W! [] Alert "a1@2020-09-30T14:00:00Z": fields evidence (left out) longer than 32768 bytes were cut to that length`},
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
			`response is not a JSON object with a value array: it starts with "["`},
		{"html page", `<html>`, 0,
			`response is not a JSON object: invalid JSON at byte 0: invalid character '<' at start of value`},
		{"value is an object", `{"value":{}}`, 0,
			`value is not an array: it is a JSON object`},
		{"cut in the second alert", `{"value":[` + good + `,{"id":"b","lastUp`, 1,
			`alert 1: response truncated at byte 82`},
		{"next link is a number", `{"value":[` + good + `],"@odata.nextLink":3}`, 1,
			`@odata.nextLink: JSON number where a string was expected`},
		{"two pages in one body", `{"value":[]}{"value":[]}`, 0,
			`invalid JSON at byte 12: invalid character '{' after top-level value`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			decoded := 0
			_, err := decodeGraphPage(strings.NewReader(tt.body), func(*graphAlert) bool {
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
		next, err := decodeGraphPage(strings.NewReader(body), func(a *graphAlert) bool {
			handled = append(handled, a.ID)
			return len(handled) < 2
		})
		require.NoError(t, err)
		require.Empty(t, next)
		require.Equal(t, []string{"a", "b"}, handled)
	}
}

// Next links that lead from A to B and back to A, from a service that
// ignores the filter and counts more than it has: the loop is seen at once,
// the part split around the two alerts, each emitted once, and the poll
// reaches the end of its window in a few requests.
func TestGraphNextLinkLoopEndsInParts(t *testing.T) {
	var requests []string
	var server *httptest.Server
	server = stub(t, func(w http.ResponseWriter, r *http.Request) {
		requests = append(requests, r.URL.Query().Get("page"))
		alert, next := `{"id":"a1","lastUpdateDateTime":"2020-09-30T13:30:00Z"}`, "b"
		if r.URL.Query().Get("page") == "b" {
			alert, next = `{"id":"b1","lastUpdateDateTime":"2020-09-30T14:10:00Z"}`, "a"
		}
		respond(t, w, []byte(`{"@odata.count":5,"value":[`+alert+`],"@odata.nextLink":"`+server.URL+graphAlertsPath+`?page=`+next+`"}`))
	})
	logger := &testutil.CaptureLogger{}
	plugin := withDefaults(&MicrosoftDefender{
		API:         "graph",
		EndpointURL: server.URL + graphAlertsPath,
		AuthMethod:  methodAccessToken,
		AccessToken: config.NewSecret([]byte(testAccessToken)),
		MaxWindow:   config.Duration(3 * time.Hour),
		Log:         logger,
		now:         func() time.Time { return fixedNow },
	})
	require.NoError(t, plugin.Init())
	acc := gatherOK(t, plugin)
	var ids []string
	for _, m := range acc.GetTelegrafMetrics() {
		if m.Name() == measurementAlert {
			id, _ := m.GetField("alert_id")
			ids = append(ids, id.(string))
		}
	}
	require.ElementsMatch(t, []string{"a1", "b1"}, ids)
	poll := pollFields(t, acc)
	require.Equal(t, false, poll["backlog"])
	require.Equal(t, fixedNow, plugin.cursor.watermark)
	require.Len(t, requests, int(poll["requests"].(int64)))
	require.Len(t, requests, 11, "a loop costs a few requests, not a poll")
}
