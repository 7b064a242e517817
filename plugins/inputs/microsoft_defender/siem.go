package microsoft_defender

import (
	"errors"
	"fmt"
	"io"
	"net/url"
	"strconv"
	"time"
)

// siemTimeLayout is how request bounds are sent: UTC, 7 fractional digits, Z.
const siemTimeLayout = "2006-01-02T15:04:05.0000000Z"

// siemReader reads the SIEM alerts API from a chunk's newest detection down: the API answers the newest
// `limit`, so after a full answer the chunk's upper bound moves down to the oldest seen.
type siemReader struct {
	endpoint                 *url.URL
	machineGroups            []string
	deviceCreatedMachineTags string
	cloudCreatedMachineTags  string
}

// siemWalk is what the SIEM reader needs between two requests of a chunk.
type siemWalk struct {
	sizeCap int            // detections per request after an answer grew past max_body_size; 0: none
	search  *instantSearch // for the instant of a newest detection that cannot be read
	asked   *siemAsk       // what the request built last asks for
	checked bool           // a full answer of this chunk was shown to hold the newest
	// reasked: the detections of the latest short answer below which a check found more, the window then read
	// again; 0: none. An honest service answers more again (what turned up late), a lowering one as few.
	reasked int
	// rechecked: a check found a detection above a full answer, and the window's top was read again.
	rechecked bool
	occupied  time.Time // To after a full answer: the next answer must hold a detection there
	// coarse: an answer lacked one there, so the service reads untilTimeUtc exclusively or to the millisecond:
	// untilTimeUtc is rounded up past the instant, and a millisecond is read whole where an instant was.
	coarse bool
}

// siemAsk asks for the newest limit detections (all when 0) with LastProcessedTimeUtc in [since, until].
type siemAsk struct {
	since, until time.Time
	sent         time.Time // untilTimeUtc as sent
	limit        int
	step         siemStep
	known        time.Time // the newest instant known to be unreadable, asked above; zero: none
	knownTry     bool      // a search step trying the known instant
	full         *fullAnswer
}

// fullAnswer is an answer that a siemCheck step checks before the walk moves below it, or a short one
// that a siemBelow step checks.
type fullAnswer struct {
	limit          int // the detections it held
	asked          int // limit as sent
	oldest, newest time.Time
}

type siemStep int

const (
	siemWindow  siemStep = iota // the newest detections of the chunk
	siemInstant                 // every detection of one instant
	siemSearch                  // one detection from a time up, for searchOn
	siemCheck                   // one detection above a full answer's newest: there must be none
	// siemBelow: below a short answer's oldest, with the rest of its oldest instant (millisecond, for a service
	// reading the bounds so) unless the answer held one instant: any more means the service lowered limit.
	siemBelow
)

// ask builds the request for ask, which the walk keeps for after.
func (r *siemReader) ask(c *chunk, ask *siemAsk) *request {
	c.siem.asked = ask
	ask.sent = ask.until
	if c.siem.coarse && (ask.step == siemWindow || ask.step == siemInstant) || ask.step == siemBelow && ask.until.Equal(ask.full.oldest) {
		ask.sent = ask.until.Truncate(time.Millisecond).Add(time.Millisecond)
	}
	q := r.endpoint.Query()
	q.Set("sinceTimeUtc", ask.since.UTC().Format(siemTimeLayout))
	q.Set("untilTimeUtc", ask.sent.UTC().Format(siemTimeLayout))
	if ask.limit > 0 {
		q.Set("limit", strconv.Itoa(ask.limit))
	}
	for _, g := range r.machineGroups {
		q.Add("machinegroups", g)
	}
	if r.deviceCreatedMachineTags != "" {
		q.Set("DeviceCreatedMachineTags", r.deviceCreatedMachineTags)
	}
	if r.cloudCreatedMachineTags != "" {
		q.Set("CloudCreatedMachineTags", r.cloudCreatedMachineTags)
	}
	u := *r.endpoint
	u.RawQuery = q.Encode()
	step := ask.step != siemWindow
	return &request{url: &u, continues: step, resumable: step, search: ask.step == siemSearch}
}

