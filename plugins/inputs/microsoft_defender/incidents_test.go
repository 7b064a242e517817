package microsoft_defender

import (
	"fmt"
	"maps"
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

// incidentStub is a plugin with api = "graph_incidents" reading a stub that
// answers each request with answer(request), a status and a body.
func incidentStub(t *testing.T, answer func(r *http.Request) (int, string), configure ...func(*MicrosoftDefender)) (
	*MicrosoftDefender, *testutil.CaptureLogger, *[]string) {
	t.Helper()
	var requests []string
	server := stub(t, func(w http.ResponseWriter, r *http.Request) {
		requests = append(requests, r.URL.Query().Get("$expand")+" "+strings.Join(filtersOf([]string{r.URL.RequestURI()}), "")+
			" top="+r.URL.Query().Get("$top"))
		status, body := answer(r)
		w.WriteHeader(status)
		respond(t, w, []byte(body))
	})
	logger := &testutil.CaptureLogger{}
	plugin := withDefaults(&MicrosoftDefender{
		API:                   "graph_incidents",
		EndpointURL:           server.URL + graphIncidentsPath,
		AuthMethod:            methodAccessToken,
		AccessToken:           config.NewSecret([]byte(testAccessToken)),
		IncludeIncidentAlerts: true,
		Log:                   logger,
		now:                   func() time.Time { return fixedNow },
	})
	for _, c := range configure {
		c(plugin)
	}
	require.NoError(t, plugin.Init())
	return plugin, logger, &requests
}

// Every page with $expand=alerts answers 500: each chunk is read again
// without it, and the poll says so once; the next poll tries $expand again.
func TestIncidentsReadWithoutAlertsAfterA500(t *testing.T) {
	at := fixedNow.Add(-90 * time.Minute).Format(time.RFC3339Nano)
	plugin, logger, requests := incidentStub(t, func(r *http.Request) (int, string) {
		if r.URL.Query().Get("$expand") != "" {
			return http.StatusInternalServerError, `{"error":{"code":"InternalServerError","message":"An error occurred."}}`
		}
		if strings.Contains(r.URL.Query().Get("$filter"), "ge 2020-09-30T13:00:00") {
			return http.StatusOK, fmt.Sprintf(`{"value":[{"id":"7","severity":"High","status":"active","lastUpdateDateTime":%q,`+
				`"createdDateTime":%[1]q}]}`, at)
		}
		return http.StatusOK, `{"value":[]}`
	}, func(m *MicrosoftDefender) { m.MaxRetries = 0 })

	acc := gatherOK(t, plugin)
	require.Equal(t, []string{
		"alerts 13:00:00.0000000Z 14:00:00.0000000Z top=50", " 13:00:00.0000000Z 14:00:00.0000000Z top=50",
		"alerts 13:50:00.0000000Z 14:50:00.0000000Z top=50", " 13:50:00.0000000Z 14:50:00.0000000Z top=50",
		"alerts 14:40:00.0000000Z 15:00:00.0000000Z top=50", " 14:40:00.0000000Z 15:00:00.0000000Z top=50",
	}, *requests)
	host := strings.TrimSuffix(strings.TrimPrefix(plugin.EndpointURL, "http://"), graphIncidentsPath)
	require.Equal(t, []string{
		"W! [] Reading incidents with $expand=alerts failed, so those last updated from 2020-09-30T13:00:00Z to 2020-09-30T14:00:00Z " +
			"are read without it (alert_count and alert_ids left out; include_incident_alerts = false stops asking for them): " +
			"Graph API at " + host + " answered 500 Internal Server Error " +
			`(service error): body "{\"error\":{\"code\":\"InternalServerError\",\"message\":\"An error occurred.\"}}"`,
	}, logger.Warnings())
	testutil.RequireMetricsEqual(t, []telegraf.Metric{
		metric.New("defender_incident", map[string]string{"severity": "high", "status": "active"}, map[string]any{
			"incident_id": "7", "created_date_time": at, "last_update_date_time": at}, fixedNow.Add(-90*time.Minute).Add(210163403)),
		metric.New("defender_incident_count", map[string]string{"severity": "high", "status": "active"}, map[string]any{
			"count": int64(1)}, fixedNow.Add(334997605)),
	}, detectionMetrics(acc))
	poll := pollFields(t, acc)
	require.Equal(t, int64(3), poll["errors"])

	logger.Clear()
	*requests = nil
	plugin.now = func() time.Time { return fixedNow.Add(time.Minute) }
	gatherOK(t, plugin)
	require.Equal(t, []string{"alerts 14:50:00.0000000Z 15:01:00.0000000Z top=50", " 14:50:00.0000000Z 15:01:00.0000000Z top=50"}, *requests)
	require.Len(t, logger.Warnings(), 1)
}

// page_size above 50 is lowered to 50 with a warning: Graph refuses more.
func TestIncidentPageSizeIsAtMost50(t *testing.T) {
	plugin, logger, requests := incidentStub(t, func(*http.Request) (int, string) { return http.StatusOK, `{"value":[]}` },
		func(m *MicrosoftDefender) {
			m.PageSize, m.MaxWindow, m.IncludeIncidentAlerts = 1000, config.Duration(3*time.Hour), false
		})
	gatherOK(t, plugin)
	require.Equal(t, []string{" 13:00:00.0000000Z 15:00:00.0000000Z top=50"}, *requests)
	require.Equal(t, []string{"W! [] page_size 1000 is lowered to 50, the most incidents Graph sends on a page"}, logger.Warnings())
}

// The alerts of an incident give alert_count and alert_ids only when they
// are an array of objects; anything else is an invalid field, and null or
// no alerts leave both out: they are not guessed.
func TestIncidentAlertsAreNotGuessed(t *testing.T) {
	for _, tt := range []struct {
		name, alerts string
		fields       map[string]any
	}{
		{"two", `[{"id":"a","evidence":[{"x":[1,2]}]},{"id":"b"}]`, map[string]any{"alert_count": int64(2), "alert_ids": "a,b"}},
		{"none", `[]`, map[string]any{"alert_count": int64(0)}},
		{"null", `null`, map[string]any{}},
		{"a string", `"a,b"`, map[string]any{"invalid_field_names": "alerts"}},
		{"a number among them", `[{"id":"a"},1]`, map[string]any{"invalid_field_names": "alerts"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			plugin, _, _ := incidentStub(t, func(*http.Request) (int, string) {
				return http.StatusOK, `{"value":[{"id":"7","lastUpdateDateTime":"2020-09-30T14:00:00Z","alerts":` + tt.alerts + `}]}`
			}, func(m *MicrosoftDefender) { m.MaxWindow = config.Duration(3 * time.Hour) })
			acc := gatherOK(t, plugin)
			fields := map[string]any{"incident_id": "7", "last_update_date_time": "2020-09-30T14:00:00Z"}
			maps.Copy(fields, tt.fields)
			require.Equal(t, fields, acc.GetTelegrafMetrics()[0].Fields())
		})
	}
}

func TestIncidentSettings(t *testing.T) {
	for _, tt := range []struct {
		name      string
		configure func(*MicrosoftDefender)
		err       string
	}{
		{"machine groups", func(m *MicrosoftDefender) { m.MachineGroups = []string{"Finance"} },
			`machine_groups: not used by api = "graph_incidents"`},
		{"service sources and evidence", func(m *MicrosoftDefender) { m.ServiceSources, m.IncludeEvidence = []string{"x"}, true },
			`service_sources, include_evidence: not used by api = "graph_incidents"`},
		{"a SIEM region", func(m *MicrosoftDefender) { m.Region = "eu" },
			`region "eu" is a region of api = "siem": for api = "graph_incidents" use "global" (the default), "gcc", "gcc-high", "dod" or "china"`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			m := withDefaults(&MicrosoftDefender{API: "graph_incidents", TenantID: testTenant, ClientID: testClientID,
				ClientSecret: config.NewSecret([]byte("s"))})
			tt.configure(m)
			require.EqualError(t, m.Init(), tt.err)
		})
	}
	m := withDefaults(&MicrosoftDefender{API: "graph_incidents", Region: "gcc-high", TenantID: testTenant, ClientID: testClientID,
		ClientSecret: config.NewSecret([]byte("s"))})
	require.NoError(t, m.Init())
	require.Equal(t, "https://graph.microsoft.us/v1.0/security/incidents", m.endpoint.String())
	require.Equal(t, []string{"https://graph.microsoft.us/.default"}, m.Scopes)
}

