package microsoft_defender

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"time"
)

// How the Graph reader sizes its parts; see next.
const (
	// graphPagesPerPart is how many full pages a part aims at when the
	// service counts: more pages per chain mean fewer requests wasted on
	// splits, fewer mean less to re-read when a poll stops inside one.
	graphPagesPerPart = 20
	// graphFill is the share of its target a new part is sized for, so
	// that a part estimated from a count rarely overshoots.
	graphFill = 0.8
	// graphGrowth bounds how much wider than the last one a part that held
	// alerts makes the next.
	graphGrowth = 16
)

// graphLearned is what the service has shown of its paging. The reader
// adapts its requests to it; exactly-once never depends on it.
type graphLearned struct {
	noOrderBy bool // $orderby was refused with 400
	noCount   bool // $count was refused with 400
	// pageCap is the service's own page size when it is smaller than
	// page_size: the most alerts a page held that the service itself
	// showed to be cut (a next link, or @odata.count beyond it); 0 when
	// no page was.
	pageCap int
	// chainCap is the fewest alerts a chain delivered before the service
	// stopped it (a 400 on a next link, or the end of a chain at a full
	// page short of the count); 0 until that happened.
	chainCap int
	// said holds the messages logged once.
	said map[string]bool
	// seen is what -check reports.
	seen graphObserved
}

// graphObserved is what the service did with the options the plugin sent.
type graphObserved struct {
	orderBy  string // "asc", "newest first", "rejected", or "" before two times were compared
	nextLink string // "$skip", "$skiptoken", "other", or ""
	count    string // "present", "absent", "rejected", or ""
}

// graphPage is one page as decode read it.
type graphPage struct {
	items        int // alerts on the page, inside the part or not
	outside      int // alerts outside the part, left out
	firstOutside string
	inside       []graphVersionSeen // the alerts inside the part
	next         string
	count        int64
	hasCount     bool
	// ascending and descending: whether the inside alerts came in that
	// order, for -check and the split's estimate only.
	ascending, descending bool
}

type graphVersionSeen struct {
	id string
	at time.Time
}

func (g *graphPage) reset() {
	*g = graphPage{inside: g.inside[:0], ascending: true, descending: true}
}

func (g *graphPage) noteInside(a *graphAlert) {
	if n := len(g.inside); n > 0 {
		last := g.inside[n-1].at
		g.ascending = g.ascending && !a.lastUpdate.Before(last)
		g.descending = g.descending && !a.lastUpdate.After(last)
	}
	g.inside = append(g.inside, graphVersionSeen{a.identity(), a.lastUpdate})
}

// partRead is what one chain of pages delivered for a part of a span.
type partRead struct {
	pages    int
	distinct map[string]struct{} // the versions inside the part the chain held
	times    []time.Time         // their lastUpdateDateTime
	count    int64               // the first page's @odata.count, when hasCount
	hasCount bool
	// complete: the chain is known to have held every version of the part.
	complete bool
	// broken says why the chain could not be read to its end.
	broken string
}

// graphPart is a part [from, to) of a span, both on the 100 ns grid, read
// through one chain of pages: what each page request asks, and what the
// chain delivered so far. A poll that stops inside the chain drops it, and
// the next reads the part from its first page.
type graphPart struct {
	from, to time.Time
	read     partRead
	visited  map[string]bool // the next links followed
	page     graphPage       // the page decode read last
}

// next reads the span [From, End) of lastUpdateDateTime in parts
// [From, To): a part is read through one chain of @odata.nextLink pages,
// followed as they come, and when the chain is known to have held the
// whole part, From moves to To and the next part is sized from what this
// one held (advance). A part that one chain cannot be shown to hold whole
// (a 400 on a next link, a chain that ends short of @odata.count, a chain
// without a count, a loop, a link to another host) is split and its first
// half read again; what was emitted meanwhile is dropped as a duplicate.
// Nothing depends on the order of the alerts, and only times inside the
// part asked for are used.
func (b *graphBackend) next(sp *span, _ reading) *request {
	for sp.From.Before(sp.End) {
		if !sp.To.After(sp.From) || sp.To.After(sp.End) {
			sp.To = sp.End
		}
		// Bounds go out with 7 fractional digits, cut, not rounded.
		lo, hi := sp.From.Truncate(tick), sp.To.Truncate(tick)
		if hi.After(lo) {
			part := &graphPart{from: lo, to: hi, read: partRead{distinct: make(map[string]struct{})}, visited: make(map[string]bool)}
			return &request{url: b.firstPage(lo, hi, b.pageSize), ask: part}
		}
		// Less than 100 ns, which no query can ask for alone.
		sp.From, sp.To = sp.To, sp.End
	}
	return nil
}

