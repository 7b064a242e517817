package sim

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

var simNow = time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)

func newTestServer(t *testing.T, cfg Config) (*Server, *httptest.Server) {
	t.Helper()
	cfg.TenantID, cfg.ClientID, cfg.ClientSecret = "t", "c", "s"
	if cfg.Now == nil {
		cfg.Now = func() time.Time { return simNow }
	}
	sim := New(cfg)
	server := httptest.NewServer(sim.Handler())
	t.Cleanup(server.Close)
	return sim, server
}

func token(t *testing.T, server *httptest.Server, path string, form url.Values) (int, map[string]any) {
	t.Helper()
	resp, err := http.PostForm(server.URL+path, form)
	require.NoError(t, err)
	defer resp.Body.Close()
	var body map[string]any
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&body))
	return resp.StatusCode, body
}

func bearer(t *testing.T, server *httptest.Server) string {
	t.Helper()
	status, body := token(t, server, "/t/oauth2/token", url.Values{
		"grant_type": {"client_credentials"}, "client_id": {"c"}, "client_secret": {"s"}, "resource": {"https://graph.windows.net"},
	})
	require.Equal(t, http.StatusOK, status)
	return body["access_token"].(string)
}

func alerts(t *testing.T, server *httptest.Server, tok, query string) (int, []Detection) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, server.URL+"/api/alerts?"+query, nil)
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return resp.StatusCode, nil
	}
	var out []Detection
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&out))
	return resp.StatusCode, out
}

func ids(ds []Detection) []string {
	out := make([]string, 0, len(ds))
	for i := range ds {
		out = append(out, ds[i].FullID)
	}
	return out
}

func at(minutesBeforeNow int) string {
	return simNow.Add(-time.Duration(minutesBeforeNow) * time.Minute).Format(TimeLayout)
}

func TestTokenEndpointForms(t *testing.T) {
	_, server := newTestServer(t, Config{})
	status, body := token(t, server, "/t/oauth2/token", url.Values{
		"grant_type": {"client_credentials"}, "client_id": {"c"}, "client_secret": {"s"}, "resource": {"https://graph.windows.net"},
	})
	require.Equal(t, http.StatusOK, status)
	require.Equal(t, "3600", body["expires_in"], "v1 sends numbers as strings")
	require.Equal(t, "https://graph.windows.net", body["resource"])

	status, body = token(t, server, "/t/oauth2/v2.0/token", url.Values{
		"grant_type": {"client_credentials"}, "client_id": {"c"}, "client_secret": {"s"}, "scope": {"https://graph.windows.net/.default"},
	})
	require.Equal(t, http.StatusOK, status)
	require.InDelta(t, 3600, body["expires_in"], 0, "v2 sends numbers")

	status, body = token(t, server, "/t/oauth2/token", url.Values{
		"grant_type": {"client_credentials"}, "client_id": {"c"}, "client_secret": {"s"},
	})
	require.Equal(t, http.StatusBadRequest, status)
	require.Equal(t, "invalid_request", body["error"])
	require.True(t, strings.HasPrefix(body["error_description"].(string), "AADSTS900144: The request body must contain the following parameter: 'resource'."))
}

func TestAlertsRequireAValidTokenForTheSIEMAudience(t *testing.T) {
	_, server := newTestServer(t, Config{})
	status, _ := alerts(t, server, "made-up", "")
	require.Equal(t, http.StatusUnauthorized, status)

	_, body := token(t, server, "/t/oauth2/v2.0/token", url.Values{
		"grant_type": {"client_credentials"}, "client_id": {"c"}, "client_secret": {"s"}, "scope": {"https://graph.microsoft.com/.default"},
	})
	status, _ = alerts(t, server, body["access_token"].(string), "")
	require.Equal(t, http.StatusUnauthorized, status, "a Graph token is not a SIEM token")
}

func TestExpiredTokensAreRefused(t *testing.T) {
	now := simNow
	_, server := newTestServer(t, Config{TokenLifetime: time.Minute, Now: func() time.Time { return now }})
	tok := bearer(t, server)
	status, _ := alerts(t, server, tok, "")
	require.Equal(t, http.StatusOK, status)
	now = now.Add(time.Minute)
	status, _ = alerts(t, server, tok, "")
	require.Equal(t, http.StatusUnauthorized, status)
}

