package microsoft_defender

import (
	"cmp"
	"hash/fnv"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/influxdata/telegraf"
	"github.com/influxdata/telegraf/metric"
)

const (
	measurementAlert = "defender_alert"
	measurementCount = "defender_alert_count"
)

// maxFieldBytes caps a string field (InfluxDB 1.x refuses 64 KiB), and
// maxTagBytes a tag, which becomes a series key.
const (
	maxFieldBytes = 32 * 1024
	maxTagBytes   = 256
)

// alertMetric turns a detection into a defender_alert at AlertTime, else
// LastProcessedTimeUtc; it returns the names of the string fields it cut.
func alertMetric(d *detection) (telegraf.Metric, []string) {
	var cut []string
	ts := d.lastProcessed
	switch {
	case !d.alertAt.IsZero():
		ts = d.alertAt
	case ts.IsZero():
		ts = d.cursorTime()
	}
	// An alert's detections share AlertTime and often every tag: AlertPart tells them apart.
	b := newMetricBuilder(measurementAlert, atTick(ts, d.AlertPart.value))
	b.countTags(countKeyOf(d))
	b.tag("detection_source", sanitize(d.Source, maxTagBytes))
	for _, f := range alertStringFields {
		v := f.value(d)
		if len(v) > maxFieldBytes {
			v = cutAtRune(v, maxFieldBytes)
			cut = append(cut, f.name)
		}
		b.stringField(f.name, v)
	}
	if d.AlertPart.set {
		b.intField("alert_part", d.AlertPart.value)
	}
	if d.ReportID.set {
		b.intField("report_id", d.ReportID.value)
	}
	if d.RemediationIsSuccess.set {
		b.boolField("remediation_is_success", d.RemediationIsSuccess.value)
	}
	if d.WasExecutingWhileDetected.set {
		b.boolField("was_executing_while_detected", d.WasExecutingWhileDetected.value)
	}
	if !d.lastProcessed.IsZero() {
		b.stringField("last_processed_time_utc", formatTimeAs(d.lastProcessed, d.LastProcessedTimeUtc))
	}
	if !d.alertAt.IsZero() {
		b.stringField("alert_time", formatTimeAs(d.alertAt, d.AlertTime))
	}
	return b.metric(), cut
}

// formatTimeAs formats t in RFC 3339 with nanoseconds, returning sent, the
// text t was parsed from, when equal, to spare an allocation.
func formatTimeAs(t time.Time, sent string) string {
	var buf [64]byte
	formatted := t.AppendFormat(buf[:0], time.RFC3339Nano)
	if string(formatted) == sent {
		return sent
	}
	return string(formatted)
}

// metricBuilder collects a metric's tags and fields for metric.FromMetric,
// which copies them at their size: 67 allocations for a SIEM detection
// against 106 with AddField (BenchmarkSIEMMetric). Builders are pooled.
type metricBuilder struct {
	telegraf.Metric // nil: FromMetric reads only the methods below

	name      string
	tm        time.Time
	tags      []telegraf.Tag // in key order, as a Telegraf metric keeps them
	fields    []telegraf.Field
	tagList   []*telegraf.Tag
	fieldList []*telegraf.Field
}

var builderPool = sync.Pool{New: func() any { return new(metricBuilder) }}

func newMetricBuilder(name string, tm time.Time) *metricBuilder {
	b := builderPool.Get().(*metricBuilder)
	b.name, b.tm = name, tm
	return b
}

// tag adds a tag, in key order, unless its value is empty; each key once.
func (b *metricBuilder) tag(key, value string) {
	if value == "" {
		return
	}
	i := len(b.tags)
	for i > 0 && b.tags[i-1].Key > key {
		i--
	}
	b.tags = slices.Insert(b.tags, i, telegraf.Tag{Key: key, Value: value})
}

// countTags adds the tags an event and its count share.
func (b *metricBuilder) countTags(k countKey) {
	b.tag("severity", k.severity)
	b.tag("status", k.status)
	b.tag("category", k.category)
	b.tag("machine_group", k.machineGroup)
}

// stringField adds a field unless its value is empty. Each key is added
// once, and only with a type Telegraf keeps as it is (string, int64, bool).
func (b *metricBuilder) stringField(key, value string) {
	if value != "" {
		b.fields = append(b.fields, telegraf.Field{Key: key, Value: value})
	}
}

func (b *metricBuilder) intField(key string, value int64) {
	b.fields = append(b.fields, telegraf.Field{Key: key, Value: value})
}

