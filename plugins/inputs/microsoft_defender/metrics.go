package microsoft_defender

import (
	"hash/fnv"
	"strings"
	"time"

	"github.com/influxdata/telegraf"
	"github.com/influxdata/telegraf/metric"
)

const (
	measurementAlert = "defender_alert"
	measurementCount = "defender_alert_count"
)

// maxFieldBytes caps a string field: outputs refuse larger values
// (InfluxDB 1.x stops at 64 KiB), and no real detection needs more.
const maxFieldBytes = 32 * 1024

// maxTagBytes caps a tag: tags become series keys, and a hostile value must
// not make one of megabytes.
const maxTagBytes = 256

// alertMetric turns one detection into a defender_alert event, timestamped
// at AlertTime (LastProcessedTimeUtc when the service sent no AlertTime).
// String fields longer than maxFieldBytes are cut; their names are returned.
func alertMetric(d *detection) (telegraf.Metric, []string) {
	var cut []string
	ts := d.lastProcessed
	if !d.alertAt.IsZero() {
		ts = d.alertAt
	}
	// The detections of one alert share AlertTime and often every tag;
	// AlertPart tells them apart.
	m := metric.New(measurementAlert, nil, nil, atTick(ts, d.AlertPart.value))
	addCountTags(m, countKeyOf(d))
	addTag(m, "detection_source", sanitize(d.Source, maxTagBytes))
	for _, f := range alertStringFields {
		v := f.value(d)
		if len(v) > maxFieldBytes {
			v = cutAtRune(v, maxFieldBytes)
			cut = append(cut, f.name)
		}
		if v != "" {
			m.AddField(f.name, v)
		}
	}
	if d.AlertPart.set {
		m.AddField("alert_part", d.AlertPart.value)
	}
	if d.ReportID.set {
		m.AddField("report_id", d.ReportID.value)
	}
	if d.RemediationIsSuccess.set {
		m.AddField("remediation_is_success", d.RemediationIsSuccess.value)
	}
	if d.WasExecutingWhileDetected.set {
		m.AddField("was_executing_while_detected", d.WasExecutingWhileDetected.value)
	}
	m.AddField("last_processed_time_utc", d.lastProcessed.Format(time.RFC3339Nano))
	if !d.alertAt.IsZero() {
		m.AddField("alert_time", d.alertAt.Format(time.RFC3339Nano))
	}
	return m, cut
}

// atTick keeps t to the APIs' resolution of 100 ns and puts n (mod 100) in
// the nanoseconds below it. Databases that keep one point per series and
// timestamp, InfluxDB among them, would otherwise merge events that share
// a time and tags.
func atTick(t time.Time, n int64) time.Time {
	n %= int64(tick)
	if n < 0 {
		n += int64(tick)
	}
	return t.Truncate(tick).Add(time.Duration(n))
}

// hashOf is a stable number for atTick when events carry no sequence.
func hashOf(s string) int64 {
	h := fnv.New32a()
	h.Write([]byte(s))
	return int64(h.Sum32())
}

