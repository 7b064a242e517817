package microsoft_defender

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"net/url"
	"strings"
	"time"
	"unicode/utf8"

	"golang.org/x/time/rate"

	"github.com/influxdata/telegraf"
)

// reader reads one API for the poll, which owns the loop, retries, deduplication, emission and the cursor.
// A reader keeps no state: the chunk's walk holds what it needs between two requests.
type reader interface {
	// next is the request that goes on reading c; nil when c is read whole.
	next(c *chunk, k *known) *request
	// decode streams the records of the answer to emit until it says stop.
	decode(c *chunk, body io.Reader, emit func(record) bool) error
	// after moves c on with what the answer held.
	after(c *chunk, a *answer, k *known) progress
}

// known is what the poll knows beyond one request, for its reader.
type known struct {
	perRequest  int                                        // the most records one request may ask for
	service     serviceLimits                              // learned of the API, kept by the plugin across polls
	unreadable  func(from, to time.Time) (time.Time, bool) // the newest in [from, to]
	maxBodySize int64                                      // for messages
	log         telegraf.Logger
	warned      map[string]bool // warnings given once a poll, by key
}

// serviceLimits is what the SIEM reader learned of how many detections the API answers.
type serviceLimits struct {
	answered int // the most one answer to a limit held: the API answers so many
	cap      int // the most it answers, once it answered so few with more below; 0: none seen
}

// warnOncef logs a warning of this kind (key) once a poll.
func (k *known) warnOncef(key, format string, args ...any) {
	if k.warned[key] {
		return
	}
	if k.warned == nil {
		k.warned = make(map[string]bool)
	}
	k.warned[key] = true
	k.log.Warnf(format, args...)
}

// request is one request a reader asks the poll to send.
type request struct {
	url       *url.URL
	continues bool // a step of the reader: sent even past the budget or deadline
	// resumable: built from times alone, it may be sent a poll later; a
	// service's next link may by then be refused, or its offsets moved, so a
	// step that is not resumable waits for the rate limit past the deadline.
	resumable bool
	search    bool // the SIEM instant search: an unreadable answer is what it looks for, not an error
}

// answer is what one request returned.
type answer struct {
	decoded  int       // records decoded, new or not
	inWindow int       // records decoded whose cursor time is in the window
	fresh    int       // records emitted: not emitted before
	oldest   time.Time // smallest cursor time in the window decoded
	newest   time.Time // largest
	err      error     // how the request failed for good, after retries
	class    failureClass
}

// progress is what a reader reports after an answer, for the poll to act on.
type progress struct {
	settledAfter, settledBefore time.Time // read for good between them: the cursor may forget it
	unreadable                  time.Time // an instant passed over, unreadable
	outOfWindow, errors         int64     // for defender_poll
	err                         error     // why the chunk cannot be read on
	then                        *request  // the reader's next step; nil: ask next
}

// stopReason says why a poll stopped short of the API's time.
type stopReason int

const (
	notStopped       stopReason = iota
	stoppedBudget               // max_alerts_per_gather records were emitted
	stoppedDeadline             // the interval is used, or a wait would pass it
	stoppedCancelled            // Interrupt or Stop
	stoppedFailed               // a request failed for good (err)
)

// poll is one Gather's walk through the cursor.
type poll struct {
	reader     reader
	client     *apiClient
	cursor     *cursor
	known      known
	limiter    *rateLimit
	log        telegraf.Logger
	acc        telegraf.Accumulator
	now        func() time.Time
	sleep      func(ctx context.Context, d time.Duration) error
	maxRetries int

	budget         int       // records this poll may still emit
	deadline       time.Time // on the plugin's clock
	stats          pollStats
	counter        alertCounter
	chunk          *chunk // being read
	stopped        stopReason
	err            error
	throttledUntil time.Time // a Retry-After past the deadline
	delivery       *delivery // nil: alerts go straight to acc
}

// pollStats become the defender_poll metric.
type pollStats struct {
	requests, received, emitted, duplicates, errors int64

	skipped       int64 // records that could not be decoded at all
	invalidFields int64 // values left out of emitted records
	outOfWindow   int64 // records whose cursor time lay outside the window asked
	longIDs       int64 // records whose identity was over maxIdentityBytes
	forgottenIDs  int64 // identities forgotten past maxRememberedBytes
	unconfirmed   int64 // alerts sent to the outputs, not yet confirmed
	problems      int   // records with problems, logged up to maxProblemsLogged
	completed     bool  // at least one chunk was finished
}

