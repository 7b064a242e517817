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
	// span is the span being read, whose Newest the answers raise.
	span *span
}

// pollStats become the defender_poll metric.
type pollStats struct {
	requests   int64
	received   int64
	emitted    int64
	duplicates int64
	errors     int64
	// skipped: items that could not be decoded at all, not emitted.
	skipped int64
	// invalidFields: values left out of emitted items.
	invalidFields int64
	// outOfWindow: items whose cursor time lay outside the request's window.
	outOfWindow int64
	// problemsLogged: items whose problems this poll logged one by one.
	problemsLogged int
	// backlog: the window could not be finished in this poll.
	backlog bool
	// completed: at least one chunk was finished.
	completed bool
}

// response is what one request returned.
type response struct {
	decoded     int       // items decoded, new or not
	inWindow    int       // items decoded whose cursor time is in the window
	oldest      time.Time // smallest cursor time in the window decoded
	newest      time.Time // largest cursor time in the window decoded
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
		p.span = sp
		done, err := p.m.backend.readSpan(ctx, p, sp)
		if err != nil {
			p.stats.backlog = true
			return countsAt, err
		}
		if !done {
			p.stats.backlog = true
			return countsAt, nil
		}
		complete, clamped := p.m.clampToServerClock(sp)
		if complete {
			p.m.cursor.complete(time.Duration(p.m.Overlap))
			p.stats.completed = true
			// An answer too large for one chunk says little of the next.
			p.m.sizeLimit = 0
		}
		if clamped {
			// Beyond the API's own time there is nothing to read yet.
			return countsAt, nil
		}
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
		if decision.capped != nil {
			p.m.addError(p.acc, decision.capped)
		}
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
		if skip := a.problems().skip; skip != "" {
			r.decoded++
			p.stats.received++
			p.stats.skipped++
			p.logProblemf("%s skipped: %s", a.problems().where(), skip)
			return true
		}
		t := a.cursorTime()
		if a.inWindow() {
			if r.inWindow == 0 || t.Before(r.oldest) {
				r.oldest = t
			}
			if r.inWindow == 0 || t.After(r.newest) {
				r.newest = t
			}
			if p.span != nil && t.After(p.span.Newest) {
				p.span.Newest = t
			}
			r.inWindow++
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
		if problems := a.problems(); len(problems.invalid) > 0 {
			p.stats.invalidFields += int64(len(problems.invalid))
			m.AddField("invalid_fields", problems.fieldNames())
			p.logProblemf("%s (%q) emitted without the values that do not fit: %s", problems.where(), truncate(id, 128), problems)
		}
		if !a.inWindow() {
			if m.Time().IsZero() {
				// No time of the item could be read: it is stamped when read.
				m.SetTime(atTick(p.m.now(), hashOf(id)))
			}
			p.stats.outOfWindow++
			p.logProblemf("%s (%q): its time is outside the window asked for, or unknown; it is emitted, and the cursor does not use its time",
				a.problems().where(), truncate(id, 128))
		}
		p.acc.AddMetric(m)
		p.counter.add(a.countKey())
		if t.IsZero() {
			// No time the cursor can use: the API placed the item at some
			// time before now, so remembering it at now keeps it known for
			// as long as any window can return it.
			t = p.m.now()
		}
		p.m.cursor.remember(id, t)
		return true
	})
	return r, err
}

// maxProblemsLogged is how many items with problems one poll logs one by
// one; the rest are only counted, so that a service that changes a type in
// every item does not flood the log.
const maxProblemsLogged = 10

// logProblemf warns about an item that could not be decoded whole.
func (p *poll) logProblemf(format string, args ...interface{}) {
	p.stats.problemsLogged++
	switch {
	case p.stats.problemsLogged <= maxProblemsLogged:
		p.m.warnf(format, args...)
	case p.stats.problemsLogged == maxProblemsLogged+1:
		p.m.warnf("More items with problems in this poll are only counted (defender_poll: alerts_skipped, invalid_fields, out_of_window)")
	}
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

// shrinkRequests lowers the detections per request after an answer grew
// past max_body_size or broke, to those that were decoded whole, or half of
// the last limit, down to one, so that the window can still be walked.
func (m *MicrosoftDefender) shrinkRequests(decoded int) {
	// The detections decoded fit: a request for as many fits too.
	limit := max(1, decoded)
	if m.sizeLimit > 0 && limit >= m.sizeLimit {
		limit = max(1, m.sizeLimit/2)
	}
	if limit == m.sizeLimit {
		return
	}
	m.sizeLimit = limit
	m.warnf("An answer grew past max_body_size (%d bytes) after %d detections: asking for at most %d per request until the chunk is read",
		int64(m.MaxBodySize), decoded, m.sizeLimit)
}
