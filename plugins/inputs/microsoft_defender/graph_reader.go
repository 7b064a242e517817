package microsoft_defender

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// graphCloud is where one national cloud's Graph and sign-in are.
type graphCloud struct {
	graphHost string
	loginHost string
}

// graphRegions are the clouds `region` selects for api = "graph".
var graphRegions = map[string]graphCloud{
	"global":   {"graph.microsoft.com", "login.microsoftonline.com"},
	"gcc":      {"graph.microsoft.com", "login.microsoftonline.com"},
	"gcc-high": {"graph.microsoft.us", "login.microsoftonline.us"},
	"dod":      {"dod-graph.microsoft.us", "login.microsoftonline.us"},
	"china":    {"microsoftgraph.chinacloudapi.cn", "login.partner.microsoftonline.cn"},
}

const graphAlertsPath = "/v1.0/security/alerts_v2"

// How parts are sized (nextWidth, splitAt): a counted part aims at
// graphPagesPerPart full pages, estimates aim at graphFill of a target so
// they rarely overshoot, and a part grows at most graphGrowth times.
const (
	graphPagesPerPart = 20
	graphFill         = 0.8
	graphGrowth       = 16
)

// graphReader reads Graph security alerts_v2: the versions last updated in
// a chunk, in parts [From, To), each through one chain of @odata.nextLink
// pages. A chain shown to hold its whole part moves From to To; one that
// cannot be (a refused next link, a chain short of @odata.count or without
// one, a loop, a link elsewhere) splits the part, whose first half is read
// again, repeats dropped as duplicates. The order of alerts is never
// relied on, and only times inside the part asked are used.
type graphReader struct {
	endpoint        *url.URL
	pageSize        int
	serviceSources  []string
	severities      []string
	machineGroups   map[string]bool
	includeEvidence bool
	// maxAlertsPerGather bounds a part: a poll stopped inside one reads it
	// again.
	maxAlertsPerGather int
}

// graphPaging is what the service showed of its paging; requests adapt to
// it, exactly-once never depends on it.
type graphPaging struct {
	noOrderBy bool // $orderby was refused with 400
	noCount   bool // $count was refused with 400
	// pageCap: the service's own page size, when a page it showed to be
	// cut held fewer than page_size; chainCap: the fewest alerts a chain
	// delivered before the service stopped it. 0: not seen.
	pageCap, chainCap int
	said              map[string]bool // messages logged once
	seen              graphObserved   // for Probe
}

// graphObserved is what the service did with the options the plugin sent.
type graphObserved struct {
	orderBy  string // "asc", "newest first", "unordered", "rejected", or ""
	nextLink string // "$skip", "$skiptoken", "other", or a sentence of Probe's
	count    string // "present", "absent", "rejected", or ""
}

// graphWalk is the part of a chunk whose chain of pages is being read.
type graphWalk struct {
	part *graphPart
}

// graphPart is a part [from, to) of a chunk, on the 100 ns grid, and what
// its chain delivered; a poll stopped inside the chain reads it again.
type graphPart struct {
	from, to time.Time
	pages    int
	distinct map[string]struct{} // the versions inside the part the chain held
	times    []time.Time         // their lastUpdateDateTime
	count    int64               // the first page's @odata.count, when hasCount
	hasCount bool
	visited  map[string]bool // the next links followed
	// complete: the chain held every version of the part; broken: why not.
	complete bool
	broken   string
	page     graphPage // the page decode read last
}

// graphPage is one page as decode read it.
type graphPage struct {
	items        int // alerts on the page, inside the part or not
	outside      int // alerts outside the part, left out
	firstOutside string
	inside       []graphVersion
	next         string
	count        int64
	hasCount     bool
	// Whether the inside alerts came in that order, for Probe.
	ascending, descending bool
}

type graphVersion struct {
	id string
	at time.Time
}

