package microsoft_defender

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/influxdata/telegraf"
)

// stopReason says why a poll stopped reading before its window was read as
// far as the API's time allows. It is the one spelling of a stop: only the
// poll sets it (poll.stop), backends never see it, and Gather reports it.
type stopReason int

const (
	// notStopped: the window was read as far as the API's time allows.
	notStopped stopReason = iota
	// stoppedBudget: max_alerts_per_gather items were emitted; the next
	// new one is left for the next poll.
	stoppedBudget
	// stoppedDeadline: the poll used its interval, or a wait it would make
	// (Retry-After, a retry's backoff, max_requests_per_minute) would pass
	// its end.
	stoppedDeadline
	// stoppedCancelled: the plugin is stopping (Interrupt or Stop).
	stoppedCancelled
	// stoppedFailed: a request failed for good, or its answer could not be
	// read on (poll.err).
	stoppedFailed
)

// poll is one Gather's walk through the cursor: it reads spans until the
// poll's window is read, the budget of detections is spent, the deadline
// comes, or a request fails for good. It owns that walk; the backend only
// builds the requests, decodes their answers and moves the span.
type poll struct {
	m        *MicrosoftDefender
	acc      telegraf.Accumulator
	budget   int       // detections this poll may still emit
	deadline time.Time // on the plugin's clock
	stats    pollStats
	counter  alertCounter
	// span is the span being read, whose Newest the answers raise.
	span *span
	// stopped says why the poll stopped reading; err is the failure, for
	// stoppedFailed and stoppedCancelled.
	stopped stopReason
	err     error
	// given is what the backend is given (reading).
	given reading
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
	decoded  int       // items decoded, new or not
	inWindow int       // items decoded whose cursor time is in the window
	oldest   time.Time // smallest cursor time in the window decoded
	newest   time.Time // largest cursor time in the window decoded
	// err is how the request failed for good, after retries; the backend
	// says what that means for the span (advance).
	err error
}

// stop ends the poll's reading for reason; the window is left for the
// next poll.
func (p *poll) stop(reason stopReason, err error) {
	p.stopped, p.err = reason, err
	p.stats.backlog = true
}

// stopBefore stops the poll before a step when the budget is spent or the
// deadline has come.
func (p *poll) stopBefore() {
	switch {
	case p.budget == 0:
		p.stop(stoppedBudget, nil)
	case p.pastDeadline():
		p.stop(stoppedDeadline, nil)
	}
}

// run reads up to end, chunk by chunk, advancing the cursor after each
// completed chunk, until it is read or the poll stops (p.stopped). It
// returns the end of the last chunk it worked on.
func (p *poll) run(ctx context.Context, end time.Time) time.Time {
	var countsAt time.Time
	for {
		sp := p.m.cursor.next(end, p.m.plan)
		if sp == nil {
			return countsAt
		}
		if p.stopBefore(); p.stopped != notStopped {
			return countsAt
		}
		countsAt = sp.End
		p.span = sp
		if p.readSpan(ctx, sp); p.stopped != notStopped {
			return countsAt
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
			return countsAt
		}
	}
}

// readSpan reads sp request by request: it asks the backend for the next
// request, sends it, and has the backend move sp with what the answer
// held, until sp is read whole or the poll stops. Before each step it
// stops when the budget is spent or the deadline has come.
func (p *poll) readSpan(ctx context.Context, sp *span) {
	b := p.m.backend
	var req *request
	for {
		if req == nil {
			if req = b.next(sp, p.reading()); req == nil {
				return
			}
		}
		if !req.within {
			if p.stopBefore(); p.stopped != notStopped {
				return
			}
		}
		res := p.request(ctx, req)
		if p.stopped != notStopped {
			if p.stopped == stoppedDeadline && req.resumes != "" {
				p.m.Log.Info(req.resumes)
			}
			return
		}
		mv := b.advance(sp, req, &res, p.reading())
		p.stats.outOfWindow += mv.outOfWindow
		p.stats.errors += mv.errors
		req = mv.then
		switch mv.kind {
		case moveOn, moveSplit:
			// The span moved inside what is left: nothing to forget.
		case movePart:
			// What a later window, which starts at most overlap before the
			// chunk's end, can return again is kept.
			before := p.m.chunkEnd(sp).Add(-time.Duration(p.m.Overlap))
			if mv.forgetBefore.Before(before) {
				before = mv.forgetBefore
			}
			p.m.cursor.forget(mv.forgetAfter, before)
		case moveSkipInstant:
			p.skipUnreadableInstant(mv.at)
		case moveFewer:
			p.m.shrinkRequests(res.decoded)
		case moveDone:
			return
		case moveFailed:
			p.fail(ctx, mv.err)
			return
		}
	}
}

// reading is what the backend is given of the poll for its next call.
func (p *poll) reading() reading {
	if p.given.unreadable == nil {
		p.given = reading{unreadable: p.m.cursor.newestUnreadable, log: p.m.logger()}
	}
	p.given.limit = p.m.requestLimit()
	return p.given
}

// fail stops the poll for a request that failed for good; a failure that
// the plugin's stopping caused is no failure of the API.
func (p *poll) fail(ctx context.Context, err error) {
	if ctx.Err() != nil {
		p.stop(stoppedCancelled, err)
		return
	}
	p.stop(stoppedFailed, err)
}