// advance follows the part's chain of pages with the answer to one page,
// and moves the span when the chain ended.
func (b *graphBackend) advance(sp *span, req *request, res *response, in reading) move {
	part := req.ask.(*graphPart)
	pr, from, to := &part.read, part.from, part.to
	if err := res.err; err != nil {
		if pr.pages == 0 && b.dropRefusedOption(in.log, err) {
			return move{then: &request{url: b.firstPage(from, to, b.pageSize), ask: part, within: true}}
		}
		if pr.pages > 0 && isRefusedPage(err) {
			pr.broken = fmt.Sprintf("next link %d refused", pr.pages)
			b.learnChainCap(len(pr.distinct))
			b.sayOncef(in.log, "next-refused", "The Graph API refused a next link after %d alerts (%v): reading such windows in smaller parts from now on",
				len(pr.distinct), err)
			return b.ended(sp, part, in)
		}
		if isUnreadable(err) {
			// Smaller parts make smaller pages, down to the one
			// instant that holds what cannot be read.
			pr.broken = "a page larger than max_body_size, or not JSON"
			return b.ended(sp, part, in)
		}
		return move{kind: moveFailed, err: err}
	}
	page := &part.page
	pr.pages++
	counts := move{outOfWindow: b.notePage(in.log, from, to, page, pr.pages == 1)}
	var nextURL *url.URL
	if page.next != "" {
		// A link to another place is never followed, whatever else
		// the page says.
		var err error
		if nextURL, err = b.checkNextLink(page.next); err != nil {
			counts.errors++
			in.log.warnf("Graph paging: %v", err)
		}
	}
	ended := func() move {
		mv := b.ended(sp, part, in)
		mv.outOfWindow, mv.errors = counts.outOfWindow, counts.errors
		return mv
	}
	if pr.pages == 1 && len(page.inside) == 0 {
		// A first page without any alert of the part, whatever its
		// link or count says, means the part holds none.
		pr.complete = true
		return ended()
	}
	added := 0
	for _, v := range page.inside {
		if _, ok := pr.distinct[v.id]; !ok {
			pr.distinct[v.id] = struct{}{}
			pr.times = append(pr.times, v.at)
			added++
		}
	}
	if pr.pages == 1 {
		pr.count, pr.hasCount = page.count, page.hasCount
	}
	if page.next == "" || nextURL != nil {
		b.learnPageSize(page, pr.pages == 1)
	}
	full := page.items >= b.fullPage()
	counted := pr.hasCount && int64(len(pr.distinct)) >= pr.count
	switch {
	case counted || (page.next == "" && pr.pages == 1 && !full):
		pr.complete = true
		return ended()
	case page.next == "" && full && pr.hasCount:
		pr.broken = fmt.Sprintf("the chain ended at a full page after %d of %d alerts", len(pr.distinct), pr.count)
		b.learnChainCap(len(pr.distinct))
		b.sayOncef(in.log, "chain-ended",
			"A chain of Graph pages ended after %d alerts although @odata.count said %d: reading such windows in smaller parts from now on",
			len(pr.distinct), pr.count)
		return ended()
	case page.next == "" && full:
		pr.broken = "the chain ended at a full page, without a count"
		return ended()
	case page.next == "":
		pr.broken = fmt.Sprintf("the chain ended after %d of %d alerts", len(pr.distinct), pr.count)
		return ended()
	case nextURL == nil:
		if pr.pages == 1 && !full {
			// Short of a full page, the link cannot lead to more of
			// the part: a page is full while more follows.
			pr.complete = true
		} else {
			pr.broken = "a next link to another place"
		}
		return ended()
	}
	switch {
	case !pr.hasCount:
		// Without a count no chain of pages can be shown whole: an
		// update between two pages shifts the later ones under a
		// $skip and an alert is passed over unseen. Parts that fit
		// one page need no such proof.
		pr.broken = "a next link without @odata.count"
		return ended()
	case b.learned.chainCap > 0 && pr.count > int64(b.learned.chainCap):
		pr.broken = fmt.Sprintf("%d alerts, more than a chain delivers", pr.count)
		return ended()
	case part.visited[page.next] || added == 0:
		pr.broken = "a next link that leads back or to nothing new"
		in.log.warnf("The Graph API's next links lead back to pages already read or to nothing new: reading [%s, %s) in parts instead",
			from.Format(time.RFC3339Nano), to.Format(time.RFC3339Nano))
		return ended()
	}
	part.visited[page.next] = true
	counts.then = &request{url: nextURL, ask: part}
	return counts
}