// alertStringFields maps the API's string fields to their field names; the
// tags (Severity, Category, MachineGroup, Source) are not repeated here.
var alertStringFields = []struct {
	name  string
	value func(*detection) string
}{
	{"alert_id", func(d *detection) string { return d.AlertID }},
	{"full_id", func(d *detection) string { return d.FullID }},
	{"alert_title", func(d *detection) string { return d.AlertTitle }},
	{"computer_dns_name", func(d *detection) string { return d.ComputerDNSName }},
	{"machine_name", func(d *detection) string { return d.MachineName }},
	{"machine_domain", func(d *detection) string { return d.MachineDomain }},
	{"description", func(d *detection) string { return d.Description }},
	{"actor", func(d *detection) string { return d.Actor }},
	{"ioc_name", func(d *detection) string { return d.IocName }},
	{"ioc_value", func(d *detection) string { return d.IocValue }},
	{"creator_ioc_name", func(d *detection) string { return d.CreatorIocName }},
	{"creator_ioc_value", func(d *detection) string { return d.CreatorIocValue }},
	{"ioc_unique_id", func(d *detection) string { return d.IocUniqueID }},
	{"ioa_definition_id", (*detection).ioaDefinitionID},
	{"sha1", func(d *detection) string { return d.Sha1 }},
	{"sha256", func(d *detection) string { return d.Sha256 }},
	{"md5", func(d *detection) string { return d.Md5 }},
	{"file_hash", func(d *detection) string { return d.FileHash }},
	{"file_name", func(d *detection) string { return d.FileName }},
	{"file_path", func(d *detection) string { return d.FilePath }},
	{"command_line", func(d *detection) string { return d.CommandLine }},
	{"ip_address", func(d *detection) string { return d.IPAddress }},
	{"url", func(d *detection) string { return d.URL }},
	{"user_name", func(d *detection) string { return d.UserName }},
	{"user_domain", func(d *detection) string { return d.UserDomain }},
	{"log_on_users", func(d *detection) string { return d.LogOnUsers }},
	{"internal_ipv4_list", func(d *detection) string { return d.InternalIPv4List }},
	{"internal_ipv6_list", func(d *detection) string { return d.InternalIPv6List }},
	{"device_id", func(d *detection) string { return d.DeviceID }},
	{"threat_category", func(d *detection) string { return d.ThreatCategory }},
	{"threat_family", func(d *detection) string { return d.ThreatFamily }},
	{"threat_name", func(d *detection) string { return d.ThreatName }},
	{"remediation_action", func(d *detection) string { return d.RemediationAction }},
	{"external_id", func(d *detection) string { return d.ExternalID }},
	{"device_created_machine_tags", func(d *detection) string { return d.DeviceCreatedMachineTags }},
	{"cloud_created_machine_tags", func(d *detection) string { return d.CloudCreatedMachineTags }},
	{"link_to_wdatp", func(d *detection) string { return d.LinkToWDATP }},
	{"link_to_mtp", func(d *detection) string { return d.LinkToMTP }},
	{"incident_link_to_wdatp", func(d *detection) string { return d.IncidentLinkToWDATP }},
	{"incident_link_to_mtp", func(d *detection) string { return d.IncidentLinkToMTP }},
}

func addTag(m telegraf.Metric, key, value string) {
	if value != "" {
		m.AddTag(key, value)
	}
}

// addCountTags adds the tags that defender_alert and defender_alert_count
// share.
func addCountTags(m telegraf.Metric, k countKey) {
	addTag(m, "severity", k.severity)
	addTag(m, "category", k.category)
	addTag(m, "machine_group", k.machineGroup)
}

// countKey is one defender_alert_count series.
type countKey struct {
	severity, category, machineGroup string
}

// countKeyOf returns the detection's tag values as defender_alert and
// defender_alert_count carry them.
func countKeyOf(d *detection) countKey {
	return countKey{
		severity:     strings.ToLower(sanitize(d.Severity, maxTagBytes)),
		category:     sanitize(d.Category, maxTagBytes),
		machineGroup: sanitize(d.MachineGroup, maxTagBytes),
	}
}

// alertCounter counts the detections one poll emitted per severity,
// category and machine group.
type alertCounter struct {
	counts map[countKey]int64
	order  []countKey // first-seen order, so output is deterministic
}

func (c *alertCounter) add(k countKey) {
	if c.counts == nil {
		c.counts = make(map[countKey]int64)
	}
	if _, ok := c.counts[k]; !ok {
		// Copies, for the same reason as in cursor.remember.
		k = countKey{strings.Clone(k.severity), strings.Clone(k.category), strings.Clone(k.machineGroup)}
		c.order = append(c.order, k)
	}
	c.counts[k]++
}

// metrics returns one defender_alert_count per combination seen, stamped at
// the end of the poll's window. Polls that continue one unfinished window
// share its end; the nanoseconds below 100 ns, from the poll's start, keep
// their counts apart in databases that keep one point per series and time.
func (c *alertCounter) metrics(windowEnd, pollStart time.Time) []telegraf.Metric {
	ts := atTick(windowEnd, hashOf(pollStart.Format(time.RFC3339Nano)))
	out := make([]telegraf.Metric, 0, len(c.order))
	for _, k := range c.order {
		m := metric.New(measurementCount, nil, map[string]interface{}{"count": c.counts[k]}, ts)
		addCountTags(m, k)
		out = append(out, m)
	}
	return out
}

const measurementPoll = "defender_poll"

// pollMetric describes one poll: what it asked, got and emitted, how far
// behind now the cursor is, and whether a backlog remains.
func pollMetric(api, status string, s *pollStats, duration, lag time.Duration, ts time.Time) telegraf.Metric {
	return metric.New(measurementPoll,
		map[string]string{"api": api, "status": status},
		map[string]interface{}{
			"requests":           s.requests,
			"alerts_received":    s.received,
			"alerts_emitted":     s.emitted,
			"duplicates_dropped": s.duplicates,
			"outside_window":     s.outside,
			"errors":             s.errors,
			"duration_ms":        float64(duration) / float64(time.Millisecond),
			"lag_seconds":        lag.Seconds(),
			"backlog":            s.backlog,
		},
		ts)
}
