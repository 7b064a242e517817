package microsoft_defender

import (
	"context"
	"time"

	"github.com/influxdata/telegraf"
)

// delivery follows the alerts sent to Telegraf's outputs as tracking
// metrics, so that the saved state never runs ahead of what every output
// confirmed: what an output rejected, or Telegraf dropped from a full
// buffer, is read again. It exists when the host hands out a tracking
// accumulator: Telegraf with the plugin built in, and the execd binary,
// where "confirmed" means written to stdout.
type delivery struct {
	acc telegraf.TrackingAccumulator
	max int // max_undelivered_alerts
	// limit is what may be in flight now: halved when an output did not
	// take a batch, for a buffer smaller than max, grown back as batches are
	// confirmed.
	limit       int
	sent        map[telegraf.TrackingID]*batch
	queue       []*batch // sent and not yet confirmed, oldest first
	undelivered int      // alerts sent and not yet settled
	filling     batch
	// confirmed is the cursor's position after the last confirmed batch;
	// moved tells that it changed since the state was saved.
	confirmed position
	moved     bool
	failed    bool // a batch was not delivered: the cursor goes back to confirmed
	// counted holds the alerts confirmed since the last poll's counts: an
	// alert read again after a rollback is counted once.
	counted alertCounter
}

// batch is a group of alerts tracked as one, and the cursor's position after them.
type batch struct {
	metrics  []telegraf.Metric // while filling
	n        int               // alerts, once sent
	sentAt   time.Time
	ids      []string
	keys     []countKey
	at       position
	done, ok bool
}

// position is where the cursor stands; its walks are not part of it, as in the state file.
type position struct {
	watermark time.Time
	pending   *chunk
}

func positionOf(c *cursor) position {
	p := position{watermark: c.watermark}
	if c.pending != nil {
		p.pending = &chunk{Start: c.pending.Start, End: c.pending.End, From: c.pending.From, To: c.pending.To, Newest: c.pending.Newest}
	}
	return p
}

// trackingBatch is how many alerts are tracked as one group at most.
const trackingBatch = 1000

func newDelivery(acc telegraf.TrackingAccumulator, maxUndelivered int, c *cursor) *delivery {
	return &delivery{acc: acc, max: maxUndelivered, limit: maxUndelivered, sent: make(map[telegraf.TrackingID]*batch), confirmed: positionOf(c)}
}

// add holds an alert for the next batch; send sends it.
func (d *delivery) add(m telegraf.Metric, id string, k countKey) {
	d.filling.metrics = append(d.filling.metrics, m)
	d.filling.ids = append(d.filling.ids, id)
	d.filling.keys = append(d.filling.keys, k)
}

// send sends the alerts held as one tracked group which, once delivered,
// confirms the cursor's position c. With none held, c is where the last
// group, or nothing unconfirmed, leaves the cursor.
func (d *delivery) send(c *cursor, now time.Time) {
	if d == nil {
		return
	}
	at := positionOf(c)
	switch {
	case len(d.filling.metrics) > 0:
		b := &batch{n: len(d.filling.metrics), ids: d.filling.ids, keys: d.filling.keys, at: at, sentAt: now}
		id := d.acc.AddTrackingMetricGroup(d.filling.metrics)
		d.filling = batch{}
		d.sent[id] = b
		d.queue = append(d.queue, b)
		d.undelivered += b.n
	case len(d.queue) > 0:
		d.queue[len(d.queue)-1].at = at
	default: // nothing sent nor unconfirmed: a quiet move, which Gather saves when it is far enough
		d.confirmed = at
	}
}

// settle takes the outcome of one batch and moves the confirmed position
// past every batch confirmed in order.
func (d *delivery) settle(info telegraf.DeliveryInfo) {
	b, ok := d.sent[info.ID()]
	if !ok {
		return
	}
	delete(d.sent, info.ID())
	d.undelivered -= b.n
	b.done, b.ok = true, info.Delivered()
	if b.ok {
		d.limit = min(d.max, d.limit+max(1, b.n/8))
		for _, k := range b.keys {
			d.counted.add(k)
		}
		b.keys = nil
	} else if !d.failed {
		d.failed, d.limit = true, max(1, d.limit/2)
	}
	for len(d.queue) > 0 && d.queue[0].done && d.queue[0].ok {
		d.confirmed, d.moved = d.queue[0].at, true
		d.queue = d.queue[1:]
	}
}

// drain settles the outcomes that arrived, without waiting.
func (d *delivery) drain() {
	for {
		select {
		case info := <-d.acc.Delivered():
			d.settle(info)
		default:
			return
		}
	}
}

// waitForRoom waits until fewer than max alerts are undelivered, an
// outcome says to roll back, ctx ends or until passes; false if there is
// no room.
func (d *delivery) waitForRoom(ctx context.Context, until time.Duration) bool {
	d.drain()
	if d.failed || d.undelivered < d.limit {
		return !d.failed
	}
	timer := time.NewTimer(until)
	defer timer.Stop()
	for d.undelivered >= d.limit && !d.failed {
		select {
		case info := <-d.acc.Delivered():
			d.settle(info)
		case <-ctx.Done():
			return false
		case <-timer.C:
			return false
		}
	}
	return !d.failed
}

// rollbackDue reports whether a batch was not delivered and every batch
// sent has its outcome: rolling back earlier would send again what an
// output may still take.
func (d *delivery) rollbackDue() bool {
	return d.failed && len(d.sent) == 0
}

// rollback puts the cursor back at the confirmed position and forgets the
// alerts of the batches not delivered, so that they are read and sent
// again; those delivered are dropped as duplicates when read again. It
// returns how many alerts are sent again.
func (d *delivery) rollback(c *cursor) int {
	n := 0
	for _, b := range d.queue {
		if b.ok {
			continue
		}
		for _, id := range b.ids {
			delete(c.seen, id)
		}
		n += b.n
	}
	d.queue, d.failed = nil, false
	c.watermark, c.pending = d.confirmed.watermark, nil
	if d.confirmed.pending != nil {
		p := *d.confirmed.pending
		c.pending = &p
	}
	return n
}

// stalledSince is when the oldest batch still unconfirmed was sent, if
// that was before cutoff: an output is down, or refuses a document of it.
func (d *delivery) stalledSince(cutoff time.Time) (time.Time, bool) {
	if d == nil || len(d.queue) == 0 || !d.queue[0].sentAt.Before(cutoff) {
		return time.Time{}, false
	}
	return d.queue[0].sentAt, true
}

// unconfirmed is the identities sent in batches not yet confirmed.
func (d *delivery) unconfirmed() map[string]bool {
	ids := make(map[string]bool)
	for _, b := range d.queue {
		for _, id := range b.ids {
			ids[id] = true
		}
	}
	return ids
}