func (r *siemReader) next(c *chunk, k *known) *request {
	if c.To.Before(c.From) {
		return nil
	}
	ask := &siemAsk{since: c.From, until: c.To, limit: k.perRequest}
	for _, lower := range []int{c.siem.sizeCap, k.service.cap} {
		if lower > 0 {
			ask.limit = min(ask.limit, lower)
		}
	}
	// An instant known to be unreadable is not asked for again.
	if at, ok := k.unreadable(c.From, c.To); ok {
		ask.since, ask.known = at.Add(tick), at
	}
	return r.ask(c, ask)
}

// after moves the chunk down with the answer to the request sent last.
func (r *siemReader) after(c *chunk, a *answer, k *known) progress {
	w := &c.siem
	ask := w.asked
	if ask.limit > 0 { // a service may lower only a limit sent: an instant read whole says nothing of it
		k.service.answered = max(k.service.answered, a.decoded)
	}
	unreadable := a.class == failUnreadable
	if a.err == nil && !w.coarse && w.lacksTop(ask, a) {
		return w.coarsen(ask, k)
	}
	switch ask.step {
	case siemInstant:
		// The instant c.To read whole, or passed over.
		if a.err != nil && !unreadable {
			return progress{err: a.err}
		}
		c.To = ask.since.Add(-tick)
		if unreadable {
			return c.siem.passOver(ask.until)
		}
		if k.service.cap > 0 && a.decoded == k.service.cap { // no bound splits an instant; more shows no limit held it
			k.log.Warnf("The SIEM API answered %d detections at %s, the most it answers a request: more at that instant cannot be read",
				a.decoded, ask.until.Format(time.RFC3339Nano))
		}
		return progress{}
	case siemSearch:
		return r.searchOn(c, a, k)
	case siemCheck:
		// The walk stays above the full answer until the check passes.
		if a.err != nil {
			return progress{err: a.err}
		}
		if a.inWindow > 0 && !w.rechecked {
			// A detection may have become visible since the full answer: read the top of the window again, once.
			w.rechecked = true
			return progress{}
		}
		if a.inWindow > 0 {
			return progress{err: fmt.Errorf("the SIEM API's answer to limit=%d held not the newest detections of %s to %s: "+
				"one at %s came only when asked for above them; it would lose detections, so the window is not read on",
				ask.full.limit, c.From.Format(time.RFC3339Nano), ask.until.Format(time.RFC3339Nano), a.newest.Format(time.RFC3339Nano))}
		}
		w.checked = true
		return r.below(c, ask.full, k)
	case siemBelow:
		if a.err != nil && !unreadable {
			return progress{err: a.err}
		}
		full := ask.full
		more := unreadable || a.fresh > 0 || a.inWindow > 0 && a.oldest.Before(full.oldest)
		if !unreadable && a.decoded < min(ask.limit, full.limit) || !more && ask.limit == 1 { // it held all there is
			return w.readWhole(c, ask)
		}
		if !more { // the short answer's own oldest millisecond filled it: only one detection below it tells
			return progress{then: r.ask(c, &siemAsk{since: ask.since, until: full.oldest.Add(-tick), limit: 1, step: siemBelow,
				known: ask.known, full: full})}
		}
		if full.limit > w.reasked { // a detection may have turned up late below it: a service lowering limit answers as few again
			w.reasked = full.limit
			return progress{}
		}
		k.service.cap = full.limit
		k.log.Warnf("The SIEM API answered %d detections to limit=%d with more below them: it answers at most %[1]d a request, "+
			"which every request asks for from now on (page_size = %[1]d asks so from the start)", full.limit, full.asked)
		return r.onFull(c, full, k)
	}
	err := a.err
	switch {
	case unreadable && a.decoded >= ask.limit:
		err = nil // what broke came after a full answer: it is read below
	case unreadable && ask.limit > 1:
		w.shrink(a.decoded, a.err, k)
		return progress{}
	case unreadable && a.decoded == 0: // the newest detection alone cannot be read: find its instant
		return r.searchOn(c, nil, k)
	}
	if err != nil {
		return progress{err: err}
	}
	if w.sizeCap > 0 { // an answer that fits: requests grow back toward their usual size
		if w.sizeCap *= 2; w.sizeCap >= k.perRequest {
			w.sizeCap = 0
		}
	}
	// Coarse answers may hold repeats above until: the walk goes on from no higher than until.
	full := &fullAnswer{limit: min(a.decoded, ask.limit), asked: ask.limit, oldest: minTime(a.oldest, ask.until), newest: minTime(a.newest, ask.until)}
	if a.decoded < ask.limit && a.decoded >= k.service.answered && a.inWindow > 0 && full.oldest.After(ask.since) {
		// The API documents no most for limit: a short answer, as long as any yet, is the whole window once
		// nothing lies below it, nor more at its oldest instant, which a lowered limit cuts too.
		below := &siemAsk{since: ask.since, until: full.oldest, limit: ask.limit, step: siemBelow, known: ask.known, full: full}
		if full.oldest.Equal(full.newest) { // nothing but that instant comes first: only below it tells
			below.until, below.limit = full.oldest.Add(-tick), 1
		}
		return progress{then: r.ask(c, below)}
	}
	if a.decoded < ask.limit {
		return w.readWhole(c, ask)
	}
	if a.inWindow == 0 {
		// Nothing tells how far down a full answer reached: find the newest instant, read it, walk on below.
		k.log.Warnf("The SIEM API answered %d detection(s) for %s to %s, none with a LastProcessedTimeUtc inside that window: "+
			"finding the newest instant with one-detection requests", ask.limit, c.From.Format(time.RFC3339Nano), c.To.Format(time.RFC3339Nano))
		return r.searchOn(c, nil, k)
	}
	return r.onFull(c, full, k)
}

