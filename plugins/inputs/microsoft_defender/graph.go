package microsoft_defender

import (
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"slices"
	"strings"
	"time"

	jsonv2 "github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"

	"github.com/influxdata/telegraf"
)

// graphVersion is what a Graph alert and incident version share: an id,
// its times, and what of it could not be decoded.
type graphVersion struct {
	ID                 string `json:"id"`
	CreatedDateTime    string `json:"createdDateTime"`
	LastUpdateDateTime string `json:"lastUpdateDateTime"`

	created, lastUpdate time.Time // parsed by validate
	issues              recordProblems
}

// validate parses the times; a version without an id cannot be told apart
// from others and is skipped.
func (v *graphVersion) validate() {
	if v.ID == "" {
		v.issues.skip = "it has no id"
		return
	}
	v.lastUpdate = v.issues.parseTime("lastUpdateDateTime", v.LastUpdateDateTime)
	v.created = v.issues.parseTime("createdDateTime", v.CreatedDateTime)
}

func (v *graphVersion) identity() string          { return v.ID + "@" + v.lastUpdate.Format(time.RFC3339Nano) }
func (v *graphVersion) cursorTime() time.Time     { return v.lastUpdate }
func (v *graphVersion) inWindow() bool            { return !v.lastUpdate.IsZero() }
func (v *graphVersion) problems() *recordProblems { return &v.issues }

// graphAlert is one version of a Graph security alert.
type graphAlert struct {
	graphVersion
	ProviderAlertID       string        `json:"providerAlertId"`
	IncidentID            string        `json:"incidentId"`
	TenantID              string        `json:"tenantId"`
	Status                string        `json:"status"`
	Severity              string        `json:"severity"`
	Classification        string        `json:"classification"`
	Determination         string        `json:"determination"`
	ServiceSource         string        `json:"serviceSource"`
	DetectionSource       string        `json:"detectionSource"`
	DetectorID            string        `json:"detectorId"`
	Category              string        `json:"category"`
	Title                 string        `json:"title"`
	Description           string        `json:"description"`
	RecommendedActions    string        `json:"recommendedActions"`
	AlertWebURL           string        `json:"alertWebUrl"`
	IncidentWebURL        string        `json:"incidentWebUrl"`
	ActorDisplayName      string        `json:"actorDisplayName"`
	ThreatDisplayName     string        `json:"threatDisplayName"`
	ThreatFamilyName      string        `json:"threatFamilyName"`
	MitreTechniques       []string      `json:"mitreTechniques"`
	AssignedTo            string        `json:"assignedTo"`
	ResolvedDateTime      string        `json:"resolvedDateTime"`
	FirstActivityDateTime string        `json:"firstActivityDateTime"`
	LastActivityDateTime  string        `json:"lastActivityDateTime"`
	Evidence              alertEvidence `json:"evidence"`
}

// alertEvidence is what unmarshalEvidence takes from an alert's evidence.
type alertEvidence struct {
	raw     json.RawMessage // the array, kept only when it is to be emitted
	device  deviceEvidence  // the first device evidence; with machine_groups, the first in them
	matched bool            // with machine_groups, a device evidence is in them
	count   int
	leftOut bool // kept, but longer than a field may be
}

// evidenceNeeds is what of an alert's evidence is kept besides its count and first device evidence.
type evidenceNeeds struct {
	raw    bool     // the array, to be emitted (include_evidence)
	groups []string // machine_groups: an alert is kept, and tagged, by the first device evidence in them
}

// deviceEvidence is what the mapping takes from the alert's first device evidence.
type deviceEvidence struct {
	Type          string `json:"@odata.type"`
	DeviceDNSName string `json:"deviceDnsName"`
	MdeDeviceID   string `json:"mdeDeviceId"`
	RbacGroupName string `json:"rbacGroupName"`
}

func (a *graphAlert) countKey() countKey {
	return countKey{
		severity:     strings.ToLower(sanitize(a.Severity, maxTagBytes)),
		category:     sanitize(a.Category, maxTagBytes),
		machineGroup: sanitize(a.Evidence.device.RbacGroupName, maxTagBytes),
	}
}

// maxEvidenceBytes bounds the evidence kept; compacted, at most maxFieldBytes are emitted.
const maxEvidenceBytes = 4 * maxFieldBytes