// firstPage asks for the alerts last updated in [from, to), top a page,
// oldest first and counted unless the service refused these options.
func (r *graphReader) firstPage(from, to time.Time, top int, paging *graphPaging) *url.URL {
	filter := fmt.Sprintf("lastUpdateDateTime ge %s and lastUpdateDateTime lt %s",
		from.UTC().Format(siemTimeLayout), to.UTC().Format(siemTimeLayout))
	filter += odataAnyOf("serviceSource", r.serviceSources) + odataAnyOf("severity", r.severities)
	q := r.endpoint.Query()
	q.Set("$filter", filter)
	if !paging.noOrderBy {
		q.Set("$orderby", "lastUpdateDateTime asc")
	}
	if !paging.noCount {
		q.Set("$count", "true")
	}
	q.Set("$top", strconv.Itoa(top))
	u := *r.endpoint
	u.RawQuery = q.Encode()
	return &u
}

// odataAnyOf is the filter clause "and (field eq 'a' or field eq 'b')".
func odataAnyOf(field string, values []string) string {
	if len(values) == 0 {
		return ""
	}
	terms := make([]string, 0, len(values))
	for _, v := range values {
		terms = append(terms, fmt.Sprintf("%s eq '%s'", field, strings.ReplaceAll(v, "'", "''")))
	}
	return " and (" + strings.Join(terms, " or ") + ")"
}

// next starts the chain of the chunk's next part.
func (r *graphReader) next(c *chunk, k *known) *request {
	for c.From.Before(c.End) {
		if !c.To.After(c.From) || c.To.After(c.End) {
			c.To = c.End
		}
		// Bounds go out with 7 fractional digits, cut, not rounded.
		lo, hi := c.From.Truncate(tick), c.To.Truncate(tick)
		if hi.After(lo) {
			c.graph.part = &graphPart{from: lo, to: hi, distinct: make(map[string]struct{}), visited: make(map[string]bool)}
			return &request{url: r.firstPage(lo, hi, r.pageSize, k.paging)}
		}
		// Less than 100 ns, which no query can ask for alone.
		c.From, c.To = c.To, c.End
	}
	return nil
}

// decode streams the alerts of one page and notes the page in the part.
// Alerts outside the part are counted and left out: their times must not
// steer the cursor, and the part covering them reads them if they are
// real. Alerts without a time cannot be placed and are handed on.
func (r *graphReader) decode(c *chunk, body io.Reader, emit func(record) bool) error {
	part := c.graph.part
	page := &part.page
	*page = graphPage{inside: page.inside[:0], ascending: true, descending: true}
	meta, err := decodeGraphPage(body, func(a *graphAlert) bool {
		page.items++
		if a.issues.skip != "" || a.lastUpdate.IsZero() {
			return emit(a)
		}
		if a.lastUpdate.Before(part.from) || !a.lastUpdate.Before(part.to) {
			page.outside++
			if page.outside == 1 {
				page.firstOutside = a.identity()
			}
			return true
		}
		if n := len(page.inside); n > 0 {
			last := page.inside[n-1].at
			page.ascending = page.ascending && !a.lastUpdate.Before(last)
			page.descending = page.descending && !a.lastUpdate.After(last)
		}
		page.inside = append(page.inside, graphVersion{a.identity(), a.lastUpdate})
		if len(r.machineGroups) > 0 && !r.machineGroups[a.device.RbacGroupName] {
			return true
		}
		a.includeEvidence = r.includeEvidence
		return emit(a)
	})
	if err != nil {
		return err
	}
	page.next, page.count, page.hasCount = meta.next, meta.count, meta.hasCount
	return nil
}

