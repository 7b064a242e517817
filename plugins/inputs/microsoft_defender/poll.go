package microsoft_defender

import (
	"context"
	"time"

	"github.com/influxdata/telegraf"
)

// poll is one Gather's walk through the cursor: it reads spans until the
// poll's window is read, the budget of detections is spent, or a request
// fails.
type poll struct {
	m       *MicrosoftDefender
	acc     telegraf.Accumulator
	budget  int // detections this poll may still emit
	stats   pollStats
	counter alertCounter
}

// pollStats become the defender_poll metric.
type pollStats struct {
	requests   int64
	received   int64
	emitted    int64
	duplicates int64
	errors     int64
	// backlog: the window could not be finished in this poll.
	backlog bool
	// completed: at least one chunk was finished.
	completed bool
}

// response is what one request returned.
type response struct {
	decoded     int       // detections decoded, new or not
	oldest      time.Time // smallest LastProcessedTimeUtc decoded
	interrupted bool      // reading stopped because the budget was spent
}

// run reads up to end, chunk by chunk, advancing the cursor after each
// completed chunk. It returns the end of the last chunk it worked on.
func (p *poll) run(ctx context.Context, end time.Time) (time.Time, error) {
	var countsAt time.Time
	for {
		sp := p.m.cursor.next(end, p.m.plan)
		if sp == nil {
			return countsAt, nil
		}
		if p.budget == 0 {
			p.stats.backlog = true
			return countsAt, nil
		}
		countsAt = sp.End
		done, err := p.readSpan(ctx, sp)
		if err != nil {
			return countsAt, err
		}
		if !done {
			p.stats.backlog = true
			return countsAt, nil
		}
		p.m.cursor.complete(time.Duration(p.m.Overlap))
		p.stats.completed = true
	}
}

// readSpan reads the span from its newest detections down. Each request
// asks for at most max_alerts_per_gather detections (or limit, when
// smaller); a response that holds exactly that many may have left older ones
// out, so the span's upper bound moves down to the oldest detection seen and
// the rest is requested. It returns false when the budget ran out first; the
// span then holds what is left, and detections emitted from its upper end
// are dropped as duplicates when it is read again.
func (p *poll) readSpan(ctx context.Context, sp *span) (bool, error) {
	limit := p.m.MaxAlertsPerGather
	if p.m.Limit > 0 && p.m.Limit < limit {
		limit = p.m.Limit
	}
	for !sp.empty() {
		if p.budget == 0 {
			return false, nil
		}
		r, err := p.request(ctx, sp.From, sp.To, limit)
		if err != nil || r.interrupted {
			return false, err
		}
		if r.decoded < limit {
			return true, nil
		}
		if r.oldest.Before(sp.To) {
			sp.To = r.oldest
			continue
		}
		// Every detection of the response shares the span's upper bound:
		// no limited request can get past it. Read that instant whole.
		p.m.Log.Warnf("%d or more detections share LastProcessedTimeUtc %s, more than one request with limit %d returns: reading them without a limit",
			limit, sp.To.Format(time.RFC3339Nano), limit)
		r, err = p.request(ctx, sp.To, sp.To, 0)
		if err != nil || r.interrupted {
			return false, err
		}
		sp.To = sp.To.Add(-tick)
	}
	return true, nil
}

// request sends one request and emits the new detections of its answer
// until the budget is spent.
func (p *poll) request(ctx context.Context, from, to time.Time, limit int) (response, error) {
	var r response
	p.stats.requests++
	_, err := p.m.backend.fetch(ctx, from, to, limit, func(d *detection) bool {
		if r.decoded == 0 || d.lastProcessed.Before(r.oldest) {
			r.oldest = d.lastProcessed
		}
		id := d.identity()
		if !p.m.cursor.isNew(id) {
			r.decoded++
			p.stats.received++
			p.stats.duplicates++
			return true
		}
		if p.budget == 0 {
			r.interrupted = true
			return false
		}
		r.decoded++
		p.stats.received++
		p.budget--
		p.stats.emitted++
		p.acc.AddMetric(alertMetric(d))
		p.counter.add(d)
		p.m.cursor.remember(id, d.lastProcessed)
		return true
	})
	if err != nil {
		p.stats.errors++
	}
	return r, err
}

// status is "ok" when the window was read whole, "partial" when the poll
// made progress but stopped short, "error" when it made none.
func (s *pollStats) status(err error) string {
	switch {
	case err != nil && s.emitted == 0 && !s.completed:
		return "error"
	case err != nil || s.backlog:
		return "partial"
	default:
		return "ok"
	}
}
