package sim

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func incidentQuery(server *httptest.Server, options string) string {
	return server.URL + "/v1.0/security/incidents?$filter=" + url.QueryEscape("lastUpdateDateTime ge 2026-11-24T11:00:00Z") + options
}

// Incidents are paged as alerts are, at most 50 a page; with
// $expand=alerts each carries its alerts' current versions, and a page of
// more than ExpandFailsAbove answers 500.
func TestGraphIncidents(t *testing.T) {
	sim, server := newTestServer(t, Config{Graph: GraphBehaviour{ExpandFailsAbove: 3}})
	for i := range 10 {
		updated := simNow.Add(time.Duration(i-10) * time.Minute).Format(TimeLayout)
		require.NoError(t, sim.AddGraph(GraphAlert{ID: fmt.Sprintf("a%d", i), Status: "new", LastUpdateDateTime: updated}))
		require.NoError(t, sim.AddIncidents(GraphIncident{ID: fmt.Sprintf("i%d", i), LastUpdateDateTime: updated,
			AlertIDs: []string{fmt.Sprintf("a%d", i)}}))
	}
	page := graphGet(t, server, incidentQuery(server, "&$top=51"))
	require.Equal(t, http.StatusBadRequest, page.status)
	require.Equal(t, "The limit of '50' for Top query has been exceeded. The value from the incoming request is '51'.", page.err)

	first := graphGet(t, server, incidentQuery(server, "&$top=4"))
	require.Equal(t, []string{"i9", "i8", "i7", "i6"}, first.ids)
	require.Equal(t, []string{"i5", "i4", "i3", "i2"}, graphGet(t, server, first.next).ids)

	page = graphGet(t, server, incidentQuery(server, "&$top=4&$expand=alerts"))
	require.Equal(t, http.StatusInternalServerError, page.status)
	require.Equal(t, "An error has occurred while processing the request.", page.err)
	require.Equal(t, http.StatusBadRequest, graphGet(t, server, incidentQuery(server, "&$expand=comments")).status)

	require.JSONEq(t, `[{"id":"a9","status":"new"}]`, expandedAlerts(t, server, incidentQuery(server, "&$top=1&$expand=alerts")))
	require.Equal(t, http.StatusBadRequest, graphGet(t, server, graphQuery(server, "&$expand=alerts")).status, "alerts_v2 expands nothing")
}

// expandedAlerts is the id and status of each alert of the page's first
// incident.
func expandedAlerts(t *testing.T, server *httptest.Server, link string) string {
	t.Helper()
	status, body := token(t, server, "/t/oauth2/v2.0/token", url.Values{
		"grant_type": {"client_credentials"}, "client_id": {"c"}, "client_secret": {"s"}, "scope": {"https://graph.microsoft.com/.default"},
	})
	require.Equal(t, http.StatusOK, status)
	req, err := http.NewRequest(http.MethodGet, link, nil)
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+body["access_token"].(string))
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	var page struct {
		Value []struct {
			Alerts []struct {
				ID     string `json:"id"`
				Status string `json:"status"`
			} `json:"alerts"`
		} `json:"value"`
	}
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&page))
	out, err := json.Marshal(page.Value[0].Alerts)
	require.NoError(t, err)
	return string(out)
}

// The generated incidents are made of the generated alerts: each is
// created with its alert, some are taken in hand and resolved, some are
// redirected into the previous one, which then holds both alerts.
func TestGeneratedIncidents(t *testing.T) {
	sim, _ := newTestServer(t, Config{Seed: 5, Rate: 2, History: 6 * time.Hour})
	alerts := make(map[string]bool)
	for _, a := range sim.AllGraph() {
		alerts[a.ID] = true
	}
	statuses := make(map[string]int)
	latest := make(map[string]GraphIncident)
	for _, in := range sim.AllIncidents() {
		statuses[in.Status]++
		latest[in.ID] = in
		for _, id := range in.AlertIDs {
			require.True(t, alerts[id], "incident %s holds an alert the simulator does not have: %s", in.ID, id)
		}
	}
	for _, status := range []string{"active", "inProgress", "resolved", "redirected"} {
		require.Positive(t, statuses[status], status)
	}
	for _, in := range latest {
		if in.Status != "redirected" {
			continue
		}
		target := latest[*in.RedirectIncidentID]
		require.Subset(t, target.AlertIDs, in.AlertIDs, "the target holds the redirected incident's alert")
		require.Equal(t, "Multi-stage incident on one endpoint", target.DisplayName)
		require.False(t, slices.Equal(target.AlertIDs, in.AlertIDs))
	}
}