// The probe asks for one incident of the last hour, its alerts with it;
// a 403 names the incidents' permission.
func TestIncidentProbe(t *testing.T) {
	status := http.StatusOK
	plugin, _, requests := incidentStub(t, func(*http.Request) (int, string) { return status, `{"value":[]}` })
	require.NoError(t, plugin.Probe())
	require.Equal(t, []string{"alerts 14:00:00.0000000Z 15:00:00.0000000Z top=1"}, *requests)
	status = http.StatusForbidden
	require.EqualError(t, plugin.Probe(), "request: Graph API at "+plugin.endpoint.Host+" answered 403 Forbidden (the app lacks the "+
		"SecurityIncident.Read.All application permission, or admin consent for it: grant it and consent in Entra ID): body "+
		`"{\"value\":[]}"`)
}

// An incident over the 8 MiB a record may take with its alerts is not
// skipped: its window is read again without them.
func TestIncidentTooLargeWithItsAlerts(t *testing.T) {
	incident := `{"id":"7","lastUpdateDateTime":"2020-09-30T14:00:00Z"`
	plugin, logger, requests := incidentStub(t, func(r *http.Request) (int, string) {
		if r.URL.Query().Get("$expand") == "" {
			return http.StatusOK, `{"value":[` + incident + `}]}`
		}
		return http.StatusOK, `{"value":[` + incident + `,"alerts":[{"id":"a","evidence":"` + strings.Repeat("x", 9<<20) + `"}]}]}`
	}, func(m *MicrosoftDefender) { m.MaxWindow = config.Duration(3 * time.Hour) })
	acc := gatherOK(t, plugin)
	require.Equal(t, []string{"alerts 13:00:00.0000000Z 15:00:00.0000000Z top=50", " 13:00:00.0000000Z 15:00:00.0000000Z top=50"}, *requests)
	require.Equal(t, []string{"W! [] Reading incidents with $expand=alerts failed, so those last updated from 2020-09-30T13:00:00Z " +
		"to 2020-09-30T15:00:00Z are read without it (alert_count and alert_ids left out; include_incident_alerts = false stops " +
		"asking for them): an incident with them is over 8 MiB"},
		logger.Warnings())
	require.Equal(t, map[string]any{"incident_id": "7", "last_update_date_time": "2020-09-30T14:00:00Z"},
		acc.GetTelegrafMetrics()[0].Fields())
	require.Equal(t, int64(0), pollFields(t, acc)["alerts_skipped"])
}
