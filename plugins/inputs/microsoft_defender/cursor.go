package microsoft_defender

import "time"

// cursor remembers how far the plugin has read and which detections it has
// emitted near that point, so that no detection is emitted twice.
type cursor struct {
	// watermark is the upper bound of the last completed window; zero
	// before the first completed poll.
	watermark time.Time
	// seen maps the identity of each emitted detection to its
	// LastProcessedTimeUtc; only detections that a later window can return
	// again are kept.
	seen map[string]time.Time
}

func newCursor() *cursor {
	return &cursor{seen: make(map[string]time.Time)}
}

// window returns the next window to request: from the watermark (or
// now - lookback on the first poll) to now. The lower bound is inclusive,
// so detections on the boundary come back and are dropped by identity.
func (c *cursor) window(now time.Time, lookback time.Duration) (since, until time.Time) {
	since = c.watermark
	if since.IsZero() {
		since = now.Add(-lookback)
	}
	return since, now
}

// isNew reports whether a detection with this identity has not been emitted.
// Detections without an identity cannot be deduplicated and always count
// as new.
func (c *cursor) isNew(id string) bool {
	if id == "" {
		return true
	}
	_, ok := c.seen[id]
	return !ok
}

func (c *cursor) remember(id string, lastProcessed time.Time) {
	if id != "" {
		c.seen[id] = lastProcessed
	}
}

// complete records that every detection up to until has been emitted and
// forgets the identities no later window can return.
func (c *cursor) complete(until time.Time) {
	c.watermark = until
	for id, t := range c.seen {
		if t.Before(until) {
			delete(c.seen, id)
		}
	}
}
