package microsoft_defender

import (
	"context"
	"time"

	"github.com/influxdata/telegraf"
)

// alert is one item a backend decodes: a SIEM detection, or one version of
// a Graph alert. The cursor, deduplication, budget and metrics work on this
// alone.
type alert interface {
	// identity is the deduplication key; empty when the item has none.
	identity() string
	// cursorTime is the time the API's window filters on.
	cursorTime() time.Time
	// metric is the defender_alert event, and the names of fields cut to
	// maxFieldBytes.
	metric() (telegraf.Metric, []string)
	// countKey is the item's defender_alert_count series.
	countKey() countKey
}

// backend reads one API. It walks a span with requests sent through
// poll.request, which retries them and emits what they return.
type backend interface {
	// readSpan reads the span; it returns false when the poll stopped
	// first (budget or deadline), leaving in the span what is left.
	readSpan(ctx context.Context, p *poll, sp *span) (bool, error)
	// endpoint is the address of the alerts resource.
	endpoint() string
}

// sendFunc sends one request and passes each item of its answer to handle
// until handle returns false.
type sendFunc func(ctx context.Context, handle func(alert) bool) error

func (d *detection) cursorTime() time.Time {
	return d.lastProcessed
}

func (d *detection) metric() (telegraf.Metric, []string) {
	return alertMetric(d)
}

func (d *detection) countKey() countKey {
	return countKeyOf(d)
}
