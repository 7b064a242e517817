package microsoft_defender

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/influxdata/telegraf"
)

// errPostponed ends a poll early without a failure: the next step would
// pass the poll's deadline, or the API asked to wait longer than that.
var errPostponed = errors.New("postponed to the next poll")

// poll is one Gather's walk through the cursor: it reads spans until the
// poll's window is read, the budget of detections is spent, the deadline
// comes, or a request fails for good.
type poll struct {
	m        *MicrosoftDefender
	acc      telegraf.Accumulator
	budget   int       // detections this poll may still emit
	deadline time.Time // on the plugin's clock
	stats    pollStats
	counter  alertCounter
}

// pollStats become the defender_poll metric.
type pollStats struct {
	requests   int64
	received   int64
	emitted    int64
	duplicates int64
	errors     int64
	// outside: items the API sent from outside the window asked for,
	// left out.
	outside int64
	// backlog: the window could not be finished in this poll.
	backlog bool
	// completed: at least one chunk was finished.
	completed bool
}

// response is what one request returned.
type response struct {
	decoded     int       // items decoded, new or not
	oldest      time.Time // smallest cursor time decoded
	newest      time.Time // largest cursor time decoded
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
		if p.budget == 0 || p.pastDeadline() {
			p.stats.backlog = true
			return countsAt, nil
		}
		countsAt = sp.End
		done, err := p.m.backend.readSpan(ctx, p, sp)
		if err != nil {
			p.stats.backlog = true
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

// request sends one request, retrying transient failures: at most
// max_retries times, after Retry-After or an exponential backoff with
// jitter, and never past the poll's deadline. A 401 is retried once at once
// with a new token. Detections emitted by a failed attempt stay emitted and
// are dropped as duplicates by the next.
func (p *poll) request(ctx context.Context, send sendFunc) (response, error) {
	newToken := false
	for retries := 0; ; {
		r, err := p.attempt(ctx, send)
		if err == nil || r.interrupted || ctx.Err() != nil {
			return r, err
		}
		p.stats.errors++
		if errors.Is(err, errBodyTooLarge) {
			p.m.shrinkRequests(r.decoded)
		}
		decision := classify(err)
		if decision.newToken && !newToken {
			newToken = true
			p.m.warnf("%v: retrying at once with a new token", err)
			continue
		}
		if !decision.retry || retries >= p.m.MaxRetries {
			return r, err
		}
		wait, why := decision.after, "as Retry-After asks"
		if wait == 0 {
			wait, why = backoff(retries), "backing off"
		}
		if now := p.m.now(); !now.Add(wait).Before(p.deadline) {
			if decision.after > 0 {
				p.m.throttledUntil = now.Add(decision.after)
			}
			p.m.warnf("%v: not retrying in this poll, the wait of %s would pass its deadline; the next poll resumes here", err, wait)
			return r, errPostponed
		}
		retries++
		p.m.warnf("%v: retry %d of %d in %s (%s)", err, retries, p.m.MaxRetries, wait.Round(time.Millisecond), why)
		if err := p.m.sleep(ctx, wait); err != nil {
			return r, err
		}
	}
}

// attempt waits for the rate limiter, sends one request and emits the new
// items of its answer until the budget is spent.
func (p *poll) attempt(ctx context.Context, send sendFunc) (response, error) {
	var r response
	if err := p.waitForRateLimit(ctx); err != nil {
		return r, err
	}
	p.stats.requests++
	err := send(ctx, func(a alert) bool {
		t := a.cursorTime()
		if r.decoded == 0 || t.Before(r.oldest) {
			r.oldest = t
		}
		if r.decoded == 0 || t.After(r.newest) {
			r.newest = t
		}
		id := a.identity()
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
		m, cut := a.metric()
		if len(cut) > 0 {
			p.m.warnf("alert %q: fields %s longer than %d bytes were cut to that length", truncate(id, 128), strings.Join(cut, ", "), maxFieldBytes)
		}
		p.acc.AddMetric(m)
		p.counter.add(a.countKey())
		p.m.cursor.remember(id, t)
		return true
	})
	return r, err
}

// pastDeadline reports whether the poll has used its interval: it then
// starts no new request, and the next poll goes on from there.
func (p *poll) pastDeadline() bool {
	if p.m.now().Before(p.deadline) {
		return false
	}
	p.m.Log.Debugf("The poll used its interval; the next poll goes on from here")
	return true
}

// waitForRateLimit keeps the plugin under max_requests_per_minute.
func (p *poll) waitForRateLimit(ctx context.Context) error {
	now := p.m.now()
	reservation := p.m.limiter.ReserveN(now, 1)
	wait := reservation.DelayFrom(now)
	if wait <= 0 {
		return nil
	}
	if !now.Add(wait).Before(p.deadline) {
		reservation.CancelAt(now)
		p.m.Log.Debugf("max_requests_per_minute reached: the next request waits for the next poll")
		return errPostponed
	}
	return p.m.sleep(ctx, wait)
}

// status is "ok" when the window was read whole, "partial" when the poll
// made progress or was postponed, "error" when it failed without progress.
func (s *pollStats) status(err error) string {
	switch {
	case err != nil && !errors.Is(err, errPostponed) && s.emitted == 0 && !s.completed:
		return "error"
	case err != nil || s.backlog:
		return "partial"
	default:
		return "ok"
	}
}

// maxRequestDetections caps what one request asks for, whatever the
// budget: the identities of one answer are held until the walk moves below
// them, and a retried request costs at most this much again.
const maxRequestDetections = 10000

// requestLimit is the number of detections one request asks for.
func (m *MicrosoftDefender) requestLimit() int {
	limit := min(m.MaxAlertsPerGather, maxRequestDetections)
	if m.Limit > 0 && m.Limit < limit {
		limit = m.Limit
	}
	if m.sizeLimit > 0 && m.sizeLimit < limit {
		limit = m.sizeLimit
	}
	return limit
}

// shrinkRequests halves the detections per request after an answer grew
// past max_body_size with decoded detections in it, so that the window can
// still be walked.
func (m *MicrosoftDefender) shrinkRequests(decoded int) {
	if decoded < 2 {
		return
	}
	m.sizeLimit = decoded / 2
	m.warnf("an answer grew past max_body_size (%d bytes) after %d detections: asking for at most %d per request from now on",
		int64(m.MaxBodySize), decoded, m.sizeLimit)
}
