package scenario_test

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/influxdata/telegraf"
	"github.com/influxdata/telegraf/config"
	"github.com/influxdata/telegraf/metric"
	"github.com/influxdata/telegraf/testutil"

	simulator "github.com/sectelemetry/telegraf-defender/internal/sim"
)

// readIncidents makes a plugin of playGraphScenario read incidents.
func readIncidents(m *MicrosoftDefender) {
	m.API, m.EndpointURL, m.PageSize = "graph_incidents", simURL+graphIncidentsPath, 50
}

// The Graph scenario on incidents: created, taken in hand, resolved and
// redirected all the while, some visible late, a crash, an outage whose
// backlog passes every cap, and pages of more than 30 incidents that fail
// with $expand=alerts. Every version that was readable is emitted once, no
// request asks for more than 50, and each poll that read a window without
// $expand says so once.
func TestIncidentsEveryVersionOnce(t *testing.T) {
	bubble(t, func(t *testing.T) {
		s, p, start := playGraphScenario(t, simulator.GraphBehaviour{ExpandFailsAbove: 30}, readIncidents)
		readable := s.requireGraphVersionsOnce(p, start)
		require.Greater(t, readable, 1000, "versions well past every cap")
		redirected := 0
		for _, in := range s.sim.AllIncidents() {
			lastUpdate, err := time.Parse(time.RFC3339Nano, in.LastUpdateDateTime)
			require.NoError(t, err)
			if in.Status == "redirected" && s.emitted[in.ID+"@"+lastUpdate.UTC().Format(time.RFC3339Nano)] == 1 {
				redirected++
			}
		}
		require.Positive(t, redirected, "redirects emitted")

		last := pollFields(t, s.poll(p))
		require.Equal(t, false, last["backlog"])
		require.LessOrEqual(t, last["lag_seconds"], (2 * time.Minute).Seconds())

		expanded, plain := 0, 0
		for _, r := range requestsTo(s.sim, graphIncidentsPath) {
			require.Equal(t, "50", r.URL.Query().Get("$top"))
			if r.URL.Query().Get("$expand") == "alerts" {
				expanded++
			} else {
				plain++
			}
		}
		require.Positive(t, expanded)
		require.Positive(t, plain, "windows read again without $expand")
		warned := 0
		for _, w := range s.logger.Warnings() {
			if strings.Contains(w, "Reading incidents with $expand=alerts failed") {
				warned++
			}
		}
		require.Positive(t, warned)
		require.LessOrEqual(t, warned, s.polls, "one warning a poll at most")
	})
}

