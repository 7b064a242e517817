package scenario_test

import (
	"fmt"
	"net/url"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/influxdata/telegraf/config"

	simulator "github.com/sectelemetry/telegraf-defender/internal/sim"
)

// tick is the resolution of the services' times, 100 ns.
const tick = 100 * time.Nanosecond

func TestGraphRequests(t *testing.T) {
	bubble(t, func(t *testing.T) {
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
			"scope":         {"https://graph.microsoft.com/.default openid offline_access profile"},
		}, tokens[0].PostForm)

		pages := requestsTo(s.sim, graphAlertsPath)
		require.Greater(t, len(pages), 1, "more than one page of 10")
		require.Equal(t, url.Values{
			"$filter": {"lastUpdateDateTime ge 2020-09-30T14:30:00.0000000Z and lastUpdateDateTime lt 2020-09-30T15:00:00.0000000Z" +
				" and (serviceSource eq 'microsoftDefenderForEndpoint' or serviceSource eq 'microsoftDefenderForOffice365')" +
				" and (severity eq 'high' or severity eq 'medium')"},
			"$top": {"10"},
		}, pages[0].URL.Query())
		require.Equal(t, "include-unknown-enum-members", pages[0].Header.Get("Prefer"))
		require.Regexp(t, `^Bearer simtok-`, pages[0].Header.Get("Authorization"))
		require.Equal(t, "lastUpdateDateTime ge 2020-09-30T14:30:00.0000000Z and lastUpdateDateTime lt 2020-09-30T14:45:00.0000000Z"+
			" and (serviceSource eq 'microsoftDefenderForEndpoint' or serviceSource eq 'microsoftDefenderForOffice365')"+
			" and (severity eq 'high' or severity eq 'medium')", pages[1].URL.Query().Get("$filter"),
			"a full page with a next link: its part split in time, no next link followed")
	})
}

// A poll that spends max_alerts_per_gather in the middle of a page stops
// there, without an error, and the next polls go on: every alert once.
func TestGraphBudgetEndsPollsMidPage(t *testing.T) {
	bubble(t, func(t *testing.T) {
		s := newScenario(t, simulator.Config{})
		alerts := make([]simulator.GraphAlert, 0, 300)
		for i := range 300 {
			at := time.Now().Add(-time.Hour + time.Duration(i)*10*time.Second).Format(time.RFC3339Nano)
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
	})
}

// Graph's throttling, 429 with Retry-After, is honoured like the SIEM
// API's: each retry comes as long after the 429 as Retry-After asked.
func TestGraphThrottlingIsHonoured(t *testing.T) {
	bubble(t, func(t *testing.T) {
		s := newScenario(t, simulator.Config{Seed: 3, Rate: 10, History: time.Hour, Faults: simulator.FaultConfig{RetryAfter: 7 * time.Second}})
		p := s.graphPlugin(func(m *MicrosoftDefender) {
			m.InitialLookback = config.Duration(30 * time.Minute)
		})
		s.sim.Inject(simulator.FaultThrottle, 2)
		s.poll(p)
		require.Equal(t, []time.Time{fixedNow, fixedNow.Add(7 * time.Second), fixedNow.Add(14 * time.Second)}, s.arrivalsTo(graphAlertsPath))
		require.Len(t, requestsTo(s.sim, graphAlertsPath), 3)
		require.Len(t, s.logger.Warnings(), 2)
		require.Contains(t, s.logger.Warnings()[0], `Graph API at 127.0.0.1`)
		require.Contains(t, s.logger.Warnings()[0], `W! [] Retry 1 of 3 in 7s (as Retry-After asks): Graph API at 127.0.0.1`)
		require.Contains(t, s.logger.Warnings()[0], `answered 429 Too Many Requests (throttled): `+
			`body "{\"error\":{\"code\":\"TooManyRequests\",\"message\":\"Rate limit is exceeded.\"}}"`)
	})
}

// requireGraphVersionsOnce checks that every alert version a poll could
// have read was emitted once, and that nothing else was emitted but
// versions from start on; it returns how many versions could be read. A version must be read when a poll that
// read its window to the end (no backlog) ran while it was the alert's
// current one, after it became visible: versions replaced while nobody
// polled were never there to read, for any poller, and one replaced while
// a poll ran, or while polls worked off a backlog, may have gone before its
// page was asked for.
func (s *scenario) requireGraphVersionsOnce(p *MicrosoftDefender, start time.Time) (readable int) {
	s.t.Helper()
	c := s.checkGraphVersions(p, start)
	require.Empty(s.t, c.missing, "versions never emitted")
	require.Empty(s.t, c.duplicated, "versions emitted twice")
	require.Empty(s.t, c.unexpected)
	return c.readable
}

// graphCheck is what checkGraphVersions found.
type graphCheck struct {
	missing, duplicated, unexpected []string
	inWindow, readable              int
}

// graphVersion is a version of an alert or an incident, as the checks read it.
type graphVersion struct {
	ID, LastUpdateDateTime, Status string
	VisibleAt                      time.Time
}

// graphVersions are the versions of what p reads, alerts or incidents,
// that the simulator held up to now, oldest first.
func (s *scenario) graphVersions(p *MicrosoftDefender) []graphVersion {
	var out []graphVersion
	if p.API == "graph_incidents" {
		for _, in := range s.sim.AllIncidents() {
			out = append(out, graphVersion{in.ID, in.LastUpdateDateTime, in.Status, in.VisibleAt})
		}
		return out
	}
	for _, a := range s.sim.AllGraph() {
		out = append(out, graphVersion{a.ID, a.LastUpdateDateTime, a.Status, a.VisibleAt})
	}
	return out
}

// checkGraphVersions compares what was emitted with what was readable;
// see requireGraphVersionsOnce.
func (s *scenario) checkGraphVersions(p *MicrosoftDefender, start time.Time) graphCheck {
	s.t.Helper()
	readUpTo := time.Now().Add(-pollInterval - time.Duration(p.Delay))
	all := s.graphVersions(p)
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
	require.Positive(s.t, resolved, "some were resolved after they were created")
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

	var missing, duplicated, unexpected []string
	for id := range want {
		if s.emitted[id] == 0 {
			missing = append(missing, id)
		}
	}
	for id, n := range s.emitted {
		if !allowed[id] {
			unexpected = append(unexpected, id)
		}
		if n > 1 {
			duplicated = append(duplicated, id)
		}
	}
	return graphCheck{missing: missing, duplicated: duplicated, unexpected: unexpected, inWindow: len(allowed), readable: len(want)}
}
