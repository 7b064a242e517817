package microsoft_defender

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/influxdata/telegraf/config"
	"github.com/influxdata/telegraf/testutil"

	simulator "github.com/sectelemetry/telegraf-defender/internal/sim"
)

// graphScenario points a plugin with api = "graph" at the simulator.
func (s *scenario) graphPlugin(configure func(*MicrosoftDefender)) *MicrosoftDefender {
	s.t.Helper()
	return s.plugin(func(m *MicrosoftDefender) {
		m.API = "graph"
		m.EndpointURL = s.server.URL + graphAlertsPath
		m.LoginEndpoint = s.server.URL
		m.Scopes = []string{"https://graph.microsoft.com/.default"}
		if configure != nil {
			configure(m)
		}
	})
}

func TestGraphRequests(t *testing.T) {
	s := newScenario(t, simulator.Config{Seed: 3, Rate: 10, History: time.Hour})
	p := s.graphPlugin(func(m *MicrosoftDefender) {
		m.ServiceSources = []string{"microsoftDefenderForEndpoint", "microsoftDefenderForOffice365"}
		m.Severities = []string{"high", "medium"}
		m.PageSize = 10
		m.InitialLookback = config.Duration(30 * time.Minute)
	})
	s.poll(p)

	tokens := requestsTo(s.sim, "/token")
	require.Len(t, tokens, 1)
	require.Equal(t, "/"+testTenant+"/oauth2/v2.0/token", tokens[0].URL.Path)
	require.Equal(t, url.Values{
		"grant_type":    {"client_credentials"},
		"client_id":     {testClientID},
		"client_secret": {testClientSecret},
		"scope":         {"https://graph.microsoft.com/.default"},
	}, tokens[0].PostForm)

	pages := requestsTo(s.sim, graphAlertsPath)
	require.Greater(t, len(pages), 1, "more than one page of 10")
	require.Equal(t, url.Values{
		"$filter": {"lastUpdateDateTime ge 2020-09-30T14:29:00.0000000Z and lastUpdateDateTime lt 2020-09-30T14:59:00.0000000Z" +
			" and (serviceSource eq 'microsoftDefenderForEndpoint' or serviceSource eq 'microsoftDefenderForOffice365')" +
			" and (severity eq 'high' or severity eq 'medium')"},
		"$orderby": {"lastUpdateDateTime asc"},
		"$count":   {"true"},
		"$top":     {"10"},
	}, pages[0].URL.Query())
	require.Equal(t, "include-unknown-enum-members", pages[0].Header.Get("Prefer"))
	require.Regexp(t, `^Bearer simtok-`, pages[0].Header.Get("Authorization"))
	require.Equal(t, "10", pages[1].URL.Query().Get("$skip"), "the second page follows @odata.nextLink")
}

// A poll that spends max_alerts_per_gather in the middle of a page stops
// there, without an error, and the next polls go on: every alert once.
func TestGraphBudgetEndsPollsMidPage(t *testing.T) {
	s := newScenario(t, simulator.Config{})
	alerts := make([]simulator.GraphAlert, 0, 300)
	for i := range 300 {
		at := s.clock.Add(-time.Hour + time.Duration(i)*10*time.Second).Format(time.RFC3339Nano)
		alerts = append(alerts, simulator.GraphAlert{
			ID: fmt.Sprintf("da%03d", i), Status: "new", Severity: "high", Category: "Malware",
			ServiceSource: "microsoftDefenderForEndpoint", CreatedDateTime: at, LastUpdateDateTime: at,
		})
	}
	require.NoError(t, s.sim.AddGraph(alerts...))
	p := s.graphPlugin(func(m *MicrosoftDefender) {
		m.PageSize = 1000
		m.MaxAlertsPerGather = 70
		m.InitialLookback = config.Duration(2 * time.Hour)
	})

	first := pollFields(t, s.poll(p))
	require.Equal(t, int64(70), first["alerts_emitted"])
	require.Equal(t, true, first["backlog"])
	s.run(p, 6*time.Minute)
	require.Len(t, s.emitted, 300)
	for version, n := range s.emitted {
		require.Equal(t, 1, n, version)
	}
}

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
	require.Equal(t, fixedNow.Add(-time.Minute), plugin.cursor.watermark)
}