func TestAlertsQueryParameters(t *testing.T) {
	sim, server := newTestServer(t, Config{})
	d := func(id string, minutesAgo int, group, deviceTags, cloudTags string) Detection {
		return Detection{FullID: id, LastProcessedTimeUtc: at(minutesAgo), MachineGroup: group,
			DeviceCreatedMachineTags: deviceTags, CloudCreatedMachineTags: cloudTags}
	}
	require.NoError(t, sim.Add(
		d("old", 180, "UK", "", ""),
		d("a", 100, "UK", "VIP", ""),
		d("b", 50, "France", "", "PCI,Critical"),
		d("c", 20, "Germany", "", ""),
		d("d", 10, "UK", "VIP", "Critical"),
	))
	late := d("late", 5, "UK", "", "")
	late.VisibleAt = simNow.Add(time.Minute)
	require.NoError(t, sim.Add(late))
	tok := bearer(t, server)

	tests := []struct {
		query string
		want  []string
	}{
		{"", []string{"a", "b", "c", "d"}}, // the last two hours
		{"sinceTimeUtc=" + at(60), []string{"b", "c", "d"}},
		{"sinceTimeUtc=" + at(60) + "&untilTimeUtc=" + at(20), []string{"b", "c"}}, // both bounds inclusive
		{"SinceTimeUtc=" + url.QueryEscape(`"`+simNow.Add(-time.Hour).Format("2006-01-02 15:04:05")+`"`), []string{"b", "c", "d"}},
		{"sinceTimeUtc=" + simNow.Add(-time.Hour).Format("2006-01-02T15:04:05.000"), []string{"b", "c", "d"}},
		{"ago=PT30M", []string{"c", "d"}},
		{"ago=P1DT1H", []string{"old", "a", "b", "c", "d"}},
		{"limit=2", []string{"c", "d"}}, // the most recent
		{"sinceTimeUtc=" + at(200) + "&limit=3", []string{"b", "c", "d"}},
		{"machinegroups=UK&machinegroups=France", []string{"a", "b", "d"}},
		{"DeviceCreatedMachineTags=VIP", []string{"a", "d"}},
		{"CloudCreatedMachineTags=critical", []string{"b", "d"}},
	}
	for _, tt := range tests {
		t.Run(tt.query, func(t *testing.T) {
			status, got := alerts(t, server, tok, tt.query)
			require.Equal(t, http.StatusOK, status)
			require.Equal(t, tt.want, ids(got))
		})
	}

	for _, bad := range []string{"sinceTimeUtc=yesterday", "limit=-1", "limit=x", "ago=10M"} {
		status, _ := alerts(t, server, tok, bad)
		require.Equal(t, http.StatusBadRequest, status, bad)
	}
}

func TestGeneratedStreamIsSteadyAndReproducible(t *testing.T) {
	now := simNow
	cfg := Config{Seed: 7, Rate: 10, History: time.Hour, MaxLag: 5 * time.Minute, LagFraction: 0.3,
		Now: func() time.Time { return now }}
	sim, server := newTestServer(t, cfg)
	twin, _ := newTestServer(t, cfg)

	all := sim.All()
	require.Equal(t, ids(all), ids(twin.All()), "the same seed gives the same detections")
	events := map[string]bool{}
	severities, groups, lagged := map[string]bool{}, map[string]bool{}, 0
	for i := range all {
		d := &all[i]
		events[d.AlertID] = true
		severities[d.Severity] = true
		groups[d.MachineGroup] = true
		lpt, err := time.Parse(time.RFC3339Nano, d.LastProcessedTimeUtc)
		require.NoError(t, err)
		if d.VisibleAt.After(lpt) {
			lagged++
		}
	}
	require.Len(t, events, 600, "ten events a minute for an hour")
	require.Len(t, severities, 4)
	require.Len(t, groups, 6)
	require.Positive(t, lagged)

	// Detections still lagging are not served yet; an hour on, all are.
	_, served := alerts(t, server, bearer(t, server), "ago=PT2H")
	require.Less(t, len(served), len(all))
	now = now.Add(time.Hour)
	_, served = alerts(t, server, bearer(t, server), "sinceTimeUtc="+simNow.Add(-2*time.Hour).Format(TimeLayout)+"&untilTimeUtc="+simNow.Format(TimeLayout))
	require.Equal(t, ids(all), ids(served))
}

func TestRestartedSimulatorServesTheSameStream(t *testing.T) {
	cfg := Config{Seed: 3, Rate: 7, History: time.Hour, BurstEvery: 10 * time.Minute, BurstSize: 5}
	first := New(withClock(cfg, simNow))
	restartedCfg := cfg
	restartedCfg.History = 90 * time.Minute
	restarted := New(withClock(restartedCfg, simNow.Add(30*time.Minute)))

	// Both cover [simNow - 1h, simNow]; the restarted one also covers more.
	var got []string
	want := make([]string, 0, 1024)
	for _, d := range first.All() {
		want = append(want, d.FullID+"@"+d.LastProcessedTimeUtc)
	}
	for _, d := range restarted.All() {
		if lpt, err := time.Parse(time.RFC3339Nano, d.LastProcessedTimeUtc); err == nil && !lpt.After(simNow) && lpt.After(simNow.Add(-time.Hour)) {
			got = append(got, d.FullID+"@"+d.LastProcessedTimeUtc)
		}
	}
	require.Equal(t, want, got)
}

func TestBurstsShareOneTimestamp(t *testing.T) {
	sim := New(withClock(Config{Seed: 1, History: 25 * time.Minute, BurstEvery: 10 * time.Minute, BurstSize: 40}, simNow))
	perInstant := map[string]int{}
	for _, d := range sim.All() {
		perInstant[d.LastProcessedTimeUtc]++
	}
	require.Equal(t, map[string]int{at(20): 40, at(10): 40, at(0): 40}, perInstant)
}

func withClock(cfg Config, now time.Time) Config {
	cfg.TenantID, cfg.ClientID, cfg.ClientSecret = "t", "c", "s"
	cfg.Now = func() time.Time { return now }
	return cfg
}