// readWhole ends the chunk's walk after a short answer to ask, passing over the unreadable instant it skipped.
func (w *siemWalk) readWhole(c *chunk, ask *siemAsk) progress {
	if !ask.known.IsZero() {
		c.To = ask.known.Add(-tick)
		return w.passOver(ask.known)
	}
	c.To = c.From.Add(-tick)
	return progress{}
}

// onFull moves the walk below a full answer to the window [c.From, c.To], once nothing was shown above it.
func (r *siemReader) onFull(c *chunk, full *fullAnswer, k *known) progress {
	if !c.siem.checked && full.newest.Before(c.To) { // once a chunk: nothing may lie above a limited answer
		return progress{then: r.ask(c, &siemAsk{since: full.newest.Add(tick), until: c.To, limit: 1, step: siemCheck, full: full})}
	}
	return r.below(c, full, k)
}

// minTime is the earlier of a and b.
func minTime(a, b time.Time) time.Time {
	if a.After(b) {
		return b
	}
	return a
}

// below moves the walk to a full answer's oldest instant, read again with what lies below; an answer of one
// instant (coarse: millisecond), which no limited request passes, is read whole without a limit.
func (r *siemReader) below(c *chunk, full *fullAnswer, k *known) progress {
	w := &c.siem
	c.To, w.occupied = full.oldest, full.oldest
	one := full.oldest.Equal(full.newest)
	if w.coarse {
		one = full.oldest.Truncate(time.Millisecond).Equal(full.newest.Truncate(time.Millisecond))
	}
	if !one {
		// What lies up to the next millisecond is remembered: a coarse request returns it again.
		return progress{settledAfter: c.To.Truncate(time.Millisecond).Add(time.Millisecond), settledBefore: c.End}
	}
	if full.limit > 1 && !w.coarse {
		k.log.Warnf("At least %d detections share LastProcessedTimeUtc %s, more than one request with limit %d returns: reading them without a limit",
			full.limit, c.To.Format(time.RFC3339Nano), full.limit)
	}
	return r.found(c, c.To)
}

// lacksTop reports whether the answer to ask left out a detection known at its top: below a full answer, or
// found by a search, which a detection of any time shows.
func (w *siemWalk) lacksTop(ask *siemAsk, a *answer) bool {
	switch {
	case ask.step == siemInstant && !ask.until.Equal(w.occupied):
		return a.decoded == 0
	case ask.step == siemInstant, ask.step == siemWindow && ask.until.Equal(w.occupied):
		return a.inWindow == 0 || a.newest.Before(ask.until)
	}
	return false
}