// stop ends the poll short of the window's end.
func (p *poll) stop(reason stopReason, err error) {
	p.stopped, p.err = reason, err
}

// stopBefore stops the poll when the budget is spent or the deadline has come.
func (p *poll) stopBefore() bool {
	switch {
	case p.budget == 0:
		p.stop(stoppedBudget, nil)
	case !p.now().Before(p.deadline):
		p.log.Debug("The poll used its interval; the next poll goes on from here")
		p.stop(stoppedDeadline, nil)
	}
	return p.stopped != notStopped
}

// run reads up to end chunk by chunk and returns the end of the last chunk it worked on.
func (p *poll) run(ctx context.Context, end time.Time) time.Time {
	var countsAt time.Time
	for {
		c := p.cursor.next(end)
		if c == nil || p.stopBefore() {
			return countsAt
		}
		countsAt = c.End
		if !p.readChunk(ctx, c) {
			return countsAt
		}
		reachable := c.reachable(p.client.apiNow, p.cursor.plan.delay)
		short := reachable.Before(c.End)
		if short {
			if skew := p.now().Sub(p.client.apiNow); skew > maxClockSkew {
				p.log.Warnf("The host clock runs %s ahead of the API's (Date: %s): the window ends at the API's time minus delay",
					skew.Round(time.Second), p.client.apiNow.Format(time.RFC3339))
			}
			if !reachable.After(c.Start) {
				c.From, c.To = c.Start, c.End // read it all again once the API's time has passed its start
				return countsAt
			}
			c.End = reachable // beyond the API's own time there is nothing to read yet
		}
		p.cursor.complete()
		p.forget(time.Time{}, p.cursor.watermark.Add(-p.cursor.plan.overlap)) // no later window returns it
		p.stats.completed = true
		if short {
			return countsAt
		}
	}
}

// readChunk reads c until it is read whole (true) or the poll stops.
func (p *poll) readChunk(ctx context.Context, c *chunk) bool {
	p.chunk = c
	// A resumable step of the reader that a poll stopped before sending is
	// the next poll's first request: begun again from next(), a walk that
	// takes more requests in a row than a poll may send would never advance.
	req, step := c.resume, c.resume != nil
	c.resume = nil
	unanswered := func() bool {
		if step {
			c.resume = req
		}
		return false
	}
	for {
		if req == nil {
			if req = p.reader.next(c, &p.known); req == nil {
				return true
			}
		}
		if !req.continues && p.stopBefore() {
			return unanswered()
		}
		// Before a request, wait until the outputs confirmed enough alerts to read on.
		if d := p.delivery; d != nil && !d.waitForRoom(ctx, p.deadline.Sub(p.now())) {
			p.log.Debugf("%d alerts are not yet confirmed by the outputs: the next poll reads on", d.undelivered)
			p.stop(stoppedDeadline, nil)
			return unanswered()
		}
		sent := p.stats.requests
		a := p.send(ctx, req)
		if p.stopped != notStopped {
			if p.stopped == stoppedDeadline && req.search {
				p.log.Info("The search for the instant of a detection that cannot be read goes on in the next poll")
			}
			// One that went and was cut short is asked for again from the window.
			step = step && p.stats.requests == sent
			return unanswered()
		}
		pr := p.reader.after(c, &a, &p.known)
		p.stats.outOfWindow += pr.outOfWindow
		p.stats.errors += pr.errors
		if pr.settledBefore.After(pr.settledAfter) {
			// A later window starts overlap before the chunk's end.
			before := c.reachable(p.client.apiNow, p.cursor.plan.delay).Add(-p.cursor.plan.overlap)
			if pr.settledBefore.Before(before) {
				before = pr.settledBefore
			}
			p.forget(pr.settledAfter, before)
		}
		if !pr.unreadable.IsZero() {
			p.passOverUnreadable(pr.unreadable)
		}
		p.delivery.send(p.cursor, p.now()) // the position after the answer confirms its alerts
		if pr.err != nil {
			reason := stoppedFailed
			if ctx.Err() != nil { // the plugin's stopping is no failure
				reason = stoppedCancelled
			}
			p.stop(reason, pr.err)
			return false
		}
		req, step = pr.then, pr.then != nil && pr.then.resumable
	}
}

// forget lets the cursor forget what lies between after and before, but nothing that reading from the confirmed
// position, after a rollback or a restart, returns: a confirmed record read again is dropped, not counted twice.
func (p *poll) forget(after, before time.Time) {
	if from, ok := p.delivery.rereadFrom(p.cursor.plan.overlap); ok && from.Before(before) {
		before = from
	}
	p.cursor.forget(after, before)
}

