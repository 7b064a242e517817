package microsoft_defender

import (
	"maps"
	"slices"
	"strings"
	"time"
)

const (
	tick = 100 * time.Nanosecond // the resolution of the APIs' timestamps (7 fractional digits)
	// maxClockSkew is how far the host clock may run ahead of the API's, or a saved position lie in the future,
	// before it is said or distrusted.
	maxClockSkew = time.Minute
	// apiRetention is how long Defender keeps alerts: an older saved position would be walked a chunk at a time.
	apiRetention = 180 * 24 * time.Hour
)

// chunk is a stretch [Start, End] of the API's time, read by one or more polls; read whole, the watermark
// moves to End. From and To bound what is left: SIEM reads [From, To] down, Graph [From, End) up in parts
// [From, To). Newest is the latest time answers held. The walks are not saved: a restart begins them again.
type chunk struct {
	Start  time.Time `json:"start"`
	End    time.Time `json:"end"`
	From   time.Time `json:"from"`
	To     time.Time `json:"to"`
	Newest time.Time `json:"newest,omitzero"`

	siem   siemWalk
	graph  graphWalk
	resume *request // the reader's step that a poll stopped before sending
}

// cursor remembers how far the plugin has read and which records it emitted where later windows read again.
type cursor struct {
	plan       windowPlan
	watermark  time.Time            // the end of the last chunk read whole
	pending    *chunk               // started by a poll, not finished
	seen       map[string]time.Time // identity of each emitted record -> its cursor time
	unreadable map[time.Time]bool   // instants that cannot be read, kept as long as seen
}

// windowPlan holds the settings that shape the chunks.
type windowPlan struct {
	lookback  time.Duration // the first poll starts this long before its end
	overlap   time.Duration // each poll reads this much before the watermark again
	maxWindow time.Duration // longest chunk
	delay     time.Duration // a window ends this long before the API's time
}

// next is the chunk to read up to end: the pending one, else the oldest maxWindow of [watermark - overlap,
// end]; nil when all is read.
func (c *cursor) next(end time.Time) *chunk {
	if c.pending != nil {
		return c.pending
	}
	start := c.watermark.Add(-c.plan.overlap)
	if c.watermark.IsZero() {
		start = end.Add(-c.plan.lookback)
	} else if !c.watermark.Before(end) {
		return nil
	}
	stop := start.Add(c.plan.maxWindow)
	if stop.After(end) {
		stop = end
	}
	c.pending = &chunk{Start: start, End: stop, From: start, To: stop}
	return c.pending
}

// isNew reports whether a record with this identity was not emitted; one without cannot be deduplicated.
func (c *cursor) isNew(id string) bool {
	_, seen := c.seen[id]
	return id == "" || !seen
}

// remember notes an emitted record and returns the copy of id it keeps, apart from the record's memory.
func (c *cursor) remember(id string, at time.Time) string {
	if id == "" {
		return ""
	}
	id = strings.Clone(id)
	c.seen[id] = at
	return id
}

// forget drops what lies strictly between after and before, which no later request returns: memory stays at
// the overlap, and what the outputs have not confirmed (poll.forget), however large a chunk is.
func (c *cursor) forget(after, before time.Time) {
	between := func(t time.Time) bool { return t.After(after) && t.Before(before) }
	maps.DeleteFunc(c.seen, func(_ string, t time.Time) bool { return between(t) })
	maps.DeleteFunc(c.unreadable, func(t time.Time, _ bool) bool { return between(t) })
}

// maxRememberedBytes caps the identities held, and so the state file: one costs its length and about 40 bytes.
var maxRememberedBytes = 32 << 20

// trim forgets the oldest identities past maxRememberedBytes, an instant whole, and returns how many: a later
// overlap may emit them again, onto the same points.
func (c *cursor) trim() int {
	size := 0
	for id := range c.seen {
		size += len(id) + 40
	}
	if size <= maxRememberedBytes {
		return 0
	}
	type entry struct {
		at   time.Time
		size int
	}
	entries := make([]entry, 0, len(c.seen))
	for id, t := range c.seen {
		entries = append(entries, entry{t, len(id) + 40})
	}
	slices.SortFunc(entries, func(a, b entry) int { return a.at.Compare(b.at) })
	var cut time.Time
	for _, e := range entries {
		if size -= e.size; size <= maxRememberedBytes {
			cut = e.at
			break
		}
	}
	n := len(c.seen)
	maps.DeleteFunc(c.seen, func(_ string, t time.Time) bool { return !t.After(cut) })
	return n - len(c.seen)
}

// complete moves the watermark past the pending chunk, read whole.
func (c *cursor) complete() {
	c.watermark = c.pending.End
	c.pending = nil
}

// newestUnreadable returns the latest instant in [from, to] known to be unreadable.
func (c *cursor) newestUnreadable(from, to time.Time) (time.Time, bool) {
	var newest time.Time // no instant read is zero
	for at := range c.unreadable {
		if !at.Before(from) && !at.After(to) && at.After(newest) {
			newest = at
		}
	}
	return newest, !newest.IsZero()
}

// reachable is where c can end by the API's clock (the Date of its latest answer): no later than apiNow minus
// delay, but at least at the newest time read, which the API had reached whatever its Date says.
func (c *chunk) reachable(apiNow time.Time, delay time.Duration) time.Time {
	if apiNow.IsZero() {
		return c.End
	}
	// The Date header has whole seconds.
	limit := apiNow.Add(-delay + time.Second)
	if c.Newest.After(limit) {
		limit = c.Newest
	}
	if c.End.Before(limit) {
		return c.End
	}
	return limit
}

// position is how far the cursor got: the watermark, or the pending chunk's start when later.
func (c *cursor) position() time.Time {
	if c.pending != nil && c.pending.Start.After(c.watermark) {
		return c.pending.Start
	}
	return c.watermark
}