// after follows the part's chain with the answer to one page, and moves
// the chunk on when the chain ended.
func (r *graphReader) after(c *chunk, a *answer, k *known) progress {
	part := c.graph.part
	if a.err != nil {
		switch {
		case part.pages == 0 && r.dropRefusedOption(k, a.err):
			return progress{then: &request{url: r.firstPage(part.from, part.to, r.pageSize, k.paging), continues: true}}
		case part.pages > 0 && a.class == failRefused:
			part.broken = fmt.Sprintf("next link %d refused", part.pages)
			k.paging.learnChainCap(len(part.distinct))
			k.paging.sayOncef(k, "next-refused", "The Graph API refused a next link after %d alerts (%v): reading such windows in smaller parts from now on",
				len(part.distinct), a.err)
			return r.ended(c, k)
		case a.class == failUnreadable:
			// Smaller parts make smaller pages, down to the one instant
			// that holds what cannot be read.
			part.broken = "a page larger than max_body_size, or not JSON"
			return r.ended(c, k)
		}
		return progress{err: a.err}
	}
	page := &part.page
	part.pages++
	facts := progress{outOfWindow: r.notePage(k, part, part.pages == 1)}
	var nextURL *url.URL
	if page.next != "" {
		// A link to another place is never followed, whatever else the
		// page says.
		var err error
		if nextURL, err = r.checkNextLink(page.next); err != nil {
			facts.errors++
			k.log.Warnf("Graph paging: %v", err)
		}
	}
	ended := func(broken string) progress {
		part.broken = broken
		part.complete = broken == ""
		pr := r.ended(c, k)
		pr.outOfWindow, pr.errors = facts.outOfWindow, facts.errors
		return pr
	}
	if part.pages == 1 && len(page.inside) == 0 {
		// A first page without an alert of the part: it holds none.
		return ended("")
	}
	added := 0
	for _, v := range page.inside {
		if _, ok := part.distinct[v.id]; !ok {
			part.distinct[v.id] = struct{}{}
			part.times = append(part.times, v.at)
			added++
		}
	}
	if part.pages == 1 {
		part.count, part.hasCount = page.count, page.hasCount
	}
	if page.next == "" || nextURL != nil {
		k.paging.learnPageSize(page, r.pageSize, part.pages == 1)
	}
	full := page.items >= k.paging.fullPage(r.pageSize)
	held := len(part.distinct)
	switch {
	case part.hasCount && int64(held) >= part.count, page.next == "" && part.pages == 1 && !full:
		return ended("")
	case page.next == "" && full && part.hasCount:
		k.paging.learnChainCap(held)
		k.paging.sayOncef(k, "chain-ended", "A chain of Graph pages ended after %d alerts although @odata.count said %d: "+
			"reading such windows in smaller parts from now on", held, part.count)
		return ended(fmt.Sprintf("the chain ended at a full page after %d of %d alerts", held, part.count))
	case page.next == "" && full:
		return ended("the chain ended at a full page, without a count")
	case page.next == "":
		return ended(fmt.Sprintf("the chain ended after %d of %d alerts", held, part.count))
	case nextURL == nil && part.pages == 1 && !full:
		// Short of a full page, no more of the part follows.
		return ended("")
	case nextURL == nil:
		return ended("a next link to another place")
	case !part.hasCount:
		// Without a count no chain can be shown whole: an update between
		// two pages shifts the later ones under a $skip. Parts that fit one
		// page need no such proof.
		return ended("a next link without @odata.count")
	case k.paging.chainCap > 0 && part.count > int64(k.paging.chainCap):
		return ended(fmt.Sprintf("%d alerts, more than a chain delivers", part.count))
	case part.visited[page.next] || added == 0:
		k.log.Warnf("The Graph API's next links lead back to pages already read or to nothing new: reading [%s, %s) in parts instead",
			part.from.Format(time.RFC3339Nano), part.to.Format(time.RFC3339Nano))
		return ended("a next link that leads back or to nothing new")
	}
	part.visited[page.next] = true
	facts.then = &request{url: nextURL}
	return facts
}