// unmarshalEvidence counts the alert's evidence, decodes the first device
// evidence, and keeps the array while it could be emitted, if the reader
// keeps evidence; then the rest is skipped. Evidence that does not decode
// leaves v as it was.
func (r *recordReader) unmarshalEvidence(dec *jsontext.Decoder, v *alertEvidence) error {
	switch k := dec.PeekKind(); {
	case k == 'n':
		_, err := dec.ReadToken() // null keeps the evidence as it was
		return err
	case k != '[':
		return r.misfit(dec, k, "an array")
	}
	if _, err := dec.ReadToken(); err != nil {
		return err
	}
	var device deviceEvidence
	matched, found, problem, count, kept := false, false, "", 0, []byte(nil)
	if r.needs.raw {
		kept = append(r.evidence[:0], '[')
	}
	for ; dec.PeekKind() != ']'; count++ {
		if r.over(dec) {
			return errRecordTooLarge
		}
		if problem != "" || found && kept == nil && (matched || len(r.needs.groups) == 0) {
			if err := dec.SkipValue(); err != nil {
				return err
			}
			continue
		}
		var e deviceEvidence
		var entry jsontext.Value
		var err error
		p, n, k := r.issues, len(r.issues.invalid), dec.PeekKind()
		switch {
		case kept != nil: // read whole, to be kept
			if entry, err = dec.ReadValue(); err == nil && (k == '{' || k == 'n') {
				err = jsonv2.Unmarshal(entry, &e, r.opts)
			}
		case k == '{': // streamed: only its device fields are held
			err = jsonv2.UnmarshalDecode(dec, &e)
		default:
			err = dec.SkipValue()
		}
		if err != nil {
			return err
		}
		// Past the first device evidence, an entry that does not fit is only left out of groups.
		misfit := len(p.invalid) > n
		switch {
		case found:
		case k != '{' && k != 'n':
			problem = fmt.Sprintf("evidence %d: a JSON %s where an evidence object was expected", count, kindName(k))
		case misfit:
			problem = fmt.Sprintf("evidence %d: field %s: %s", count, p.invalid[n].field, p.invalid[n].reason)
		}
		p.invalid = p.invalid[:n]
		if !misfit && e.Type == "#microsoft.graph.security.deviceEvidence" {
			if !found {
				device, found = e, true
			}
			if !matched && slices.Contains(r.needs.groups, e.RbacGroupName) {
				device, matched = e, true
			}
		}
		if kept != nil {
			if count > 0 {
				kept = append(kept, ',')
			}
			if kept = append(kept, entry...); len(kept)+1 > maxEvidenceBytes {
				r.evidence, kept = kept, nil // too long to be emitted
			}
		}
	}
	if _, err := dec.ReadToken(); err != nil {
		return err
	}
	if problem != "" {
		r.problem(dec, problem)
		return nil
	}
	*v = alertEvidence{device: device, matched: matched, count: count, leftOut: r.needs.raw && kept == nil}
	if kept != nil {
		r.evidence = append(kept, ']')
		v.raw = slices.Clone(r.evidence)
	}
	return nil
}

// graphAlertNames are the names in the json tags of an alert and its device evidence.
var graphAlertNames = append(taggedFields(reflect.TypeFor[graphAlert](), "json"), taggedFields(reflect.TypeFor[deviceEvidence](), "json")...)

// decodeGraphPage streams a page's alerts to handle until it returns false, and returns the next link;
// of their evidence it keeps what needs says.
func decodeGraphPage(body io.Reader, needs evidenceNeeds, handle func(*graphAlert) bool) (string, error) {
	r := newRecordReader(body, graphAlertNames)
	r.needs = needs
	return decodeGraphValue(r, "alert", func() *graphAlert { return &graphAlert{} }, handle)
}

