package microsoft_defender

import (
	"cmp"
	"hash/fnv"
	"reflect"
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
	measurementPoll  = "defender_poll"
	// maxFieldBytes caps a string field, maxTagBytes a tag, which becomes a series key.
	maxFieldBytes = 32766 // Lucene's limit for a term: OpenSearch refuses a longer keyword (InfluxDB 1.x 64 KiB)
	maxTagBytes   = 256
)

// formatTimeAs formats t in RFC 3339 with nanoseconds ("" when zero), or returns sent, the text t came from, if equal.
func formatTimeAs(t time.Time, sent string) string {
	if t.IsZero() {
		return ""
	}
	var buf [64]byte
	formatted := t.AppendFormat(buf[:0], time.RFC3339Nano)
	if string(formatted) == sent {
		return sent
	}
	return string(formatted)
}

// metricBuilder collects tags and fields for metric.FromMetric, which copies them at their size:
// 67 allocations for a SIEM detection against 106 with AddField (BenchmarkSIEMMetric).
type metricBuilder struct {
	telegraf.Metric // nil: FromMetric reads only the methods below
	name            string
	tm              time.Time
	tags            []telegraf.Tag
	fields          []telegraf.Field
	tagList         []*telegraf.Tag
	fieldList       []*telegraf.Field
}

var builderPool = sync.Pool{New: func() any { return new(metricBuilder) }}

func newMetricBuilder(name string, tm time.Time) *metricBuilder {
	b := builderPool.Get().(*metricBuilder)
	b.name, b.tm = name, tm
	return b
}

// tag adds a tag unless its value is empty; each key once.
func (b *metricBuilder) tag(key, value string) {
	if value != "" {
		b.tags = append(b.tags, telegraf.Tag{Key: key, Value: value})
	}
}

// countTags adds the tags an event and its count share.
func (b *metricBuilder) countTags(k countKey) {
	b.tag("severity", k.severity)
	b.tag("status", k.status)
	b.tag("category", k.category)
	b.tag("machine_group", k.machineGroup)
}

// stringField adds a field unless its value is empty; each key once, as for intField.
func (b *metricBuilder) stringField(key, value string) {
	if value != "" {
		b.fields = append(b.fields, telegraf.Field{Key: key, Value: value})
	}
}

// cutField adds a string field cut to maxFieldBytes, and its key to cut if it was.
func (b *metricBuilder) cutField(key, value string, cut []string) []string {
	if len(value) > maxFieldBytes {
		value, cut = cutAtRune(value, maxFieldBytes), append(cut, key)
	}
	b.stringField(key, value)
	return cut
}

func (b *metricBuilder) intField(key string, value int64) {
	b.fields = append(b.fields, telegraf.Field{Key: key, Value: value})
}

// addOptional adds the value of o, when set, as the field key.
func addOptional[T int64 | bool](b *metricBuilder, key string, o optional[T]) {
	if o.set {
		b.fields = append(b.fields, telegraf.Field{Key: key, Value: o.value})
	}
}

// metric returns the metric, tags in key order as Telegraf keeps them, and pools the builder.
func (b *metricBuilder) metric() telegraf.Metric {
	slices.SortFunc(b.tags, func(x, y telegraf.Tag) int { return strings.Compare(x.Key, y.Key) })
	for i := range b.tags {
		b.tagList = append(b.tagList, &b.tags[i])
	}
	for i := range b.fields {
		b.fieldList = append(b.fieldList, &b.fields[i])
	}
	m := metric.FromMetric(b)
	// Zeroed, so that the pool keeps no strings alive.
	b.tags, b.fields = slices.Delete(b.tags, 0, len(b.tags)), slices.Delete(b.fields, 0, len(b.fields))
	b.tagList, b.fieldList = slices.Delete(b.tagList, 0, len(b.tagList)), slices.Delete(b.fieldList, 0, len(b.fieldList))
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

// eventTime is the second of t plus a fraction hashed from key, the event's identity: a database keeping one
// point per series and time keeps every repeat on one point and every distinct event on its own (odds of a clash
// 1 in 10^9 a pair: with 10,000 events of one series in one second, 5%).
func eventTime(t time.Time, key string) time.Time {
	h := fnv.New64a()
	h.Write([]byte(key))
	return t.Truncate(time.Second).Add(time.Duration(h.Sum64() % uint64(time.Second)))
}

type taggedField struct {
	index []int  // of the field
	name  string // in the tag
}

// taggedFields lists the fields of struct type t, embedded ones' included, tagged for key.
func taggedFields(t reflect.Type, key string) []taggedField {
	var fields []taggedField
	for _, f := range reflect.VisibleFields(t) {
		if name, ok := f.Tag.Lookup(key); ok {
			fields = append(fields, taggedField{f.Index, name})
		}
	}
	return fields
}

// countKey is one series of defender_alert_count, or of measurement.
type countKey struct {
	measurement                              string
	severity, status, category, machineGroup string
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
		k = countKey{k.measurement, strings.Clone(k.severity), strings.Clone(k.status), strings.Clone(k.category),
			strings.Clone(k.machineGroup)}
		c.order = append(c.order, k)
	}
	c.counts[k]++
}

// emit adds a count per key to acc at the window's end, parted by the poll's start, and starts the counter anew.
func (c *alertCounter) emit(acc telegraf.Accumulator, windowEnd, pollStart time.Time) {
	ts := eventTime(windowEnd, pollStart.Format(time.RFC3339Nano))
	for _, k := range c.order {
		b := newMetricBuilder(cmp.Or(k.measurement, measurementCount), ts)
		b.countTags(k)
		b.intField("count", c.counts[k])
		acc.AddMetric(b.metric())
	}
	*c = alertCounter{}
}

// pollMetric describes one poll: requests, alerts, lag and backlog (the poll stopped before the window's end).
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
			"long_ids":           s.longIDs,
			"forgotten_ids":      s.forgottenIDs,
			"alerts_unconfirmed": s.unconfirmed,
			"duration_seconds":   duration.Seconds(),
			"lag_seconds":        lag.Seconds(),
			"backlog":            status != "ok",
		},
		ts)
}
