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
		r, err := p.request(ctx, b.send(sp.From, sp.To, limit))
		if errors.Is(err, errBodyTooLarge) && limit > 1 {
			continue // with the smaller requests shrinkRequests chose
		}
		if errors.Is(err, errBodyTooLarge) && r.decoded == 0 {
			// The newest detection of the span alone is too large: find its
			// instant and read on below it.
			giant, err := b.findOversizedInstant(ctx, p, sp)
			if err != nil {
				return false, err
			}
			p.skipOversizedInstant(sp, giant)
			continue
		}
		if err != nil || r.interrupted {
			return false, err
		}
		if r.decoded < limit {
			return true, nil
		}
		if r.inWindow == 0 {
			// Nothing in a full answer tells how far down it reached.
			p.m.warnf("the SIEM API answered %d detections for %s to %s, none with a LastProcessedTimeUtc inside that window: reading it without a limit",
				limit, sp.From.Format(time.RFC3339Nano), sp.To.Format(time.RFC3339Nano))
			r, err = p.request(ctx, b.send(sp.From, sp.To, 0))
			return err == nil && !r.interrupted, err
		}
		if r.oldest.Before(sp.To) {
			sp.To = r.oldest
			p.m.cursor.forget(sp.To, sp.End.Add(-time.Duration(p.m.Overlap)))
			continue
		}
		// Every detection of the response shares the span's upper bound:
		// no limited request can get past it. Read that instant whole.
		p.m.warnf("%d or more detections share LastProcessedTimeUtc %s, more than one request with limit %d returns: reading them without a limit",
			limit, sp.To.Format(time.RFC3339Nano), limit)
		r, err = p.request(ctx, b.send(sp.To, sp.To, 0))
		if errors.Is(err, errBodyTooLarge) {
			p.skipOversizedInstant(sp, sp.To)
			continue
		}
		if err != nil || r.interrupted {
			return false, err
		}
		sp.To = sp.To.Add(-tick)
	}
	return true, nil
}

// skipOversizedInstant gives up the detections of one instant, which
// cannot be read within max_body_size, and walks on below it with requests
// of the usual size. The instant is remembered, so that windows that read
// it again skip it at once, and it is reported once.
func (p *poll) skipOversizedInstant(sp *span, at time.Time) {
	if p.m.cursor.oversized(at) {
		p.m.Log.Debugf("Skipping again the detections of %s, larger than max_body_size", at.Format(time.RFC3339Nano))
	} else {
		p.stats.skipped++
		p.m.warnf("A detection with LastProcessedTimeUtc %s is larger than max_body_size (%d bytes): it cannot be read and is skipped, "+
			"with any other detection of that 100 ns instant; raise max_body_size to read it", at.Format(time.RFC3339Nano), int64(p.m.MaxBodySize))
	}
	sp.To = at.Add(-tick)
	p.m.sizeLimit = 0
}

// findOversizedInstant finds the LastProcessedTimeUtc of the newest
// detection of the span, which alone is larger than max_body_size. It asks
// for one detection from a probe time up to the span's end: that fails
// exactly when the probe is at or before the giant, whatever lies below, so
// a bisection finds it; an instant skipped before is tried first.
func (b *siemBackend) findOversizedInstant(ctx context.Context, p *poll, sp *span) (time.Time, error) {
	// The giant's time lies in [from, to].
	from, to := sp.From, sp.To
	atOrBefore := func(probe time.Time) (bool, error) {
		_, err := p.request(ctx, b.send(probe, sp.To, 1))
		if errors.Is(err, errBodyTooLarge) {
			return true, nil
		}
		return false, err
	}
	if known, ok := p.m.cursor.newestOversized(from, to); ok {
		above, err := atOrBefore(known.Add(tick))
		switch {
		case err != nil:
			return time.Time{}, err
		case !above:
			return known, nil
		}
		from = known.Add(tick)
	}
	for from.Before(to) {
		mid := from.Add(to.Sub(from) / 2).Truncate(tick).Add(tick)
		failed, err := atOrBefore(mid)
		switch {
		case err != nil:
			return time.Time{}, err
		case failed:
			from = mid
		default:
			to = mid.Add(-tick)
		}
	}
	return from, nil
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