// An incident taken in hand, another redirected into it, which then holds
// both alerts, and its resolution: each version is one defender_incident,
// with its alerts, and the counts follow the versions each poll emitted.
func TestIncidentRedirect(t *testing.T) {
	bubble(t, func(t *testing.T) {
		s := newScenario(t, simulator.Config{})
		at := func(minutes int) string {
			return fixedNow.Add(time.Duration(minutes) * time.Minute).Format(simulator.TimeLayout)
		}
		ptr := func(s string) *string { return &s }
		alerts := []simulator.GraphAlert{
			{ID: "a1", IncidentID: "1", Status: "new", Severity: "high", CreatedDateTime: at(1), LastUpdateDateTime: at(1)},
			{ID: "a2", IncidentID: "2", Status: "new", Severity: "medium", CreatedDateTime: at(2), LastUpdateDateTime: at(2)},
		}
		require.NoError(t, s.sim.AddGraph(alerts...))
		one := simulator.GraphIncident{ID: "1", Status: "active", Severity: "high", DisplayName: "Ransomware on one endpoint",
			IncidentWebURL: "https://security.microsoft.com/incidents/1", CreatedDateTime: at(1), LastUpdateDateTime: at(1), AlertIDs: []string{"a1"}}
		two := simulator.GraphIncident{ID: "2", Status: "active", Severity: "medium", DisplayName: "Suspicious PowerShell",
			CreatedDateTime: at(2), LastUpdateDateTime: at(2), AlertIDs: []string{"a2"}}
		taken := one
		taken.Status, taken.AssignedTo, taken.LastUpdateDateTime = "inProgress", ptr("secops@contoso.com"), at(4)
		redirected := two
		redirected.Status, redirected.RedirectIncidentID, redirected.LastUpdateDateTime = "redirected", ptr("1"), at(6)
		merged := taken
		merged.DisplayName, merged.AlertIDs, merged.LastUpdateDateTime = "Multi-stage incident", []string{"a1", "a2"}, at(6)
		resolved := merged
		resolved.Status, resolved.Classification, resolved.Determination, resolved.LastUpdateDateTime =
			"resolved", "truePositive", "ransomware", at(9)
		require.NoError(t, s.sim.AddIncidents(one, two, taken, redirected, merged, resolved))

		p := s.graphPlugin(func(m *MicrosoftDefender) {
			readIncidents(m)
			m.Delay = 0
			m.InitialLookback = config.Duration(time.Minute)
		})
		var got []telegraf.Metric
		for range 12 {
			for _, m := range s.poll(p).GetTelegrafMetrics() {
				if m.Name() != measurementPoll {
					got = append(got, m)
				}
			}
			time.Sleep(pollInterval)
		}
		incident := func(tags map[string]string, fields map[string]any, created int) telegraf.Metric {
			fields["created_date_time"] = at(created)[:19] + "Z"
			return metric.New("defender_incident", tags, fields, fixedNow.Add(time.Duration(created)*time.Minute))
		}
		count := func(severity, status string, at int) telegraf.Metric {
			return metric.New("defender_incident_count", map[string]string{"severity": severity, "status": status},
				map[string]any{"count": int64(1)}, fixedNow.Add(time.Duration(at)*time.Minute))
		}
		url := "https://security.microsoft.com/incidents/1"
		testutil.RequireMetricsEqual(t, []telegraf.Metric{
			incident(map[string]string{"severity": "high", "status": "active"}, map[string]any{"incident_id": "1", "alert_count": int64(1),
				"alert_ids": "a1", "display_name": "Ransomware on one endpoint", "incident_web_url": url, "last_update_date_time": at(1)[:19] + "Z"}, 1),
			count("high", "active", 2),
			incident(map[string]string{"severity": "medium", "status": "active"}, map[string]any{"incident_id": "2", "alert_count": int64(1),
				"alert_ids": "a2", "display_name": "Suspicious PowerShell", "last_update_date_time": at(2)[:19] + "Z"}, 2),
			count("medium", "active", 3),
			incident(map[string]string{"severity": "high", "status": "inProgress"}, map[string]any{"incident_id": "1", "alert_count": int64(1),
				"alert_ids": "a1", "display_name": "Ransomware on one endpoint", "incident_web_url": url,
				"assigned_to": "secops@contoso.com", "last_update_date_time": at(4)[:19] + "Z"}, 1),
			count("high", "inProgress", 5),
			incident(map[string]string{"severity": "high", "status": "inProgress"}, map[string]any{"incident_id": "1", "alert_count": int64(2),
				"alert_ids": "a1,a2", "display_name": "Multi-stage incident", "incident_web_url": url,
				"assigned_to": "secops@contoso.com", "last_update_date_time": at(6)[:19] + "Z"}, 1),
			incident(map[string]string{"severity": "medium", "status": "redirected"}, map[string]any{"incident_id": "2", "alert_count": int64(1),
				"alert_ids": "a2", "display_name": "Suspicious PowerShell", "redirect_incident_id": "1",
				"last_update_date_time": at(6)[:19] + "Z"}, 2),
			count("high", "inProgress", 7),
			count("medium", "redirected", 7),
			incident(map[string]string{"severity": "high", "status": "resolved", "classification": "truePositive", "determination": "ransomware"},
				map[string]any{"incident_id": "1", "alert_count": int64(2), "alert_ids": "a1,a2", "display_name": "Multi-stage incident",
					"incident_web_url": url, "assigned_to": "secops@contoso.com", "last_update_date_time": at(9)[:19] + "Z"}, 1),
			count("high", "resolved", 10),
		}, got, testutil.IgnoreTime(), testutil.SortMetrics())
		// Each version a point of its own, in the second of its incident's creation.
		seen := make(map[time.Time]bool)
		for _, m := range got {
			if m.Name() == "defender_incident" {
				require.False(t, seen[m.Time()], "two versions at one point")
				seen[m.Time()] = true
				id, _ := m.GetField("incident_id")
				require.Equal(t, fixedNow.Add(map[string]time.Duration{"1": time.Minute, "2": 2 * time.Minute}[id.(string)]),
					m.Time().Truncate(time.Second))
			}
		}
		p.Stop()
	})
}