// ended moves the chunk past the part read whole, or to the first half of
// one that could not be shown whole.
func (r *graphReader) ended(c *chunk, k *known) progress {
	part := c.graph.part
	c.graph.part = nil
	width := part.to.Sub(part.from)
	if !part.complete && width > tick {
		c.To = r.splitAt(part, k.paging)
		k.log.Debugf("Graph part [%s, %s) not read whole (%s): reading [%s, %s) first",
			part.from.Format(time.RFC3339Nano), part.to.Format(time.RFC3339Nano), part.broken,
			part.from.Format(time.RFC3339Nano), c.To.Truncate(tick).Format(time.RFC3339Nano))
		return progress{}
	}
	if !part.complete {
		// One instant holds more than a chain delivers: nothing narrower
		// can be asked.
		k.log.Warnf("Alerts sharing lastUpdateDateTime %s could not all be read (%s): %d read, moving on",
			part.from.Format(time.RFC3339Nano), part.broken, len(part.distinct))
	}
	next := r.nextWidth(width, part, k.paging)
	c.From = c.To
	c.To = c.End
	if next < c.End.Sub(c.From) {
		c.To = c.From.Add(next)
	}
	return progress{settledAfter: c.Start.Add(-tick), settledBefore: c.From}
}

// checkNextLink follows a next link only to the API's own scheme and host:
// the request carries the bearer token.
func (r *graphReader) checkNextLink(next string) (*url.URL, error) {
	u, err := url.Parse(next)
	if err != nil || u.Scheme != r.endpoint.Scheme || u.Host != r.endpoint.Host {
		return nil, fmt.Errorf("the Graph API at %s sent an @odata.nextLink to another place, not followed: %q",
			r.endpoint.Host, sanitize(truncate(next, 256), maxBodySnippet))
	}
	return u, nil
}

// notePage notes what a page shows for Probe, warns of alerts outside the
// part and returns how many there were.
func (*graphReader) notePage(k *known, part *graphPart, first bool) int64 {
	page := &part.page
	if page.outside > 0 {
		k.log.Warnf("The Graph API sent %s last updated outside the window asked for, [%s, %s) (the first: %s): left out",
			countOf(page.outside, "alert"), part.from.Format(time.RFC3339Nano), part.to.Format(time.RFC3339Nano), truncate(page.firstOutside, 160))
	}
	seen := &k.paging.seen
	if first {
		switch {
		case page.hasCount:
			seen.count = "present"
		case !k.paging.noCount:
			seen.count = "absent"
			k.paging.sayOncef(k, "no-count", "The Graph API sends no @odata.count: windows are read in parts that fit one page")
		}
	}
	if page.next != "" {
		seen.nextLink = nextLinkForm(page.next)
	}
	if len(page.inside) > 1 && !page.inside[0].at.Equal(page.inside[len(page.inside)-1].at) && !k.paging.noOrderBy {
		switch {
		case page.ascending:
			seen.orderBy = "asc"
		case page.descending:
			seen.orderBy = "newest first"
		default:
			seen.orderBy = "unordered"
		}
	}
	return int64(page.outside)
}

var (
	skipParam      = regexp.MustCompile(`(?i)[?&](\$|%24)skip=`)
	skipTokenParam = regexp.MustCompile(`(?i)[?&](\$|%24)skiptoken=`)
	orderByWord    = regexp.MustCompile(`(?i)orderby`)
	countWord      = regexp.MustCompile(`(?i)(\$count|\bcount\b)`)
)

// nextLinkForm names the form of a next link for Probe; reading never looks
// inside one.
func nextLinkForm(link string) string {
	switch {
	case skipTokenParam.MatchString(link):
		return "$skiptoken"
	case skipParam.MatchString(link):
		return "$skip"
	}
	return "other"
}

// learnPageSize notices a service that clamps $top: a page shorter than
// asked with a next link, or a first page short of its count.
func (g *graphPaging) learnPageSize(page *graphPage, pageSize int, first bool) {
	if page.items == 0 || page.items >= pageSize {
		return
	}
	if page.next != "" || (first && page.hasCount && page.count > int64(page.items)) {
		g.pageCap = max(g.pageCap, page.items)
	}
}

