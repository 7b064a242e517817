package microsoft_defender

import (
	"bytes"
	"cmp"
	"encoding/json"
	"strings"
	"time"

	"github.com/influxdata/telegraf"
)

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
		{"computer_dns_name", a.device.DeviceDNSName},
		{"device_id", a.device.MdeDeviceID},
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
	b.intField("evidence_count", int64(a.evidenceCount))
	if a.includeEvidence {
		// Cut JSON is no JSON: evidence longer than a field is left out.
		var compact bytes.Buffer
		if a.evidenceLeftOut || len(a.Evidence) > 0 && json.Compact(&compact, a.Evidence) != nil || compact.Len() > maxFieldBytes {
			cut = append(cut, "evidence (left out)")
		} else {
			b.stringField("evidence", compact.String())
		}
	}
	return b.metric(), cut
}

// versionTime places a Graph version at created, else lastUpdate, else none; eventTime parts
// the versions of one record, which share createdDateTime and often every tag.
func versionTime(created, lastUpdate time.Time, identity string) time.Time {
	if ts := cmp.Or(created, lastUpdate); !ts.IsZero() {
		return eventTime(ts, identity, 0)
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
