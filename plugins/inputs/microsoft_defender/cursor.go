package microsoft_defender

import (
	"strings"
	"time"
)

// tick is the resolution of the SIEM API's timestamps (7 fractional digits).
const tick = 100 * time.Nanosecond

// span is the part of one chunk of the timeline still to be read. For the
// SIEM API, the detections with LastProcessedTimeUtc in [From, To], both
// bounds inclusive, To moving down; for Graph, the alert versions with
// lastUpdateDateTime in [From, End), read in parts [From, To) with From
// moving up. When the chunk is done, the watermark moves to End.
type span struct {
	Start time.Time `json:"start"`
	End   time.Time `json:"end"`
	From  time.Time `json:"from"`
	To    time.Time `json:"to"`
	// Newest is the latest cursor time inside the span that its answers
	// held: a time the API had reached (see chunkEnd).
	Newest time.Time `json:"newest,omitzero"`
}

func (s *span) empty() bool {
	return s.To.Before(s.From)
}

// cursor remembers how far the plugin has read and which detections it
// emitted in the stretch that later windows read again, so that every
// detection is emitted exactly once.
type cursor struct {
	// watermark is the upper bound of the last completed chunk; zero
	// before the first one completes.
	watermark time.Time
	// pending is a chunk that a poll started but did not finish.
	pending *span
	// seen maps the identity of each emitted detection to its
	// LastProcessedTimeUtc, for the detections a later request can return.
	seen map[string]time.Time
	// skipped holds the instants whose detections cannot be read, for as
	// long as seen would hold them.
	skipped map[time.Time]bool
}

func newCursor() *cursor {
	return &cursor{seen: make(map[string]time.Time), skipped: make(map[time.Time]bool)}
}

// unreadable records an instant that cannot be read, and reports whether
// it was known.
func (c *cursor) unreadable(at time.Time) bool {
	known := c.skipped[at]
	c.skipped[at] = true
	return known
}

// newestUnreadable returns the latest instant in [from, to] known to be
// unreadable.
func (c *cursor) newestUnreadable(from, to time.Time) (time.Time, bool) {
	var newest time.Time
	found := false
	for at := range c.skipped {
		if !at.Before(from) && !at.After(to) && (!found || at.After(newest)) {
			newest, found = at, true
		}
	}
	return newest, found
}

// windowPlan holds the settings that shape the windows.
type windowPlan struct {
	lookback  time.Duration // the first poll starts this long before its end
	overlap   time.Duration // each poll re-reads this much before the watermark
	maxWindow time.Duration // longest chunk one request covers
}

// next returns the span to read next for a poll whose window ends at end,
// or nil when everything up to end has been read. An unfinished chunk comes
// first; otherwise the window [watermark - overlap, end] is cut into chunks
// of at most maxWindow, oldest first.
func (c *cursor) next(end time.Time, plan windowPlan) *span {
	if c.pending != nil {
		return c.pending
	}
	start := c.watermark.Add(-plan.overlap)
	if c.watermark.IsZero() {
		start = end.Add(-plan.lookback)
	} else if !c.watermark.Before(end) {
		return nil
	}
	chunkEnd := start.Add(plan.maxWindow)
	if chunkEnd.After(end) {
		chunkEnd = end
	}
	c.pending = &span{Start: start, End: chunkEnd, From: start, To: chunkEnd}
	return c.pending
}

// isNew reports whether a detection with this identity has not been
// emitted. Detections without an identity cannot be deduplicated and
// always count as new.
func (c *cursor) isNew(id string) bool {
	if id == "" {
		return true
	}
	_, ok := c.seen[id]
	return !ok
}

func (c *cursor) remember(id string, lastProcessed time.Time) {
	if id != "" {
		// A copy: id may share its memory with every string of its
		// detection (see detectionDecoder), which must not live as long.
		c.seen[strings.Clone(id)] = lastProcessed
	}
}

// forget drops the identities with a time strictly between after and
// before (all before it when after is zero): a span read downward (SIEM) or upward (Graph) never asks for that
// stretch again, and the next window starts at the chunk's end minus the
// overlap. This keeps memory to the overlap however large a chunk is.
func (c *cursor) forget(after, before time.Time) {
	if !after.Before(before) {
		return
	}
	for id, t := range c.seen {
		if t.After(after) && t.Before(before) {
			delete(c.seen, id)
		}
	}
	for at := range c.skipped {
		if at.After(after) && at.Before(before) {
			delete(c.skipped, at)
		}
	}
}

// complete records that the pending chunk has been read whole, and forgets
// the identities that no later window, which starts at most overlap before
// the new watermark, can return.
func (c *cursor) complete(overlap time.Duration) {
	c.watermark = c.pending.End
	c.pending = nil
	c.forget(time.Time{}, c.watermark.Add(-overlap))
}
