package microsoft_defender

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	jsonv2 "github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"

	"github.com/influxdata/telegraf"
)

const (
	measurementIncident      = "defender_incident"
	measurementIncidentCount = "defender_incident_count"
	// maxIncidentTop is the largest $top Graph takes for incidents ("The limit of '50' for Top query has been exceeded").
	maxIncidentTop = 50
)

// graphIncident is one version of a Graph security incident.
type graphIncident struct {
	graphVersion
	TenantID           string         `json:"tenantId"`
	Status             string         `json:"status"`
	Severity           string         `json:"severity"`
	Classification     string         `json:"classification"`
	Determination      string         `json:"determination"`
	DisplayName        string         `json:"displayName"`
	Description        string         `json:"description"`
	AssignedTo         string         `json:"assignedTo"`
	IncidentWebURL     string         `json:"incidentWebUrl"`
	RedirectIncidentID string         `json:"redirectIncidentId"`
	ResolvedDateTime   string         `json:"resolvedDateTime"` // not documented for v1.0: emitted when sent
	CustomTags         []string       `json:"customTags"`
	SystemTags         []string       `json:"systemTags"`
	Alerts             incidentAlerts `json:"alerts"`
}

// incidentAlerts are the ids of an incident's alerts, with $expand=alerts.
type incidentAlerts struct {
	ids  []string
	read bool // false when the answer held no alerts: none are guessed
}

// newIncidentReader reads the incidents of api = "graph_incidents" with the walk of the alerts.
func newIncidentReader(m *MicrosoftDefender, endpoint *url.URL) *graphReader {
	r := &graphReader{endpoint: endpoint, pageSize: m.PageSize, noun: "incident", maxAlertsPerGather: m.MaxAlertsPerGather,
		filter: odataAnyOf("severity", m.Severities), decodePage: decodeIncidentPage}
	if m.IncludeIncidentAlerts {
		r.expand = "alerts"
	}
	return r
}

// decodeIncidentPage streams the incidents of one page to handle.
func decodeIncidentPage(body io.Reader, handle func(record) bool) (string, error) {
	r := newRecordReader(body, graphIncidentNames)
	return decodeGraphValue(r, "incident", func() record { return &graphIncident{} }, handle)
}

// unmarshalIncidentAlerts takes each alert's id; an element that is no object leaves the field out.
func (r *recordReader) unmarshalIncidentAlerts(dec *jsontext.Decoder, v *incidentAlerts) error {
	switch k := dec.PeekKind(); {
	case k == 'n':
		return errors.ErrUnsupported // the library's own: null leaves it out
	case k != '[':
		return r.misfit(dec, k, "an array of alerts")
	}
	if _, err := dec.ReadToken(); err != nil {
		return err
	}
	misfit, ids := "", make([]string, 0, 4)
	for i := 0; dec.PeekKind() != ']'; i++ {
		var alert struct {
			ID string `json:"id"`
		}
		if k := dec.PeekKind(); k != '{' {
			if err := dec.SkipValue(); err != nil {
				return err
			}
			misfit = cmp.Or(misfit, fmt.Sprintf("element %d: a JSON %s where an alert object was expected", i, kindName(k)))
		} else if err := jsonv2.UnmarshalDecode(dec, &alert); err != nil {
			return err
		}
		ids = append(ids, alert.ID)
	}
	if _, err := dec.ReadToken(); err != nil {
		return err
	}
	if misfit != "" {
		r.problem(dec, misfit)
		return nil
	}
	*v = incidentAlerts{ids: ids, read: true}
	return nil
}

func (in *graphIncident) countKey() countKey {
	return countKey{
		measurement: measurementIncidentCount,
		severity:    strings.ToLower(sanitize(in.Severity, maxTagBytes)),
		status:      sanitize(in.Status, maxTagBytes),
	}
}

// metric maps an incident version to defender_incident, placed as a Graph alert's version.
func (in *graphIncident) metric() (telegraf.Metric, []string) {
	b := newMetricBuilder(measurementIncident, versionTime(in.created, in.lastUpdate, in.identity()))
	b.countTags(in.countKey())
	b.tag("classification", sanitize(in.Classification, maxTagBytes))
	b.tag("determination", sanitize(in.Determination, maxTagBytes))
	fields := [][2]string{
		{"incident_id", in.ID},
		{"display_name", in.DisplayName},
		{"description", in.Description},
		{"assigned_to", in.AssignedTo},
		{"incident_web_url", in.IncidentWebURL},
		{"redirect_incident_id", in.RedirectIncidentID},
		{"tenant_id", in.TenantID},
		{"created_date_time", formatTimeAs(in.created, in.CreatedDateTime)},
		{"last_update_date_time", formatTimeAs(in.lastUpdate, in.LastUpdateDateTime)},
		{"resolved_date_time", normalizeTime(in.ResolvedDateTime)},
		{"custom_tags", strings.Join(in.CustomTags, ",")},
		{"system_tags", strings.Join(in.SystemTags, ",")},
	}
	if in.Alerts.read {
		b.intField("alert_count", int64(len(in.Alerts.ids)))
		fields = append(fields, [2]string{"alert_ids", strings.Join(in.Alerts.ids, ",")})
	}
	var cut []string
	for _, f := range fields {
		cut = b.cutField(f[0], f[1], cut)
	}
	return b.metric(), cut
}

// isServerError reports a 500 answer, which $expand=alerts may cause.
func isServerError(err error) bool {
	var statusErr *statusError
	return errors.As(err, &statusErr) && statusErr.status == http.StatusInternalServerError
}

func incidentStatusMeaning(status int) string {
	switch status {
	case http.StatusBadRequest:
		return "the query was refused: check severities"
	case http.StatusForbidden:
		return "the app lacks the SecurityIncident.Read.All application permission, or admin consent for it"
	case http.StatusNotFound:
		return "no security incidents at this address: check region or endpoint_url"
	default:
		return graphStatusMeaning(status)
	}
}

// warnOncef logs a warning of this kind (key) once a poll.
func (k *known) warnOncef(key, format string, args ...any) {
	if k.warned[key] {
		return
	}
	if k.warned == nil {
		k.warned = make(map[string]bool)
	}
	k.warned[key] = true
	k.log.Warnf(format, args...)
}