// ended moves the span on after the chain of a part ended: past the part
// when the chain held it whole, or to the first half of a part that could
// not be shown whole.
func (b *graphBackend) ended(sp *span, part *graphPart, in reading) move {
	pr, lo, hi := &part.read, part.from, part.to
	width := hi.Sub(lo)
	if !pr.complete && width > tick {
		sp.To = b.splitAt(lo, hi, pr)
		in.log.Debugf("Graph part [%s, %s) not read whole (%s): reading [%s, %s) first",
			lo.Format(time.RFC3339Nano), hi.Format(time.RFC3339Nano), pr.broken,
			lo.Format(time.RFC3339Nano), sp.To.Truncate(tick).Format(time.RFC3339Nano))
		return move{kind: moveSplit}
	}
	if !pr.complete {
		// One instant of lastUpdateDateTime holds more than the
		// service lets one chain deliver: nothing narrower can be
		// asked, so the rest of that instant is out of reach.
		in.log.warnf("Alerts sharing lastUpdateDateTime %s could not all be read (%s): %d read, moving on",
			lo.Format(time.RFC3339Nano), pr.broken, len(pr.distinct))
	}
	next := b.nextWidth(width, pr)
	sp.From = sp.To
	sp.To = sp.End
	if next < sp.End.Sub(sp.From) {
		sp.To = sp.From.Add(next)
	}
	return move{kind: movePart, forgetAfter: sp.Start.Add(-tick), forgetBefore: sp.From}
}