// skipUnreadableInstant gives up the detections of one instant, which
// cannot be read within max_body_size or are not JSON; the backend moved
// the span past it, and requests have the usual size again. The instant is
// remembered, so that windows that read it again skip it at once, and it
// is reported once.
func (p *poll) skipUnreadableInstant(at time.Time) {
	if p.m.cursor.unreadable(at) {
		p.m.Log.Debugf("Skipping again the detections of %s, which cannot be read", at.Format(time.RFC3339Nano))
	} else {
		p.stats.skipped++
		p.m.warnf("The detections with LastProcessedTimeUtc %s cannot be read (larger than max_body_size, %d bytes, alone or together, "+
			"or not JSON): they are skipped; raise max_body_size if they are large", at.Format(time.RFC3339Nano), int64(p.m.MaxBodySize))
	}
	p.m.sizeLimit = 0
}

// request sends one request, retrying transient failures: at most
// max_retries times, after Retry-After or an exponential backoff with
// jitter, and never past the poll's deadline. A 401 is retried once at once
// with a new token. Detections emitted by a failed attempt stay emitted and
// are dropped as duplicates by the next. When the poll stops inside it,
// p.stopped says why.
func (p *poll) request(ctx context.Context, req *request) response {
	newToken := false
	for retries := 0; ; {
		r, err := p.attempt(ctx, req)
		if err == nil || p.stopped != notStopped {
			return r
		}
		if ctx.Err() != nil {
			p.stop(stoppedCancelled, err)
			return r
		}
		if !req.probe || !isUnreadable(err) {
			p.stats.errors++
		}
		if errors.Is(err, errBodyTooLarge) {
			p.m.shrinkRequests(r.decoded)
		}
		decision := classify(err)
		if decision.capped != nil {
			p.m.addError(p.acc, decision.capped)
		}
		if decision.newToken && !newToken {
			newToken = true
			p.m.warnf("Retrying at once with a new token: %v", err)
			continue
		}
		if !decision.retry || retries >= p.m.MaxRetries {
			r.err = err
			return r
		}
		wait, why := decision.after, "as Retry-After asks"
		if wait == 0 {
			wait, why = backoff(retries), "backing off"
		}
		if now := p.m.now(); !now.Add(wait).Before(p.deadline) {
			if decision.after > 0 {
				p.m.throttledUntil = now.Add(decision.after)
			}
			p.m.warnf("Not retrying in this poll, the wait of %s would pass its deadline; the next poll resumes here: %v", wait, err)
			p.stop(stoppedDeadline, nil)
			return r
		}
		retries++
		p.m.warnf("Retry %d of %d in %s (%s): %v", retries, p.m.MaxRetries, wait.Round(time.Millisecond), why, err)
		if err := p.m.sleep(ctx, wait); err != nil {
			p.stop(stoppedCancelled, err)
			return r
		}
	}
}

// attempt waits for the rate limiter, sends one request and emits the new
// items of its answer until the budget is spent: the poll then stops, and
// the false it answers the decoder with only ends the decoding.
func (p *poll) attempt(ctx context.Context, req *request) (response, error) {
	var r response
	if p.waitForRateLimit(ctx); p.stopped != notStopped {
		return r, nil
	}
	p.stats.requests++
	err := p.m.send(ctx, req, func(a alert) bool {
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
			p.stop(stoppedBudget, nil)
			return false
		}
		r.decoded++
		p.stats.received++
		p.budget--
		p.stats.emitted++
		m, cut := a.metric()
		if len(cut) > 0 {
			p.m.warnf("Alert %q: fields %s longer than %d bytes were cut to that length", truncate(id, 128), strings.Join(cut, ", "), maxFieldBytes)
		}
		if problems := a.problems(); len(problems.invalid) > 0 {
			p.stats.invalidFields += int64(len(problems.invalid))
			m.AddField("invalid_field_names", problems.fieldNames())
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

// send sends req and streams its answer, through the backend's decode, to
// emit until emit returns false.
func (m *MicrosoftDefender) send(ctx context.Context, req *request, emit func(alert) bool) error {
	body, err := m.client.get(ctx, req.url)
	if err != nil {
		return err
	}
	defer body.Close()
	if err := m.backend.decode(req, body, emit); err != nil {
		return &answerError{api: m.client.name, host: req.url.Host, err: err}
	}
	return nil
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

// waitForRateLimit keeps the plugin under max_requests_per_minute: it
// waits, or stops the poll when the wait would pass its deadline.
func (p *poll) waitForRateLimit(ctx context.Context) {
	now := p.m.now()
	reservation := p.m.limiter.ReserveN(now, 1)
	wait := reservation.DelayFrom(now)
	if wait <= 0 {
		return
	}
	if !now.Add(wait).Before(p.deadline) {
		reservation.CancelAt(now)
		p.m.Log.Debug("The rate limit (max_requests_per_minute) is reached: the next request waits for the next poll")
		p.stop(stoppedDeadline, nil)
		return
	}
	if err := p.m.sleep(ctx, wait); err != nil {
		p.stop(stoppedCancelled, err)
	}
}

// status is "ok" when the window was read whole, "partial" when the poll
// made progress or stopped short of its window, "error" when a request
// failed without progress.
func (s *pollStats) status(stopped stopReason) string {
	switch {
	case stopped == stoppedFailed && s.emitted == 0 && !s.completed:
		return "error"
	case stopped != notStopped || s.backlog:
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
	if m.API == "siem" && m.PageSize > 0 && m.PageSize < limit {
		limit = m.PageSize
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
	m.warnf("An answer grew past max_body_size (%d bytes) after %s: asking for at most %d per request until the chunk is read",
		int64(m.MaxBodySize), countOf(decoded, "detection"), m.sizeLimit)
}