// Graph's throttling, 429 with Retry-After, is honoured like the SIEM API's.
func TestGraphThrottlingIsHonoured(t *testing.T) {
	s := newScenario(t, simulator.Config{Seed: 3, Rate: 10, History: time.Hour, Faults: simulator.FaultConfig{RetryAfter: 7 * time.Second}})
	var waits []time.Duration
	p := s.graphPlugin(func(m *MicrosoftDefender) {
		m.InitialLookback = config.Duration(30 * time.Minute)
		m.sleep = func(ctx context.Context, d time.Duration) error {
			waits = append(waits, d)
			s.clock = s.clock.Add(d)
			return ctx.Err()
		}
	})
	s.sim.Inject(simulator.FaultThrottle, 2)
	s.poll(p)
	require.Equal(t, []time.Duration{7 * time.Second, 7 * time.Second}, waits)
	require.Len(t, requestsTo(s.sim, graphAlertsPath), 3)
	require.Len(t, s.logger.Warnings(), 2)
	require.Contains(t, s.logger.Warnings()[0], `Graph API at 127.0.0.1`)
	require.Contains(t, s.logger.Warnings()[0], `W! [] Retry 1 of 3 in 7s (as Retry-After asks): Graph API at 127.0.0.1`)
	require.Contains(t, s.logger.Warnings()[0], `answered 429 Too Many Requests (throttled): `+
		`body "{\"error\":{\"code\":\"TooManyRequests\",\"message\":\"Rate limit is exceeded.\"}}"`)
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

// requireGraphVersionsOnce checks that every alert version a poll could
// have read was emitted once, and that nothing else was emitted but
// versions from start on; it returns how many versions the window held and
// how many of them could be read. A version must be read when a poll that
// read its window to the end (no backlog) ran while it was the alert's
// current one, after it became visible: versions replaced while nobody
// polled were never there to read, for any poller, and one replaced while
// a poll ran, or while polls worked off a backlog, may have gone before its
// page was asked for.
func (s *scenario) requireGraphVersionsOnce(p *MicrosoftDefender, start time.Time) (inWindow, readable int) {
	s.t.Helper()
	c := s.checkGraphVersions(p, start)
	require.Empty(s.t, c.missing, "versions never emitted")
	require.Empty(s.t, c.duplicated, "versions emitted twice")
	require.Empty(s.t, c.unexpected)
	return c.inWindow, c.readable
}

// graphCheck is what checkGraphVersions found.
type graphCheck struct {
	missing, duplicated, unexpected []string
	inWindow, readable              int
}

// checkGraphVersions compares what was emitted with what was readable;
// see requireGraphVersionsOnce.
func (s *scenario) checkGraphVersions(p *MicrosoftDefender, start time.Time) graphCheck {
	s.t.Helper()
	readUpTo := s.clock.Add(-pollInterval - time.Duration(p.Delay))
	all := s.sim.AllGraph()
	nextUpdate := make(map[string]time.Time) // id@lastUpdate -> the next version's lastUpdate
	previous := make(map[string]string)      // alert id -> its previous version's key
	want := make(map[string]bool)
	allowed := make(map[string]bool)
	resolved := 0
	keys := make([]string, len(all))
	for i := range all {
		a := &all[i]
		lastUpdate, err := time.Parse(time.RFC3339Nano, a.LastUpdateDateTime)
		require.NoError(s.t, err)
		keys[i] = a.ID + "@" + lastUpdate.UTC().Format(time.RFC3339Nano)
		if prev, ok := previous[a.ID]; ok {
			nextUpdate[prev] = lastUpdate
		}
		previous[a.ID] = keys[i]
		if a.Status == "resolved" {
			resolved++
		}
	}
	require.Positive(s.t, resolved, "some alerts were resolved after they were created")
	for i := range all {
		a := &all[i]
		lastUpdate, err := time.Parse(time.RFC3339Nano, a.LastUpdateDateTime)
		require.NoError(s.t, err)
		if lastUpdate.Before(start) || lastUpdate.After(readUpTo) {
			continue
		}
		allowed[keys[i]] = true
		// A poll reads lastUpdateDateTime below its start minus delay.
		readable := lastUpdate.Add(time.Duration(p.Delay) + tick)
		if a.VisibleAt.After(readable) {
			readable = a.VisibleAt
		}
		replaced, isReplaced := nextUpdate[keys[i]]
		for j, at := range s.pollTimes {
			if !s.pollBehind[j] && !at.Before(readable) && (!isReplaced || s.pollEnds[j].Before(replaced)) &&
				lastUpdate.Before(readUpTo.Add(-4*time.Minute)) {
				want[keys[i]] = true
				break
			}
		}
	}
	require.NotEmpty(s.t, want)

	emitted := make(map[string]int)
	for id := range s.emitted {
		emitted[id] = s.emitted[id]
	}
	var missing, duplicated, unexpected []string
	for id := range want {
		if emitted[id] == 0 {
			missing = append(missing, id)
		}
	}
	for id, n := range emitted {
		if !allowed[id] {
			unexpected = append(unexpected, id)
		}
		if n > 1 {
			duplicated = append(duplicated, id)
		}
	}
	return graphCheck{missing: missing, duplicated: duplicated, unexpected: unexpected, inWindow: len(allowed), readable: len(want)}
}
