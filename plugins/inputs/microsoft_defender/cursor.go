package microsoft_defender

import (
	"slices"
	"strings"
	"time"
)

// tick is the resolution of the APIs' timestamps (7 fractional digits).
const tick = 100 * time.Nanosecond

// maxClockSkew is how far the host clock may run ahead of the API's before
// the plugin says so, and how far a saved position may lie in the future
// before it is distrusted.
const maxClockSkew = time.Minute

// chunk is a stretch [Start, End] of the API's time that one or more polls
// read; read whole, the watermark moves to End. From and To bound what is
// left: SIEM reads [From, To] with To moving down, Graph [From, End) in
// parts [From, To) with From moving up. Newest is the latest time answers
// held. The walks are not saved: a restart begins them again.
type chunk struct {
	Start  time.Time `json:"start"`
	End    time.Time `json:"end"`
	From   time.Time `json:"from"`
	To     time.Time `json:"to"`
	Newest time.Time `json:"newest,omitzero"`

	siem  siemWalk
	graph graphWalk
}

// cursor remembers how far the plugin has read and which records it emitted
// where later windows read again, so that every record is emitted once.
type cursor struct {
	watermark  time.Time            // the end of the last chunk read whole
	pending    *chunk               // started by a poll, not finished
	seen       map[string]time.Time // identity of each emitted record -> its cursor time
	unreadable map[time.Time]bool   // instants that cannot be read, kept as long as seen
}

func newCursor() *cursor {
	return &cursor{seen: make(map[string]time.Time), unreadable: make(map[time.Time]bool)}
}

// windowPlan holds the settings that shape the chunks.
type windowPlan struct {
	lookback  time.Duration // the first poll starts this long before its end
	overlap   time.Duration // each poll reads this much before the watermark again
	maxWindow time.Duration // longest chunk
	delay     time.Duration // a window ends this long before the API's time
}

// next is the chunk to read up to end: the pending one, else the oldest
// maxWindow of [watermark - overlap, end]; nil when all is read.
func (c *cursor) next(end time.Time, plan windowPlan) *chunk {
	if c.pending != nil {
		return c.pending
	}
	start := c.watermark.Add(-plan.overlap)
	if c.watermark.IsZero() {
		start = end.Add(-plan.lookback)
	} else if !c.watermark.Before(end) {
		return nil
	}
	stop := start.Add(plan.maxWindow)
	if stop.After(end) {
		stop = end
	}
	c.pending = &chunk{Start: start, End: stop, From: start, To: stop}
	return c.pending
}

// isNew reports whether a record with this identity was not emitted; one
// without an identity cannot be deduplicated.
func (c *cursor) isNew(id string) bool {
	if id == "" {
		return true
	}
	_, ok := c.seen[id]
	return !ok
}

// remember notes an emitted record and returns the copy of id it keeps: id
// may share its memory with the whole record.
func (c *cursor) remember(id string, at time.Time) string {
	if id == "" {
		return ""
	}
	id = strings.Clone(id)
	c.seen[id] = at
	return id
}

// forget drops what lies strictly between after and before, where no later
// request returns: memory stays at the overlap however large a chunk is.
func (c *cursor) forget(after, before time.Time) {
	if !after.Before(before) {
		return
	}
	for id, t := range c.seen {
		if t.After(after) && t.Before(before) {
			delete(c.seen, id)
		}
	}
	for at := range c.unreadable {
		if at.After(after) && at.Before(before) {
			delete(c.unreadable, at)
		}
	}
}

// maxRememberedBytes caps the identities held for deduplication, and so the
// state file: an identity costs its length and about 40 bytes of time.
var maxRememberedBytes = 32 << 20

// trim forgets the identities of the oldest records past maxRememberedBytes
// and returns how many: a later overlap may emit them again, onto the same
// points, but memory and the state file stay bounded.
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
	// Forget from the oldest until the rest fit; an instant goes whole.
	var cut time.Time
	for _, e := range entries {
		if size -= e.size; size <= maxRememberedBytes {
			cut = e.at
			break
		}
	}
	forgotten := 0
	for id, t := range c.seen {
		if !t.After(cut) {
			delete(c.seen, id)
			forgotten++
		}
	}
	return forgotten
}

// complete moves the watermark past the pending chunk, read whole, and
// forgets what no later window (overlap before it) can return.
func (c *cursor) complete(overlap time.Duration) {
	c.watermark = c.pending.End
	c.pending = nil
	c.forget(time.Time{}, c.watermark.Add(-overlap))
}

// markUnreadable records an instant whose detections cannot be read, and
// reports whether it was known.
func (c *cursor) markUnreadable(at time.Time) bool {
	known := c.unreadable[at]
	c.unreadable[at] = true
	return known
}

// newestUnreadable returns the latest instant in [from, to] known to be
// unreadable.
func (c *cursor) newestUnreadable(from, to time.Time) (time.Time, bool) {
	var newest time.Time
	found := false
	for at := range c.unreadable {
		if !at.Before(from) && !at.After(to) && (!found || at.After(newest)) {
			newest, found = at, true
		}
	}
	return newest, found
}

// reachable is where c can end by the API's clock (apiNow, the Date of its
// latest answer): no later than apiNow minus delay, but at least at the
// newest time read, which the API had reached whatever its Date says.
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

// apiRetention is how long Defender keeps alerts: a saved position older
// than that (a wrong clock, an edited state) would be walked a chunk at a
// time through years where nothing can be read.
const apiRetention = 180 * 24 * time.Hour

// position is how far the cursor got: the watermark, or the pending chunk's
// start when later.
func (c *cursor) position() time.Time {
	if c.pending != nil && c.pending.Start.After(c.watermark) {
		return c.pending.Start
	}
	return c.watermark
}
