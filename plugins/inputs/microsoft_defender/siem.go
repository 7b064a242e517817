package microsoft_defender

import (
	"context"
	"errors"
	"fmt"
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
	api      *apiClient
	endpoint *url.URL
	filters  siemFilters
}

func newSIEMBackend(endpoint *url.URL, client *apiClient, filters siemFilters) *siemBackend {
	client.name = "SIEM API"
	client.statusMeaning = siemStatusMeaning
	return &siemBackend{api: client, endpoint: endpoint, filters: filters}
}

// requestURL builds the query for the window [since, until] on
// LastProcessedTimeUtc, asking for the newest limit detections (all when 0).
func (b *siemBackend) requestURL(since, until time.Time, limit int) *url.URL {
	q := b.endpoint.Query()
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
	u := *b.endpoint
	u.RawQuery = q.Encode()
	return &u
}

// fetch streams the detections of one window to handle, one at a time,
// until handle returns false. It returns how many it decoded; on error,
// those before the failure have been handled.
func (b *siemBackend) fetch(ctx context.Context, since, until time.Time, limit int, handle func(*detection) bool) (int, error) {
	u := b.requestURL(since, until, limit)
	body, err := b.api.get(ctx, u)
	if err != nil {
		return 0, err
	}
	defer body.Close()

	dec, err := newDetectionDecoder(body)
	if err != nil {
		return 0, fmt.Errorf("reading the SIEM API answer from %s: %w", u.Host, err)
	}
	var d detection
	for {
		err := dec.next(&d)
		if errors.Is(err, io.EOF) {
			return dec.index, nil
		}
		if err != nil {
			return dec.index - 1, fmt.Errorf("reading the SIEM API answer from %s: %w", u.Host, err)
		}
		if !handle(&d) {
			return dec.index, nil
		}
	}
}

func siemStatusMeaning(status int) string {
	switch {
	case status == http.StatusUnauthorized:
		return "the token is invalid or expired, or the request is malformed"
	case status == http.StatusForbidden:
		return "the app lacks permission, or the tenant is not managed by this API or was deleted"
	case status == http.StatusNotFound:
		return "no alerts API at this address: check region or endpoint_url"
	case status == http.StatusTooManyRequests:
		return "throttled"
	case status >= 500:
		return "service error"
	default:
		return "unexpected answer"
	}
}
