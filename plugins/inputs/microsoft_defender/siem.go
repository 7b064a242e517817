package microsoft_defender

import (
	"errors"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// siemTimeLayout is how request bounds are sent: UTC, 7 fractional digits, Z.
const siemTimeLayout = "2006-01-02T15:04:05.0000000Z"

// siemRegions are the documented hosts of the SIEM alerts API.
var siemRegions = map[string]string{
	"eu":       "https://wdatp-alertexporter-eu.windows.com/api/alerts",
	"us":       "https://wdatp-alertexporter-us.windows.com/api/alerts",
	"uk":       "https://wdatp-alertexporter-uk.windows.com/api/alerts",
	"gcc":      "https://wdatp-alertexporter-us.gcc.securitycenter.windows.us/api/alerts",
	"gcc-high": "https://wdatp-alertexporter-us.securitycenter.windows.us/api/alerts",
}

// siemFilters are the server-side filters of the SIEM API.
type siemFilters struct {
	machineGroups            []string
	deviceCreatedMachineTags string
	cloudCreatedMachineTags  string
}

// siemBackend pulls detections from the SIEM alerts API.
type siemBackend struct {
	endpointURL *url.URL
	filters     siemFilters
	// search is a search for an instant (searchOn) that a poll left
	// unfinished.
	search *instantSearch
}

// newSIEMBackend reads the SIEM API at endpoint; the poll sends its
// requests through client, which it names for messages.
func newSIEMBackend(endpoint *url.URL, client *apiClient, filters siemFilters) *siemBackend {
	client.name = "SIEM API"
	client.statusMeaning = siemStatusMeaning
	return &siemBackend{endpointURL: endpoint, filters: filters}
}

// requestURL builds the query for the window [since, until] on
// LastProcessedTimeUtc, asking for the newest limit detections (all when 0).
func (b *siemBackend) requestURL(since, until time.Time, limit int) *url.URL {
	q := b.endpointURL.Query()
	q.Set("sinceTimeUtc", since.UTC().Format(siemTimeLayout))
	q.Set("untilTimeUtc", until.UTC().Format(siemTimeLayout))
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	for _, g := range b.filters.machineGroups {
		q.Add("machinegroups", g)
	}
	if b.filters.deviceCreatedMachineTags != "" {
		q.Set("DeviceCreatedMachineTags", b.filters.deviceCreatedMachineTags)
	}
	if b.filters.cloudCreatedMachineTags != "" {
		q.Set("CloudCreatedMachineTags", b.filters.cloudCreatedMachineTags)
	}
	u := *b.endpointURL
	u.RawQuery = q.Encode()
	return &u
}

func (b *siemBackend) endpoint() string {
	return b.endpointURL.String()
}

// siemAsk is what one SIEM request asks for: the newest limit detections
// (all when 0) with LastProcessedTimeUtc in [since, until].
type siemAsk struct {
	since, until time.Time
	limit        int
	step         siemStep
	// known: for a siemWindow request, the newest instant of the span
	// known to be unreadable, which the request stays above (hasKnown).
	known    time.Time
	hasKnown bool
	// For a siemProbe: whether it probes the instant known before
	// (knownProbe), and whether the instant found is read whole (read) or
	// skipped.
	knownProbe, read bool
}

// siemStep names the requests of the walk down a span.
type siemStep int

const (
	// siemWindow: the newest detections of the span.
	siemWindow siemStep = iota
	// siemInstant: every detection of one instant.
	siemInstant
	// siemProbe: one detection from a probe time up, for searchOn.
	siemProbe
)

// next reads the span from its newest detections down. Each request asks
// for at most max_alerts_per_gather detections (or limit, when smaller); a
// response that holds exactly that many may have left older ones out, so
// the span's upper bound moves down to the oldest detection seen and the
// rest is requested (advance). When the poll stops first, the span holds
// what is left, and detections emitted from its upper end are dropped as
// duplicates when it is read again.
func (b *siemBackend) next(sp *span, in reading) *request {
	if sp.empty() {
		return nil
	}
	ask := &siemAsk{since: sp.From, until: sp.To, limit: in.limit}
	// Known unreadable instants are not asked for again: the span is read
	// above the newest of them, then below it.
	if skipped, known := in.unreadable(sp.From, sp.To); known {
		ask.since, ask.known, ask.hasKnown = skipped.Add(tick), skipped, true
	}
	return b.request(ask)
}

// request is the request for ask. Only a request for the span's newest
// detections starts a step; the others go on with one.
func (b *siemBackend) request(ask *siemAsk) *request {
	req := &request{url: b.requestURL(ask.since, ask.until, ask.limit), ask: ask, within: ask.step != siemWindow}
	if ask.step == siemProbe {
		req.probe = true
		req.resumes = "The search for the instant of a detection that cannot be read goes on in the next poll"
	}
	return req
}

// advance moves the span down after one of its requests.
func (b *siemBackend) advance(sp *span, req *request, res *response, in reading) move {
	ask := req.ask.(*siemAsk)
	switch ask.step {
	case siemInstant:
		// The instant sp.To read whole, or skipped.
		if isUnreadable(res.err) {
			sp.To = ask.until.Add(-tick)
			return move{kind: moveSkipInstant, at: ask.until}
		}
		if res.err != nil {
			return move{kind: moveFailed, err: res.err}
		}
		sp.To = ask.until.Add(-tick)
		return move{}
	case siemProbe:
		return b.probed(sp, ask, res, in)
	}
	limit, err := ask.limit, res.err
	switch {
	case isUnreadable(err) && res.decoded >= limit:
		// What broke came after a full answer: it is read below.
		err = nil
	case isUnreadable(err) && limit > 1:
		return move{kind: moveFewer}
	case isUnreadable(err) && res.decoded == 0:
		// The newest detection of the span alone cannot be read: find its
		// instant and read on below it.
		return b.searchOn(sp, in, false)
	}
	if err != nil {
		return move{kind: moveFailed, err: err}
	}
	if res.decoded < limit {
		if ask.hasKnown {
			sp.To = ask.known.Add(-tick)
			return move{kind: moveSkipInstant, at: ask.known}
		}
		return move{kind: moveDone}
	}
	switch {
	case res.inWindow == 0:
		// Nothing in a full answer tells how far down it reached: find the
		// newest instant, read it whole and walk on below it.
		in.log.warnf("The SIEM API answered %d detection(s) for %s to %s, none with a LastProcessedTimeUtc inside that window: "+
			"finding the newest instant with one-detection requests", limit, sp.From.Format(time.RFC3339Nano), sp.To.Format(time.RFC3339Nano))
		return b.searchOn(sp, in, true)
	case res.oldest.Before(sp.To):
		sp.To = res.oldest
		return move{kind: movePart, forgetAfter: sp.To, forgetBefore: sp.End}
	}
	// Every detection of the response shares the span's upper bound: no
	// limited request can get past it.
	in.log.warnf("At least %d detections share LastProcessedTimeUtc %s, more than one request with limit %d returns: reading them without a limit",
		limit, sp.To.Format(time.RFC3339Nano), limit)
	return b.readInstant(sp.To)
}

// readInstant goes on with a request for every detection of the instant at.
func (b *siemBackend) readInstant(at time.Time) move {
	return move{then: b.request(&siemAsk{since: at, until: at, step: siemInstant})}
}

// isUnreadable reports whether an answer failed because of what it holds,
// not how it travelled: larger than max_body_size, or a detection that is
// no JSON. Asked again, it fails again.
func isUnreadable(err error) bool {
	var recordErr *recordSyntaxError
	return errors.Is(err, errBodyTooLarge) || errors.As(err, &recordErr)
}

// instantSearch is a bisection for the newest instant of the span below
// to, in [from, to].
type instantSearch struct {
	spanTo, from, to time.Time
	triedKnown       bool // the instants skipped before were tried
}

// searchFor returns the search under way for the span as it is, or a new
// one over the whole span.
func (b *siemBackend) searchFor(sp *span) *instantSearch {
	if b.search == nil || !b.search.spanTo.Equal(sp.To) || b.search.from.Before(sp.From) {
		b.search = &instantSearch{spanTo: sp.To, from: sp.From, to: sp.To}
	}
	return b.search
}

// searchOn goes on with the search for the LastProcessedTimeUtc of the
// newest detection of the span, which the plugin cannot read or place. It
// asks for one detection from a probe time up to the span's end: that
// returns one, or fails as unreadable, exactly when the probe is at or
// before the newest detection, whatever lies below, so a bisection finds
// it. An instant skipped before is tried first, and a search that a poll
// leaves unfinished is resumed by the next. The instant found is read
// whole (read), or skipped.
func (b *siemBackend) searchOn(sp *span, in reading, read bool) move {
	search := b.searchFor(sp)
	if known, ok := in.unreadable(search.from, search.to); ok && !search.triedKnown {
		return move{then: b.request(&siemAsk{since: known.Add(tick), until: sp.To, limit: 1, step: siemProbe, knownProbe: true, read: read})}
	}
	if search.from.Before(search.to) {
		mid := search.from.Add(search.to.Sub(search.from) / 2).Truncate(tick).Add(tick)
		return move{then: b.request(&siemAsk{since: mid, until: sp.To, limit: 1, step: siemProbe, read: read})}
	}
	b.search = nil
	return b.found(sp, search.from, read)
}

// probed narrows the search with the answer to one probe.
func (b *siemBackend) probed(sp *span, ask *siemAsk, res *response, in reading) move {
	occupied := res.decoded > 0
	switch {
	case isUnreadable(res.err):
		occupied = true // an answer the probe expects, no failure
	case res.err != nil:
		return move{kind: moveFailed, err: res.err}
	}
	search := b.searchFor(sp)
	switch {
	case ask.knownProbe:
		search.triedKnown = true
		if !occupied {
			b.search = nil
			return b.found(sp, ask.since.Add(-tick), ask.read)
		}
		search.from = ask.since
	case occupied:
		search.from = ask.since
	default:
		search.to = ask.since.Add(-tick)
	}
	return b.searchOn(sp, in, ask.read)
}

// found moves the span to the instant a search found: read whole, or
// skipped.
func (b *siemBackend) found(sp *span, at time.Time, read bool) move {
	if read {
		sp.To = at
		return b.readInstant(at)
	}
	sp.To = at.Add(-tick)
	return move{kind: moveSkipInstant, at: at}
}

// decode streams the detections of one answer, placed in the window asked
// for.
func (*siemBackend) decode(req *request, body io.Reader, emit func(alert) bool) error {
	ask := req.ask.(*siemAsk)
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
		d.placeIn(ask.since, ask.until)
		if !emit(&d) {
			return nil
		}
	}
}

func siemStatusMeaning(status int) string {
	switch status {
	case http.StatusUnauthorized:
		return "the token is invalid or expired, or the request is malformed"
	case http.StatusForbidden:
		return "the app lacks permission, or the tenant is not managed by this API or was deleted"
	case http.StatusNotFound:
		return "no alerts API at this address: check region or endpoint_url"
	default:
		return commonStatusMeaning(status)
	}
}
