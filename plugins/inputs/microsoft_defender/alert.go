package microsoft_defender

import (
	"fmt"
	"io"
	"net/url"
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

// where places the item for a log message, which it starts: "Detection 3
// at byte 1204".
func (p *recordProblems) where() string {
	return fmt.Sprintf("%s%s %d at byte %d", strings.ToUpper(p.noun[:1]), p.noun[1:], p.index, p.offset)
}

// fieldNames lists the fields left out, for the invalid_field_names field.
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

// backend reads one API for the poll (poll.go), which owns the walk: the
// loop over chunks and requests, the budget, the deadline, the rate limit,
// retries and why reading stopped. A backend sends nothing and keeps no part
// of the poll: for a span it builds the next request (next), decodes the
// answer to it (decode), and says how the span advances with what the
// answer held (advance).
type backend interface {
	// next is the request that goes on reading sp, or nil when sp is read
	// whole.
	next(sp *span, in reading) *request
	// decode streams the items of the answer to req to emit, one at a time,
	// until emit returns false; the poll wraps its error as an answerError.
	decode(req *request, body io.Reader, emit func(alert) bool) error
	// advance moves sp after req, from what its answer held (res.err: how
	// it failed for good, after retries), and says what kind of move it
	// was. It is not called when the poll stopped inside req.
	advance(sp *span, req *request, res *response, in reading) move
	// endpoint is the address of the alerts resource.
	endpoint() string
}

// reading is what a backend is given of the poll and the plugin, at each
// call: nothing else of them reaches it.
type reading struct {
	// limit is the most items one request may ask for: max_alerts_per_gather,
	// limit, and fewer after an answer grew past max_body_size.
	limit int
	// unreadable returns the newest instant in [from, to] known not to be
	// readable (cursor.skipped).
	unreadable func(from, to time.Time) (time.Time, bool)
	log        logger
}

// request is one request a backend asks the poll to send.
type request struct {
	url *url.URL
	// within: the request goes on with a step of the backend's (an instant
	// read whole, a probe of a search, a query sent again without an
	// option): the poll sends it even when its budget or deadline has come.
	within bool
	// probe: an unreadable answer (isUnreadable) is what the request
	// looks for, no failure, and is not counted as an error.
	probe bool
	// resumes is logged when the poll's deadline stops it inside this
	// request: what the next poll goes on with.
	resumes string
	// ask is what the backend asked, for its decode and advance.
	ask any
}

// move is how a span advanced after a request, as its backend tells the
// poll; the poll does what each kind needs of the cursor and the budget.
type move struct {
	kind moveKind
	// forgetAfter and forgetBefore bound, exclusive, the stretch of the
	// span read for good, for movePart: the cursor forgets the identities
	// in it that lie below the overlap.
	forgetAfter, forgetBefore time.Time
	// at is the instant given up, for moveSkipInstant.
	at time.Time
	// then is the request that goes on with the step; nil: the poll asks
	// next.
	then *request
	// outOfWindow and errors are added to defender_poll.
	outOfWindow, errors int64
	// err is why reading the span failed, for moveFailed.
	err error
}

type moveKind int

const (
	// moveOn: the span moved, or not yet (then says what follows).
	moveOn moveKind = iota
	// movePart: a stretch of the span is read whole (forgetAfter,
	// forgetBefore); the rest is read on.
	movePart
	// moveSplit: a part could not be read whole; the span's next part is
	// its first half.
	moveSplit
	// moveSkipInstant: the items of one instant (at) cannot be read; the
	// span was moved past it.
	moveSkipInstant
	// moveFewer: the answer could not be read; requests ask for fewer
	// items until the chunk is read.
	moveFewer
	// moveDone: the span is read whole.
	moveDone
	// moveFailed: the span cannot be read on (err).
	moveFailed
)

// logger is how a backend logs: the plugin's logger, with every secret
// blanked out of what is formatted, as in the plugin's own messages.
type logger struct {
	telegraf.Logger
	redact func(string) string
}

func (l logger) warnf(format string, args ...interface{}) {
	l.Warn(l.redact(fmt.Sprintf(format, args...)))
}

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