func (b *metricBuilder) boolField(key string, value bool) {
	b.fields = append(b.fields, telegraf.Field{Key: key, Value: value})
}

// metric returns the Telegraf metric and puts the emptied builder back.
func (b *metricBuilder) metric() telegraf.Metric {
	for i := range b.tags {
		b.tagList = append(b.tagList, &b.tags[i])
	}
	for i := range b.fields {
		b.fieldList = append(b.fieldList, &b.fields[i])
	}
	m := metric.FromMetric(b)
	clear(b.tags)
	clear(b.fields)
	clear(b.tagList)
	clear(b.fieldList)
	b.tags, b.fields, b.tagList, b.fieldList = b.tags[:0], b.fields[:0], b.tagList[:0], b.fieldList[:0]
	builderPool.Put(b)
	return m
}

// Name is read by metric.FromMetric, as are the four methods below.
func (b *metricBuilder) Name() string { return b.name }

// Time is read by metric.FromMetric.
func (b *metricBuilder) Time() time.Time { return b.tm }

// Type is read by metric.FromMetric.
func (*metricBuilder) Type() telegraf.ValueType { return telegraf.Untyped }

// TagList is read by metric.FromMetric.
func (b *metricBuilder) TagList() []*telegraf.Tag { return b.tagList }

// FieldList is read by metric.FromMetric.
func (b *metricBuilder) FieldList() []*telegraf.Field { return b.fieldList }

// atTick keeps t to the APIs' 100 ns and puts n (mod 100) below, so that
// databases keeping one point per series and time do not merge events.
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

// alertStringFields maps the API's string fields, tags aside, to field names.
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

// countKey is one series of defender_alert_count, or of measurement.
type countKey struct {
	measurement                              string
	severity, status, category, machineGroup string
}

// countKeyOf returns the tag values defender_alert and defender_alert_count carry.
func countKeyOf(d *detection) countKey {
	return countKey{
		severity:     lowerSeverity(sanitize(d.Severity, maxTagBytes)),
		category:     sanitize(d.Category, maxTagBytes),
		machineGroup: sanitize(d.MachineGroup, maxTagBytes),
	}
}

// lowerSeverity is strings.ToLower without allocating for the SIEM API's severities.
func lowerSeverity(s string) string {
	switch s {
	case "Informational":
		return "informational"
	case "Low":
		return "low"
	case "Medium":
		return "medium"
	case "High":
		return "high"
	case "UnSpecified":
		return "unspecified"
	}
	return strings.ToLower(s)
}

// alertCounter counts a poll's records per countKey.
type alertCounter struct {
	counts map[countKey]int64
	order  []countKey // first seen first
}

func (c *alertCounter) add(k countKey) {
	if c.counts == nil {
		c.counts = make(map[countKey]int64)
	}
	if _, ok := c.counts[k]; !ok {
		// Copies, for the same reason as in cursor.remember.
		k = countKey{k.measurement, strings.Clone(k.severity), strings.Clone(k.status), strings.Clone(k.category), strings.Clone(k.machineGroup)}
		c.order = append(c.order, k)
	}
	c.counts[k]++
}

// metrics returns a count per key at the window's end, with
// the poll's start below 100 ns to part polls that share an unfinished window.
func (c *alertCounter) metrics(windowEnd, pollStart time.Time) []telegraf.Metric {
	ts := atTick(windowEnd, hashOf(pollStart.Format(time.RFC3339Nano)))
	out := make([]telegraf.Metric, 0, len(c.order))
	for _, k := range c.order {
		b := newMetricBuilder(cmp.Or(k.measurement, measurementCount), ts)
		b.countTags(k)
		b.intField("count", c.counts[k])
		out = append(out, b.metric())
	}
	return out
}

const measurementPoll = "defender_poll"

// pollMetric describes one poll: requests, alerts, lag and backlog.
func pollMetric(api, status string, s *pollStats, duration, lag time.Duration, ts time.Time) telegraf.Metric {
	return metric.New(measurementPoll,
		map[string]string{"api": api, "status": status},
		map[string]interface{}{
			"requests":           s.requests,
			"alerts_received":    s.received,
			"alerts_emitted":     s.emitted,
			"duplicates_dropped": s.duplicates,
			"errors":             s.errors,
			"alerts_skipped":     s.skipped,
			"invalid_fields":     s.invalidFields,
			"out_of_window":      s.outOfWindow,
			"duration_seconds":   duration.Seconds(),
			"lag_seconds":        lag.Seconds(),
			"backlog":            s.backlog,
		},
		ts)
}
