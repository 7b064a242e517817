package microsoft_defender

import (
	"context"
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
	api         *apiClient
	endpointURL *url.URL
	filters     siemFilters
}

func newSIEMBackend(endpoint *url.URL, client *apiClient, filters siemFilters) *siemBackend {
	client.name = "SIEM API"
	client.statusMeaning = siemStatusMeaning
	return &siemBackend{api: client, endpointURL: endpoint, filters: filters}
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

// readSpan reads the span from its newest detections down. Each request
// asks for at most max_alerts_per_gather detections (or limit, when
// smaller); a response that holds exactly that many may have left older ones
// out, so the span's upper bound moves down to the oldest detection seen and
// the rest is requested. It returns false when the budget ran out first; the
// span then holds what is left, and detections emitted from its upper end
// are dropped as duplicates when it is read again.
func (b *siemBackend) readSpan(ctx context.Context, p *poll, sp *span) (bool, error) {
	for !sp.empty() {
		if p.budget == 0 || p.pastDeadline() {
			return false, nil
		}
		limit := p.m.requestLimit()
		// Known unreadable instants are not asked for again: the span is
		// read above the newest of them, then below it.
		from := sp.From
		skipped, known := p.m.cursor.newestUnreadable(sp.From, sp.To)
		if known {
			from = skipped.Add(tick)
		}
		r, err := p.request(ctx, b.send(from, sp.To, limit))
		switch {
		case isUnreadable(err) && r.decoded >= limit:
			// What broke came after a full answer: it is read below.
			err = nil
		case isUnreadable(err) && limit > 1:
			p.m.shrinkRequests(r.decoded)
			continue
		case isUnreadable(err) && r.decoded == 0:
			// The newest detection of the span alone cannot be read: find
			// its instant and read on below it.
			at, err := b.newestInstant(ctx, p, sp)
			if err != nil {
				return false, err
			}
			p.skipUnreadableInstant(sp, at)
			continue
		}
		if err != nil || r.interrupted {
			return false, err
		}
		if r.decoded < limit {
			if known {
				p.skipUnreadableInstant(sp, skipped)
				continue
			}
			return true, nil
		}
		if r.inWindow == 0 {
			// Nothing in a full answer tells how far down it reached: find
			// the newest instant, read it whole and walk on below it.
			p.m.warnf("The SIEM API answered %d detection(s) for %s to %s, none with a LastProcessedTimeUtc inside that window: "+
				"finding the newest instant with one-detection requests", limit, sp.From.Format(time.RFC3339Nano), sp.To.Format(time.RFC3339Nano))
			at, err := b.newestInstant(ctx, p, sp)
			if err != nil {
				return false, err
			}
			sp.To = at
		} else if r.oldest.Before(sp.To) {
			sp.To = r.oldest
			p.m.cursor.forget(sp.To, p.m.chunkEnd(sp).Add(-time.Duration(p.m.Overlap)))
			continue
		} else {
			// Every detection of the response shares the span's upper
			// bound: no limited request can get past it.
			p.m.warnf("%d or more detections share LastProcessedTimeUtc %s, more than one request with limit %d returns: reading them without a limit",
				limit, sp.To.Format(time.RFC3339Nano), limit)
		}
		// Read the instant sp.To whole.
		r, err = p.request(ctx, b.send(sp.To, sp.To, 0))
		if isUnreadable(err) {
			p.skipUnreadableInstant(sp, sp.To)
			continue
		}
		if err != nil || r.interrupted {
			return false, err
		}
		sp.To = sp.To.Add(-tick)
	}
	return true, nil
}

// isUnreadable reports whether an answer failed because of what it holds,
// not how it travelled: larger than max_body_size, or a detection that is
// no JSON. Asked again, it fails again.
func isUnreadable(err error) bool {
	var recordErr *recordSyntaxError
	return errors.Is(err, errBodyTooLarge) || errors.As(err, &recordErr)
}

// skipUnreadableInstant gives up the detections of one instant, which
// cannot be read within max_body_size or are not JSON, and walks on below
// it with requests of the usual size. The instant is remembered, so that
// windows that read it again skip it at once, and it is reported once.
func (p *poll) skipUnreadableInstant(sp *span, at time.Time) {
	if p.m.cursor.unreadable(at) {
		p.m.Log.Debugf("Skipping again the detections of %s, which cannot be read", at.Format(time.RFC3339Nano))
	} else {
		p.stats.skipped++
		p.m.warnf("The detections with LastProcessedTimeUtc %s cannot be read (larger than max_body_size, %d bytes, alone or together, "+
			"or not JSON): they are skipped; raise max_body_size if they are large", at.Format(time.RFC3339Nano), int64(p.m.MaxBodySize))
	}
	sp.To = at.Add(-tick)
	p.m.sizeLimit = 0
}

// newestInstant finds the LastProcessedTimeUtc of the newest detection of
// the span, which the plugin cannot read or place. It asks for one
// detection from a probe time up to the span's end: that returns one, or
// fails as unreadable, exactly when the probe is at or before the newest
// detection, whatever lies below, so a bisection finds it. An instant
// skipped before is tried first, and a search that a poll leaves unfinished
// is resumed by the next.
func (b *siemBackend) newestInstant(ctx context.Context, p *poll, sp *span) (time.Time, error) {
	search := p.m.cursor.searchFor(sp)
	atOrBefore := func(probe time.Time) (bool, error) {
		r, err := p.request(ctx, b.send(probe, sp.To, 1))
		if isUnreadable(err) {
			p.stats.errors-- // an answer the probe expects, no failure
			return true, nil
		}
		return r.decoded > 0, err
	}
	if known, ok := p.m.cursor.newestUnreadable(search.from, search.to); ok && !search.triedKnown {
		above, err := atOrBefore(known.Add(tick))
		if err != nil {
			return time.Time{}, b.searchPostponed(p, err)
		}
		search.triedKnown = true
		if !above {
			p.m.cursor.search = nil
			return known, nil
		}
		search.from = known.Add(tick)
	}
	for search.from.Before(search.to) {
		mid := search.from.Add(search.to.Sub(search.from) / 2).Truncate(tick).Add(tick)
		occupied, err := atOrBefore(mid)
		switch {
		case err != nil:
			return time.Time{}, b.searchPostponed(p, err)
		case occupied:
			search.from = mid
		default:
			search.to = mid.Add(-tick)
		}
	}
	p.m.cursor.search = nil
	return search.from, nil
}

// searchPostponed says that a search for an instant goes on in the next
// poll, when the poll ends in the middle of one.
func (*siemBackend) searchPostponed(p *poll, err error) error {
	if errors.Is(err, errPostponed) {
		p.m.Log.Info("The search for the instant of a detection that cannot be read goes on in the next poll")
	}
	return err
}

// send is the request for the window [since, until]: it streams the
// detections of the answer to handle, one at a time, until handle returns
// false. On error, those before the failure have been handled.
func (b *siemBackend) send(since, until time.Time, limit int) sendFunc {
	return func(ctx context.Context, handle func(alert) bool) error {
		u := b.requestURL(since, until, limit)
		body, err := b.api.get(ctx, u)
		if err != nil {
			return err
		}
		defer body.Close()

		dec, err := newDetectionDecoder(body)
		if err != nil {
			return &answerError{api: b.api.name, host: u.Host, err: err}
		}
		var d detection
		for {
			err := dec.next(&d)
			if errors.Is(err, io.EOF) {
				return nil
			}
			if err != nil {
				return &answerError{api: b.api.name, host: u.Host, err: err}
			}
			d.placeIn(since, until)
			if !handle(&d) {
				return nil
			}
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