// passOverUnreadable counts and reports an unreadable instant once.
func (p *poll) passOverUnreadable(at time.Time) {
	if p.cursor.unreadable[at] {
		p.log.Debugf("Passing over again the detections of %s, which cannot be read", at.Format(time.RFC3339Nano))
		return
	}
	p.cursor.unreadable[at] = true
	p.stats.skipped++
	p.log.Warnf("The records the %s holds at %s cannot be read (larger than max_body_size, %d bytes, alone or together, "+
		"or not JSON): they are skipped; raise max_body_size if they are large", p.client.name, at.Format(time.RFC3339Nano), p.known.maxBodySize)
}

// send sends one request, retrying transient failures max_retries times (after Retry-After or a backoff,
// never past the deadline) and a 401 once with a new token; what an attempt emitted stays emitted.
func (p *poll) send(ctx context.Context, req *request) answer {
	newToken := false
	for retries := 0; ; {
		a, err := p.attempt(ctx, req)
		if err == nil || p.stopped != notStopped {
			return a
		}
		if ctx.Err() != nil {
			p.stop(stoppedCancelled, err)
			return a
		}
		f := classify(err)
		if !req.search || f.class != failUnreadable {
			p.stats.errors++
		}
		if f.capped != nil {
			p.acc.AddError(f.capped)
		}
		if f.class == failToken && !newToken {
			newToken = true
			p.log.Warnf("Retrying at once with a new token: %v", err)
			continue
		}
		// Malformed JSON may be a passing fault: retried before it counts as unreadable.
		malformed := f.class == failUnreadable && !req.search && errors.As(err, new(*recordSyntaxError))
		if f.class != failTransient && !malformed || retries >= p.maxRetries {
			a.err, a.class = err, f.class
			return a
		}
		wait, why := f.after, "as Retry-After asks"
		if wait == 0 {
			wait, why = backoff(retries), "backing off"
		}
		if now := p.now(); !now.Add(wait).Before(p.deadline) {
			if f.after > 0 {
				p.throttledUntil = now.Add(f.after)
			}
			p.log.Warnf("Not retrying in this poll, the wait of %s would pass its deadline; the next poll resumes here: %v", wait, err)
			p.stop(stoppedDeadline, nil)
			return a
		}
		retries++
		p.log.Warnf("Retry %d of %d in %s (%s): %v", retries, p.maxRetries, wait.Round(time.Millisecond), why, err)
		if err := p.sleep(ctx, wait); err != nil {
			p.stop(stoppedCancelled, err)
			return a
		}
	}
}

// attempt waits for the rate limit, sends one request and takes its records.
func (p *poll) attempt(ctx context.Context, req *request) (answer, error) {
	var a answer
	if p.waitForRateLimit(ctx, req.continues && !req.resumable); p.stopped != notStopped {
		return a, nil
	}
	p.stats.requests++
	body, err := p.client.get(ctx, req.url)
	if err != nil {
		return a, err
	}
	defer body.Close()
	err = p.reader.decode(p.chunk, body, func(r record) bool { return p.take(r, &a) })
	if err != nil {
		return a, answerError(p.client.name, req.url.Host, err)
	}
	return a, nil
}