// notePage learns from one page and reports alerts outside the part; it
// returns how many there were.
func (b *graphBackend) notePage(log logger, from, to time.Time, page *graphPage, first bool) int64 {
	if page.outside > 0 {
		log.warnf("The Graph API sent %s last updated outside the window asked for, [%s, %s) (the first: %s): left out",
			countOf(page.outside, "alert"), from.Format(time.RFC3339Nano), to.Format(time.RFC3339Nano), truncate(page.firstOutside, 160))
	}
	seen := &b.learned.seen
	if first {
		switch {
		case page.hasCount:
			seen.count = "present"
		case !b.learned.noCount:
			seen.count = "absent"
			b.sayOncef(log, "no-count", "The Graph API sends no @odata.count: windows are read in parts that fit one page")
		}
	}
	if page.next != "" {
		seen.nextLink = nextLinkForm(page.next)
	}
	if len(page.inside) > 1 && !page.inside[0].at.Equal(page.inside[len(page.inside)-1].at) && !b.learned.noOrderBy {
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

// nextLinkForm names the form of a next link for -check; the reader never
// looks inside one.
func nextLinkForm(link string) string {
	switch {
	case skipTokenParam.MatchString(link):
		return "$skiptoken"
	case skipParam.MatchString(link):
		return "$skip"
	}
	return "other"
}

// learnPageSize notices a service that clamps $top silently: a page
// shorter than asked is cut when a next link follows it, or when the
// first page's count says more match.
func (b *graphBackend) learnPageSize(page *graphPage, first bool) {
	if page.items == 0 || page.items >= b.pageSize {
		return
	}
	if page.next != "" || (first && page.hasCount && page.count > int64(page.items)) {
		b.learned.pageCap = max(b.learned.pageCap, page.items)
	}
}

// fullPage is the number of alerts at which a page may have been cut: the
// page size asked for, or the service's own when it showed a smaller one.
// A service that clamps $top, sends no next link and no count gives no
// sign of it; the README says so.
func (b *graphBackend) fullPage() int {
	if b.learned.pageCap > 0 {
		return b.learned.pageCap
	}
	return b.pageSize
}

func (b *graphBackend) learnChainCap(n int) {
	n = max(n, 1)
	if b.learned.chainCap == 0 || n < b.learned.chainCap {
		b.learned.chainCap = n
	}
}

// partTarget is how many alerts a part should hold: what one chain can be
// trusted to deliver.
func (b *graphBackend) partTarget(counted bool) int {
	page := b.fullPage()
	if !counted {
		return page - 1
	}
	target := graphPagesPerPart * page
	if b.learned.chainCap > 0 {
		target = min(target, b.learned.chainCap)
	}
	// A poll that stops inside a part reads it again from its start.
	return max(min(target, b.maxAlertsPerGather/2), page-1, 1)
}

// splitAt is the end of the first half of a part that could not be read
// whole: estimated from the count and from the times the chain delivered
// (the alerts read are the oldest ones when the answer is ascending), and
// at least one 100 ns step, at most half of the part.
func (b *graphBackend) splitAt(from, to time.Time, pr *partRead) time.Time {
	width := to.Sub(from)
	cut := width / 2
	if pr.hasCount && pr.count > 0 {
		est := time.Duration(float64(width) * graphFill * float64(b.partTarget(true)) / float64(pr.count))
		cut = min(cut, est)
	}
	if len(pr.times) > 0 {
		times := slices.Clone(pr.times)
		slices.SortFunc(times, func(x, y time.Time) int { return x.Compare(y) })
		// At least half of what the chain held shares the part's first
		// instant: read that instant alone.
		cut = min(cut, times[(len(times)-1)/2].Sub(from))
	}
	return from.Add(max(cut.Truncate(tick), tick))
}

// nextWidth sizes the part after one read whole, from the versions it
// held: after an empty part, the rest of the span.
func (b *graphBackend) nextWidth(width time.Duration, pr *partRead) time.Duration {
	n := len(pr.distinct)
	if n == 0 {
		return maxDuration
	}
	target := b.partTarget(pr.hasCount || (!b.learned.noCount && b.learned.seen.count == "present"))
	next := min(graphGrowth*width, time.Duration(float64(width)*graphFill*float64(target)/float64(n)))
	return max(next.Truncate(tick), tick)
}

const maxDuration = time.Duration(1<<63 - 1)

// dropRefusedOption handles a 400 to a first page that names $orderby or
// $count, options the documentation of alerts_v2 does not promise: the
// option is left out from then on, which the log says once. It reports
// whether the query should be sent again.
func (b *graphBackend) dropRefusedOption(log logger, err error) bool {
	var se *statusError
	if !errors.As(err, &se) || se.status != http.StatusBadRequest {
		return false
	}
	switch {
	case !b.learned.noOrderBy && orderByWord.MatchString(se.body):
		b.learned.noOrderBy = true
		b.learned.seen.orderBy = "rejected"
		log.warnf("The Graph API refused $orderby (%v): querying without it from now on; the plugin does not depend on the order", err)
		return true
	case !b.learned.noCount && countWord.MatchString(se.body):
		b.learned.noCount = true
		b.learned.seen.count = "rejected"
		log.warnf("The Graph API refused $count (%v): querying without it from now on; windows are read in parts that fit one page", err)
		return true
	}
	return false
}

// isRefusedPage reports an answer that no retry changes: the service will
// not serve this next link.
func isRefusedPage(err error) bool {
	var se *statusError
	if !errors.As(err, &se) {
		return false
	}
	switch se.status {
	case http.StatusUnauthorized, http.StatusForbidden, http.StatusTooManyRequests:
		return false
	}
	return se.status >= 400 && se.status < 500
}

// sayOncef logs what the service showed of its paging the first time only;
// later ones go to the debug log.
func (b *graphBackend) sayOncef(log logger, key, format string, args ...interface{}) {
	if b.learned.said == nil {
		b.learned.said = make(map[string]bool)
	}
	if b.learned.said[key] {
		log.Debug(log.redact(fmt.Sprintf(format, args...)))
		return
	}
	b.learned.said[key] = true
	log.Info(log.redact(fmt.Sprintf(format, args...)))
}

// countOf says "1 alert", "2 alerts".
func countOf(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}
