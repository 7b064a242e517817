package microsoft_defender

import (
	"context"
	"fmt"
	"strings"
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
	// problems tells what of the item could not be decoded.
	problems() *recordProblems
	// inWindow reports whether cursorTime lies in the window the request
	// asked for; a time outside it never moves a bound of the walk.
	inWindow() bool
}

// recordProblems is what of one item could not be decoded: fields left
// out, or why the item as a whole is not emitted.
type recordProblems struct {
	// noun, index and offset place the item, e.g. detection 3 at byte
	// 1234; where spells it only when a message needs it.
	noun    string
	index   int
	offset  int64
	invalid []fieldProblem
	skip    string // why the item is not emitted; "" when it is
}

func (p *recordProblems) where() string {
	return fmt.Sprintf("%s %d at byte %d", p.noun, p.index, p.offset)
}

// fieldNames lists the fields left out, for the invalid_fields field.
func (p *recordProblems) fieldNames() string {
	names := make([]string, 0, len(p.invalid))
	for _, f := range p.invalid {
		names = append(names, f.field)
	}
	return strings.Join(names, ",")
}

func (p *recordProblems) String() string {
	parts := make([]string, 0, len(p.invalid))
	for _, f := range p.invalid {
		parts = append(parts, f.String())
	}
	return strings.Join(parts, "; ")
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

// cursorTime is LastProcessedTimeUtc, placed inside the request's window
// (see placeIn) when it lies outside or is unknown.
func (d *detection) cursorTime() time.Time {
	if !d.cursorAt.IsZero() {
		return d.cursorAt
	}
	return d.lastProcessed
}

func (d *detection) inWindow() bool {
	return d.cursorAt.IsZero()
}

func (d *detection) problems() *recordProblems {
	return &d.issues
}

// placeIn keeps the cursor's use of the detection inside the window
// [since, until] the request asked for. The API filters on
// LastProcessedTimeUtc, so a detection outside it, or without it, carries
// a time the cursor cannot trust; it is remembered at until, which is no
// earlier than any time it can truly have, so that it stays known for as
// long as any detection of the window.
func (d *detection) placeIn(since, until time.Time) {
	if d.lastProcessed.IsZero() || d.lastProcessed.Before(since) || d.lastProcessed.After(until) {
		d.cursorAt = until
	}
}

func (d *detection) metric() (telegraf.Metric, []string) {
	return alertMetric(d)
}

func (d *detection) countKey() countKey {
	return countKeyOf(d)
}