// fullPage is the number of alerts at which a page may have been cut.
func (g *graphPaging) fullPage(pageSize int) int {
	if g.pageCap > 0 {
		return g.pageCap
	}
	return pageSize
}

func (g *graphPaging) learnChainCap(n int) {
	n = max(n, 1)
	if g.chainCap == 0 || n < g.chainCap {
		g.chainCap = n
	}
}

// sayOncef logs at info once per key, then at debug.
func (g *graphPaging) sayOncef(k *known, key, format string, args ...interface{}) {
	if g.said == nil {
		g.said = make(map[string]bool)
	}
	if g.said[key] {
		k.log.Debugf(format, args...)
		return
	}
	g.said[key] = true
	k.log.Infof(format, args...)
}

// partTarget is how many alerts one chain can be trusted to deliver.
func (r *graphReader) partTarget(counted bool, paging *graphPaging) int {
	page := paging.fullPage(r.pageSize)
	if !counted {
		return page - 1
	}
	target := graphPagesPerPart * page
	if paging.chainCap > 0 {
		target = min(target, paging.chainCap)
	}
	return max(min(target, r.maxAlertsPerGather/2), page-1, 1)
}

// splitAt ends the first half of a part not read whole: estimated from the
// count and the times delivered, at least 100 ns, at most half the part.
func (r *graphReader) splitAt(part *graphPart, paging *graphPaging) time.Time {
	width := part.to.Sub(part.from)
	cut := width / 2
	if part.hasCount && part.count > 0 {
		est := time.Duration(float64(width) * graphFill * float64(r.partTarget(true, paging)) / float64(part.count))
		cut = min(cut, est)
	}
	if len(part.times) > 0 {
		times := slices.Clone(part.times)
		slices.SortFunc(times, func(x, y time.Time) int { return x.Compare(y) })
		cut = min(cut, times[(len(times)-1)/2].Sub(part.from))
	}
	return part.from.Add(max(cut.Truncate(tick), tick))
}

// nextWidth sizes the part after one read whole, from what it held; after
// an empty part, the rest of the chunk.
func (r *graphReader) nextWidth(width time.Duration, part *graphPart, paging *graphPaging) time.Duration {
	n := len(part.distinct)
	if n == 0 {
		return maxDuration
	}
	target := r.partTarget(part.hasCount || (!paging.noCount && paging.seen.count == "present"), paging)
	next := min(graphGrowth*width, time.Duration(float64(width)*graphFill*float64(target)/float64(n)))
	return max(next.Truncate(tick), tick)
}

const maxDuration = time.Duration(1<<63 - 1)

// dropRefusedOption leaves out $orderby or $count, which alerts_v2 does not
// promise, after a 400 naming it, and reports whether to ask again.
func (*graphReader) dropRefusedOption(k *known, err error) bool {
	var se *statusError
	if !errors.As(err, &se) || se.status != http.StatusBadRequest {
		return false
	}
	switch {
	case !k.paging.noOrderBy && orderByWord.MatchString(se.body):
		k.paging.noOrderBy = true
		k.paging.seen.orderBy = "rejected"
		k.log.Warnf("The Graph API refused $orderby (%v): querying without it from now on; the plugin does not depend on the order", err)
		return true
	case !k.paging.noCount && countWord.MatchString(se.body):
		k.paging.noCount = true
		k.paging.seen.count = "rejected"
		k.log.Warnf("The Graph API refused $count (%v): querying without it from now on; windows are read in parts that fit one page", err)
		return true
	}
	return false
}

func graphStatusMeaning(status int) string {
	switch status {
	case http.StatusBadRequest:
		return "the query was refused: check service_sources and severities"
	case http.StatusUnauthorized:
		return "the token is invalid or expired, or was issued for another audience: check scopes and region"
	case http.StatusForbidden:
		return "the app lacks the SecurityAlert.Read.All application permission, or admin consent for it"
	case http.StatusNotFound:
		return "no alerts_v2 at this address: check region or endpoint_url"
	default:
		return commonStatusMeaning(status)
	}
}
