package microsoft_defender

import (
	"context"
	"time"

	"github.com/influxdata/telegraf"
)

// delivery follows the alerts sent as tracking metrics, so that the saved state never runs ahead of what
// every output confirmed (in the execd binary: wrote to stdout); what was not taken is read again.
type delivery struct {
	acc telegraf.TrackingAccumulator
	max int // max_undelivered_alerts
	// limit may be in flight now: halved when a batch was not taken (a buffer smaller than max), grown back.
	limit       int
	sent        map[telegraf.TrackingID]*batch
	queue       []*batch // sent and not yet confirmed, oldest first
	undelivered int      // alerts sent and not yet settled
	filling     batch
	confirmed   position     // the cursor's after the last confirmed batch
	moved       bool         // confirmed changed since the state was saved
	failed      bool         // a batch was not delivered: the cursor goes back to confirmed
	counted     alertCounter // confirmed since the last counts: an alert read again is counted once
}

// batch is a group of alerts tracked as one, and the cursor's position after them.
type batch struct {
	metrics  []telegraf.Metric // while filling
	sentAt   time.Time
	ids      []string
	keys     []countKey
	at       position
	done, ok bool
}

// position is where the cursor stands, without its walks, as in the state file.
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

// rereadFrom is the earliest time that reading from the confirmed position returns: a pending chunk from its
// start (a SIEM walk) and its next window overlap before its end (a Graph part, the chunk after it).
func (d *delivery) rereadFrom(overlap time.Duration) (time.Time, bool) {
	if d == nil {
		return time.Time{}, false
	}
	if p := d.confirmed.pending; p != nil && p.End.Add(-overlap).Before(p.Start) {
		return p.End.Add(-overlap), true
	} else if p != nil {
		return p.Start, true
	}
	return d.confirmed.watermark.Add(-overlap), true
}

// trackingBatch is how many alerts are tracked as one group at most.
const trackingBatch = 1000

func newDelivery(acc telegraf.TrackingAccumulator, maxUndelivered int, c *cursor) *delivery {
	return &delivery{acc: acc, max: maxUndelivered, limit: maxUndelivered, sent: make(map[telegraf.TrackingID]*batch), confirmed: positionOf(c)}
}

// add holds an alert for the next batch.
func (d *delivery) add(m telegraf.Metric, id string, k countKey) {
	d.filling.metrics = append(d.filling.metrics, m)
	d.filling.ids = append(d.filling.ids, id)
	d.filling.keys = append(d.filling.keys, k)
}

// send sends the alerts held as one group whose delivery confirms c's position; with none held, the last
// group, or nothing unconfirmed, leaves the cursor at c.
func (d *delivery) send(c *cursor, now time.Time) {
	if d == nil {
		return
	}
	at := positionOf(c)
	switch {
	case len(d.filling.metrics) > 0:
		b := &batch{ids: d.filling.ids, keys: d.filling.keys, at: at, sentAt: now}
		id := d.acc.AddTrackingMetricGroup(d.filling.metrics)
		d.filling = batch{}
		d.sent[id] = b
		d.queue = append(d.queue, b)
		d.undelivered += len(b.ids)
	case len(d.queue) > 0:
		d.queue[len(d.queue)-1].at = at
	default: // a quiet move, which Gather saves when it is far enough
		d.confirmed = at
	}
}

// settle takes one batch's outcome and moves confirmed past the batches confirmed in order.
func (d *delivery) settle(info telegraf.DeliveryInfo) {
	b, ok := d.sent[info.ID()]
	if !ok {
		return
	}
	delete(d.sent, info.ID())
	d.undelivered -= len(b.ids)
	b.done, b.ok = true, info.Delivered()
	if b.ok {
		d.limit = min(d.max, d.limit+max(1, len(b.ids)/8))
		for _, k := range b.keys {
			d.counted.add(k)
		}
		b.keys, d.moved = nil, true // confirmed out of order too: the state's seen keeps its ids
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

// waitForRoom waits until fewer than limit alerts are undelivered (true), a batch failed, ctx ends or until passes.
func (d *delivery) waitForRoom(ctx context.Context, until time.Duration) bool {
	d.drain()
	timeout := time.After(until)
	for d.undelivered >= d.limit && !d.failed {
		select {
		case info := <-d.acc.Delivered():
			d.settle(info)
		case <-ctx.Done():
			return false
		case <-timeout:
			return false
		}
	}
	return !d.failed
}

// rollback puts the cursor back at confirmed and forgets the alerts not delivered, so that they are read and
// sent again (those delivered are dropped as duplicates); it returns how many.
func (d *delivery) rollback(c *cursor) int {
	n := 0
	for _, b := range d.queue {
		if b.ok {
			continue
		}
		for _, id := range b.ids {
			delete(c.seen, id)
		}
		n += len(b.ids)
	}
	d.queue, d.failed = nil, false
	c.watermark, c.pending = d.confirmed.watermark, nil
	if d.confirmed.pending != nil {
		p := *d.confirmed.pending
		c.pending = &p
	}
	return n
}