// take notes a record's time and emits it unless it was emitted before; false when the budget is spent.
func (p *poll) take(r record, a *answer) bool {
	problems := r.problems()
	if problems.skip != "" {
		a.decoded++
		p.stats.received++
		p.stats.skipped++
		p.logProblemf("%s skipped: %s", problems.where(), problems.skip)
		return true
	}
	t := r.cursorTime()
	if r.inWindow() {
		if a.inWindow == 0 || t.Before(a.oldest) {
			a.oldest = t
		}
		if t.After(a.newest) {
			a.newest = t
		}
		if t.After(p.chunk.Newest) {
			p.chunk.Newest = t
		}
		a.inWindow++
	}
	id := r.identity()
	if len(id) > maxIdentityBytes {
		if p.stats.longIDs++; p.stats.longIDs == 1 {
			p.log.Warnf("%s has an identity longer than %d bytes: a hash of it deduplicates it (defender_poll: long_ids)",
				problems.where(), maxIdentityBytes)
		}
	}
	// Held in memory and the state file: a hash stands for a long id, and for one that JSON would escape (six
	// bytes a character) or alter, so that maxRememberedBytes bounds the state file too.
	if len(id) > maxIdentityBytes || strings.ContainsFunc(id, escapedInJSON) {
		sum := sha256.Sum256([]byte(id))
		id = "sha256:" + hex.EncodeToString(sum[:])
	}
	fresh := p.cursor.isNew(id)
	if fresh && p.budget == 0 {
		p.stop(stoppedBudget, nil)
		return false
	}
	a.decoded++
	p.stats.received++
	if !fresh {
		p.stats.duplicates++
		return true
	}
	p.budget--
	p.stats.emitted++
	a.fresh++
	m, cut := r.metric()
	if len(cut) > 0 {
		p.logProblemf("Alert %q: fields %s longer than %d bytes were cut to that length", truncate(id, 128), strings.Join(cut, ", "), maxFieldBytes)
	}
	if len(problems.invalid) > 0 {
		p.stats.invalidFields += int64(len(problems.invalid))
		m.AddField("invalid_field_names", problems.fieldNames())
		p.logProblemf("%s (%q) emitted without the values that do not fit: %s", problems.where(), truncate(id, 128), problems)
	}
	if !r.inWindow() {
		if m.Time().IsZero() { // no time of the record could be read
			m.SetTime(eventTime(p.now(), id))
		}
		p.stats.outOfWindow++
		p.logProblemf("%s (%q): its time is outside the window asked for, or unknown; it is emitted, and the cursor does not use its time",
			problems.where(), truncate(id, 128))
	}
	if t.IsZero() {
		t = p.now() // the API placed it before now: remembered as long as a window can return it
	}
	id = p.cursor.remember(id, t)
	if d := p.delivery; d != nil {
		if d.add(m, id, r.countKey()); len(d.filling.metrics) >= min(trackingBatch, d.limit) {
			d.send(p.cursor, p.now())
		}
		return true
	}
	p.counter.add(r.countKey())
	p.acc.AddMetric(m)
	return true
}

const (
	maxIdentityBytes  = 512 // bounds what the cursor and the state hold per record
	maxProblemsLogged = 10  // records with problems logged a poll, the rest counted: a changed type floods nothing
)

// escapedInJSON reports a rune that encoding/json writes escaped, or replaces (invalid UTF-8).
func escapedInJSON(r rune) bool {
	return r < ' ' || strings.ContainsRune("\"\\<>&\u2028\u2029", r) || r == utf8.RuneError
}

// logProblemf logs a record's problem, up to maxProblemsLogged a poll.
func (p *poll) logProblemf(format string, args ...interface{}) {
	p.stats.problems++
	switch {
	case p.stats.problems <= maxProblemsLogged:
		p.log.Warnf(format, args...)
	case p.stats.problems == maxProblemsLogged+1:
		p.log.Warn("More records with problems in this poll are only counted (defender_poll: alerts_skipped, invalid_fields, out_of_window)")
	}
}

// rateLimit spreads requests (the limiter) and caps them: none goes within a minute of the one
// max_requests_per_minute before it, however the limiter bursts and rounds.
type rateLimit struct {
	*rate.Limiter
	sent []time.Time // a ring of the latest requests' times; next is the oldest
	next int
}

// waitForRateLimit waits for max_requests_per_minute, or stops the poll when the wait would pass its deadline,
// unless pastDeadline.
func (p *poll) waitForRateLimit(ctx context.Context, pastDeadline bool) {
	now := p.now()
	reservation := p.limiter.ReserveN(now, 1)
	r := p.limiter
	wait := max(reservation.DelayFrom(now), r.sent[r.next].Add(time.Minute).Sub(now), 0)
	if wait > 0 && !now.Add(wait).Before(p.deadline) && !pastDeadline {
		reservation.CancelAt(now)
		p.log.Debug("The rate limit (max_requests_per_minute) is reached: the next request waits for the next poll")
		p.stop(stoppedDeadline, nil)
		return
	}
	if wait > 0 {
		if err := p.sleep(ctx, wait); err != nil {
			p.stop(stoppedCancelled, err)
			return
		}
	}
	r.sent[r.next], r.next = now.Add(wait), (r.next+1)%len(r.sent)
}

// status: "ok" read whole, "partial" stopped short, "error" failed without progress.
func (p *poll) status() string {
	switch {
	case p.stopped == stoppedFailed && p.stats.emitted == 0 && !p.stats.completed:
		return "error"
	case p.stopped != notStopped:
		return "partial"
	default:
		return "ok"
	}
}