// decodeGraphValue streams the items of a page, {"value": [...], "@odata.nextLink": ...} in
// any order, each made by newItem, to handle until it returns false, and returns the link.
func decodeGraphValue[T record](r *recordReader, noun string, newItem func() T, handle func(T) bool) (string, error) {
	if err := r.open('{', "with a value array"); err != nil {
		return "", err
	}
	dec, next := r.dec, ""
	for dec.PeekKind() != '}' {
		name, err := dec.ReadToken()
		if err != nil {
			return "", r.explain(err)
		}
		switch key, k := name.String(), dec.PeekKind(); key {
		case "value":
			if k != '[' {
				if err := dec.SkipValue(); err != nil {
					return "", fmt.Errorf("value: %w", r.explain(err))
				}
				return "", fmt.Errorf("value is not an array: it is a JSON %s", kindName(k))
			}
			if _, err := dec.ReadToken(); err != nil {
				return "", r.explain(err)
			}
			// r.next explains its errors, and ends the array with io.EOF.
			for i := 0; err == nil; i++ {
				item := newItem()
				if err = r.next(item, noun, i); err == nil && !handle(item) {
					return "", nil // the rest of the page is left unread
				}
			}
			if !errors.Is(err, io.EOF) {
				return "", err
			}
			continue
		case "@odata.nextLink":
			if k != '"' && k != 'n' && k != 0 {
				return "", fmt.Errorf("@odata.nextLink: JSON %s where a string was expected", kindName(k))
			}
			var link jsontext.Token
			if link, err = dec.ReadToken(); link.Kind() == '"' {
				next = link.String()
			}
		default:
			err = dec.SkipValue()
		}
		if err != nil {
			return "", r.explain(err)
		}
	}
	if _, err := dec.ReadToken(); err != nil {
		return "", r.explain(err)
	}
	return next, r.expectEnd()
}

// metric maps a Graph alert version to defender_alert at createdDateTime: a field has its SIEM
// counterpart's name in Microsoft's SIEM-to-Graph map, else the Graph name in snake_case.
func (a *graphAlert) metric() (telegraf.Metric, []string) {
	b := newMetricBuilder(measurementAlert, versionTime(a.created, a.lastUpdate, a.identity()))
	b.countTags(a.countKey())
	b.tag("detection_source", sanitize(a.DetectionSource, maxTagBytes))
	b.tag("status", sanitize(a.Status, maxTagBytes))
	b.tag("service_source", sanitize(a.ServiceSource, maxTagBytes))
	var cut []string
	for _, f := range []struct{ name, value string }{
		{"alert_id", a.ID},
		{"created_date_time", formatTimeAs(a.created, a.CreatedDateTime)},
		{"alert_title", a.Title},
		{"description", a.Description},
		{"computer_dns_name", a.Evidence.device.DeviceDNSName},
		{"device_id", a.Evidence.device.MdeDeviceID},
		{"threat_name", a.ThreatDisplayName},
		{"threat_family", a.ThreatFamilyName},
		{"detector_id", a.DetectorID},
		{"alert_web_url", a.AlertWebURL},
		{"incident_web_url", a.IncidentWebURL},
		{"actor", a.ActorDisplayName},
		{"incident_id", a.IncidentID},
		{"provider_alert_id", a.ProviderAlertID},
		{"tenant_id", a.TenantID},
		{"classification", a.Classification},
		{"determination", a.Determination},
		{"assigned_to", a.AssignedTo},
		{"recommended_actions", a.RecommendedActions},
		{"mitre_techniques", strings.Join(a.MitreTechniques, ",")},
		{"last_update_date_time", formatTimeAs(a.lastUpdate, a.LastUpdateDateTime)},
		{"first_activity_date_time", normalizeTime(a.FirstActivityDateTime)},
		{"last_activity_date_time", normalizeTime(a.LastActivityDateTime)},
		{"resolved_date_time", normalizeTime(a.ResolvedDateTime)},
	} {
		cut = b.cutField(f.name, f.value, cut)
	}
	b.intField("evidence_count", int64(a.Evidence.count))
	// Cut JSON is no JSON: evidence longer than a field is left out.
	var compact bytes.Buffer
	if e := a.Evidence; e.leftOut || len(e.raw) > 0 && json.Compact(&compact, e.raw) != nil || compact.Len() > maxFieldBytes {
		cut = append(cut, "evidence (left out)")
	} else {
		b.stringField("evidence", compact.String())
	}
	return b.metric(), cut
}

// versionTime places a Graph version at created, else lastUpdate, else none; eventTime parts
// the versions of one record, which share createdDateTime and often every tag.
func versionTime(created, lastUpdate time.Time, identity string) time.Time {
	if ts := cmp.Or(created, lastUpdate); !ts.IsZero() {
		return eventTime(ts, identity)
	}
	return time.Time{}
}

// normalizeTime formats a Graph timestamp as the other time fields; one that does not parse is kept.
func normalizeTime(s string) string {
	if s == "" {
		return ""
	}
	t, err := parseAPITime(s)
	if err != nil {
		return sanitize(s, 64)
	}
	return formatTimeAs(t, s)
}

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

// graphIncidentNames are the names in the json tags of an incident.
var graphIncidentNames = taggedFields(reflect.TypeFor[graphIncident](), "json")

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