// coarsen switches the chunk's walk to coarse bounds after an answer for ask left out a detection at its top.
func (w *siemWalk) coarsen(ask *siemAsk, k *known) progress {
	w.coarse = true
	k.log.Warnf("The SIEM API answered sinceTimeUtc=%s untilTimeUtc=%s without the detection at %s that an answer before held: "+
		"it reads untilTimeUtc as exclusive, or the bounds to the millisecond. This chunk is read on with untilTimeUtc "+
		"rounded up to the next millisecond; the repeats are dropped", ask.since.Format(time.RFC3339Nano),
		ask.sent.Format(time.RFC3339Nano), ask.until.Format(time.RFC3339Nano))
	return progress{}
}

// shrink lowers the detections per request after an answer grew past max_body_size or broke: to those
// decoded, or half, down to one.
func (w *siemWalk) shrink(decoded int, err error, k *known) {
	limit := max(1, decoded)
	if w.sizeCap > 0 && limit >= w.sizeCap {
		limit = max(1, w.sizeCap/2)
	}
	if limit == w.sizeCap {
		return
	}
	w.sizeCap = limit
	why := fmt.Sprintf("grew past max_body_size (%d bytes) after %s", k.maxBodySize, countOf(decoded, "detection"))
	if malformed := (*recordSyntaxError)(nil); errors.As(err, &malformed) {
		why = fmt.Sprintf("was malformed after %s, also when retried", countOf(decoded, "detection"))
	}
	k.log.Warnf("An answer %s: asking for at most %d per request until the chunk is read", why, limit)
}

// instantSearch bisects [from, to] for the newest instant below chunkTo.
type instantSearch struct {
	chunkTo, from, to time.Time
	triedKnown        bool
}

// searchOn bisects for the time of the chunk's newest detection, which cannot be read: one detection asked
// for from a time up comes (or fails) exactly when that time is at or before it. A known one is tried first.
// a is the answer to the search's last step; nil when it starts.
func (r *siemReader) searchOn(c *chunk, a *answer, k *known) progress {
	w := &c.siem
	s, ask := w.search, w.asked
	if a == nil {
		if s == nil || !s.chunkTo.Equal(c.To) || s.from.Before(c.From) {
			s = &instantSearch{chunkTo: c.To, from: c.From, to: c.To}
			w.search = s
		}
	} else {
		unreadable := a.class == failUnreadable // which means a detection is there
		if a.err != nil && !unreadable {
			return progress{err: a.err}
		}
		occupied := a.decoded > 0 || unreadable
		s.triedKnown = s.triedKnown || ask.knownTry
		switch {
		case ask.knownTry && !occupied:
			w.search = nil
			return r.found(c, ask.since.Add(-tick))
		case occupied:
			s.from = ask.since
		default:
			s.to = ask.since.Add(-tick)
		}
	}
	if at, ok := k.unreadable(s.from, s.to); ok && !s.triedKnown {
		return progress{then: r.ask(c, &siemAsk{since: at.Add(tick), until: c.To, limit: 1, step: siemSearch, knownTry: true})}
	}
	if s.from.Before(s.to) {
		mid := s.from.Add(s.to.Sub(s.from) / 2).Truncate(tick).Add(tick)
		return progress{then: r.ask(c, &siemAsk{since: mid, until: c.To, limit: 1, step: siemSearch})}
	}
	w.search = nil
	return r.found(c, s.from)
}

// found moves the chunk to the instant found: read whole (coarse: its millisecond up to it), or passed over
// only when this read fails too.
func (r *siemReader) found(c *chunk, at time.Time) progress {
	c.To = at
	since := at
	if c.siem.coarse {
		since = at.Truncate(time.Millisecond)
	}
	return progress{then: r.ask(c, &siemAsk{since: since, until: at, step: siemInstant})}
}

// passOver passes over an unreadable instant; past it requests have their usual size again.
func (w *siemWalk) passOver(at time.Time) progress {
	w.sizeCap = 0
	return progress{unreadable: at}
}

// decode streams an answer's detections, placed in the window asked.
func (*siemReader) decode(c *chunk, body io.Reader, emit func(record) bool) error {
	ask := c.siem.asked
	dec, err := newDetectionDecoder(body)
	if err != nil {
		return err
	}
	var d detection
	for {
		err := dec.next(&d)
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		d.placeIn(ask.since, ask.sent)
		if !emit(&d) {
			return nil
		}
	}
}
