package microsoft_defender

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
)

// graphReader reads Graph security alerts_v2 or incidents: the versions last updated in a chunk, in parts
// [From, To) of one page each. Only a page without @odata.nextLink holding fewer records than $top shows a
// part whole; any other splits it in time and its first half is read again. Counts, order and chains are
// never trusted: a chain is followed only in a part of one 100 ns instant, which cannot be split.
type graphReader struct {
	endpoint *url.URL
	pageSize int
	noun     string // of the records, for messages
	filter   string // $filter clauses after the time bounds
	expand   string // $expand, left out for the rest of a chunk after a 500
	// decodePage streams a page's records to handle and returns its next link.
	decodePage         func(body io.Reader, handle func(record) bool) (string, error)
	keep               func(record) bool // when set, which records in the part are emitted
	maxAlertsPerGather int               // bounds the chain of one instant
}

// newGraphReader reads the alerts of api = "graph".
func newGraphReader(m *MicrosoftDefender, endpoint *url.URL) *graphReader {
	groups := slices.Clone(m.MachineGroups) // the reader keeps no pointer into the plugin
	needs := evidenceNeeds{raw: m.IncludeEvidence, groups: groups}
	return &graphReader{endpoint: endpoint, pageSize: m.PageSize, noun: "alert", maxAlertsPerGather: m.MaxAlertsPerGather,
		filter: odataAnyOf("serviceSource", m.ServiceSources) + odataAnyOf("severity", m.Severities),
		decodePage: func(body io.Reader, handle func(record) bool) (string, error) {
			return decodeGraphPage(body, needs, func(a *graphAlert) bool { return handle(a) })
		},
		keep: func(r record) bool {
			// An alert on machines of several groups is kept for any of them.
			return len(groups) == 0 || r.(*graphAlert).Evidence.matched
		},
	}
}

// newIncidentReader reads the incidents of api = "graph_incidents" with the walk of the alerts.
func newIncidentReader(m *MicrosoftDefender, endpoint *url.URL) *graphReader {
	r := &graphReader{endpoint: endpoint, pageSize: m.PageSize, noun: "incident", maxAlertsPerGather: m.MaxAlertsPerGather,
		filter: odataAnyOf("severity", m.Severities), decodePage: decodeIncidentPage}
	if m.IncludeIncidentAlerts {
		r.expand = "alerts"
	}
	return r
}

// graphWalk is the part [from, to) of a chunk being read, on the 100 ns grid, and its last page as decode
// read it; a poll stopped inside the part reads it again.
type graphWalk struct {
	from, to     time.Time
	items        int         // records on the page, inside the part or not
	outside      int         // records outside the part, left out
	firstOutside string      // the identity of the first
	times        []time.Time // lastUpdateDateTime of those inside
	next         string
	pages        int // of the part
	// A part of one instant: the versions its chain held, the links followed, those new on the last page.
	chain, visited map[string]bool
	added          int
	// confirming: the page is behind the next link of a short first page, which held `held` records of the
	// part, `shown` in all.
	confirming  bool
	held, shown int
	pageCap     int  // the records a page holds at most, when the service showed fewer than $top; kept for the chunk
	plain       bool // $expand left out, after a 500; kept for the chunk
	oversized   bool // a record with what $expand added is over maxRecordBytes
}

// ask asks for the first page of the records last updated in [from, to).
func (r *graphReader) ask(c *chunk, from, to time.Time, top int) *url.URL {
	c.graph = graphWalk{from: from, to: to, pageCap: c.graph.pageCap, plain: c.graph.plain}
	if to.Sub(from) == tick {
		c.graph.chain, c.graph.visited = make(map[string]bool), make(map[string]bool)
	}
	filter := fmt.Sprintf("lastUpdateDateTime ge %s and lastUpdateDateTime lt %s",
		from.UTC().Format(siemTimeLayout), to.UTC().Format(siemTimeLayout))
	q := r.endpoint.Query()
	q.Set("$filter", filter+r.filter)
	q.Set("$top", strconv.Itoa(top))
	if r.expand != "" && !c.graph.plain {
		q.Set("$expand", r.expand)
	}
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

func (r *graphReader) next(c *chunk, _ *known) *request {
	for c.From.Before(c.End) {
		if !c.To.After(c.From) || c.To.After(c.End) {
			c.To = c.End
		}
		// Bounds go out with 7 fractional digits, cut, not rounded.
		if lo, hi := c.From.Truncate(tick), c.To.Truncate(tick); hi.After(lo) {
			return &request{url: r.ask(c, lo, hi, r.pageSize)}
		}
		// Less than 100 ns, which no query can ask for alone.
		c.From, c.To = c.To, c.End
	}
	return nil
}

// decode streams one page's records and notes the page. Records outside the part are left out: their times
// must not steer the cursor, and their own part reads them if real. Those without a time are handed on.
func (r *graphReader) decode(c *chunk, body io.Reader, emit func(record) bool) error {
	w := &c.graph
	w.items, w.outside, w.times, w.added, w.oversized = 0, 0, w.times[:0], 0, false
	var err error
	w.next, err = r.decodePage(body, func(a record) bool {
		w.items++
		if r.expand != "" && !w.plain && a.problems().skip == skipTooLarge {
			w.oversized = true // read again without $expand, not skipped
			return true
		}
		at := a.cursorTime()
		if a.problems().skip != "" || at.IsZero() {
			return emit(a)
		}
		if at.Before(w.from) || !at.Before(w.to) {
			if w.outside++; w.outside == 1 {
				w.firstOutside = a.identity()
			}
			return true
		}
		w.times = append(w.times, at)
		if w.chain != nil && !w.chain[a.identity()] {
			w.chain[a.identity()] = true
			w.added++
		}
		if r.keep != nil && !r.keep(a) {
			return true
		}
		return emit(a)
	})
	return err
}

// after moves the chunk on with one page: past the part read whole, to the first half of one that is not,
// or along the chain of an instant.
func (r *graphReader) after(c *chunk, a *answer, k *known) progress {
	w := &c.graph
	pr := progress{outOfWindow: int64(w.outside)}
	if w.outside > 0 {
		k.warnOncef("outside", "The Graph API sent %s last updated outside the window asked for, [%s, %s) (the first: %s): left out",
			countOf(w.outside, r.noun), w.from.Format(time.RFC3339Nano), w.to.Format(time.RFC3339Nano), truncate(w.firstOutside, 160))
	}
	w.pages++
	if w.items > w.pageCap {
		w.pageCap = 0 // a page held more: what was learned is forgotten
	}
	var why string
	switch {
	case r.expand != "" && !w.plain && (w.oversized || isServerError(a.err)):
		// As a peer saw on a large tenant, for good: the alerts are not guessed.
		cause := fmt.Sprint(a.err)
		if w.oversized {
			cause = fmt.Sprintf("an %s with them is over %d MiB", r.noun, maxRecordBytes>>20)
		}
		k.warnOncef("expand", "Reading %ss with $expand=%s failed, so those last updated from %s to %s are read without it "+
			"(alert_count and alert_ids left out; include_incident_alerts = false stops asking for them): %s",
			r.noun, r.expand, w.from.Format(time.RFC3339Nano), c.End.Format(time.RFC3339Nano), cause)
		w.plain = true
		pr.then = &request{url: r.ask(c, w.from, w.to, r.pageSize)}
		return pr
	case w.confirming && a.err == nil && w.items == 0 && w.next == "":
		return r.settle(c, pr, w.held)
	case w.confirming && (a.err == nil || a.class == failRefused || errors.Is(a.err, errBodyTooLarge)):
		if a.err == nil {
			// More came behind a short page: pages hold the longer of the two (one odd page does not make it 1).
			w.pageCap = max(w.shown, w.items)
		}
		return r.split(c, k, pr)
	case a.err == nil && w.next == "" && w.items < r.pageSize && w.pages == 1:
		return r.settle(c, pr, len(w.times))
	case a.err != nil && w.pages > 1 && a.class == failRefused:
		why = fmt.Sprintf("a next link was refused: %v", a.err)
	case a.err != nil && !errors.Is(a.err, errBodyTooLarge):
		// The poll's to retry or report: malformed JSON, say, comes back in any part.
		pr.err = a.err
		return pr
	case a.err != nil && w.chain != nil:
		// One instant over max_body_size: skipped and counted, as a cap says.
		pr.unreadable = w.from
		return r.settle(c, pr, len(w.chain))
	case a.err == nil && w.chain == nil && w.next != "" && w.items < r.fullPage(w) && w.pages == 1:
		// A short page with a next link, as some services send on every last page: an empty page behind it
		// shows the part whole.
		if u := r.sameOrigin(w.next); u != nil {
			w.confirming, w.held, w.shown = true, len(w.times), w.items
			pr.then = &request{url: u, continues: true}
			return pr
		}
		return r.split(c, k, pr)
	case a.err == nil && w.chain == nil && w.items >= r.fullPage(w) && w.outside == w.items:
		// A full page with nothing of the part: splitting it would crawl, 100 ns a request.
		pr.err = fmt.Errorf("the Graph API answered [%s, %s) with %s, all last updated outside it: it does not apply $filter, "+
			"so the window is not read on", w.from.Format(time.RFC3339Nano), w.to.Format(time.RFC3339Nano), countOf(w.items, r.noun))
		return pr
	case w.chain == nil:
		return r.split(c, k, pr)
	case w.next == "" && w.pages == 1:
		why = "a full page without a next link"
	case w.next == "":
		why = fmt.Sprintf("a chain of %d pages, which proves nothing", w.pages)
	case w.visited[w.next]:
		why = "a next link leads back"
	case w.pages > 1 && w.added == 0:
		why = "a page added nothing new"
	case w.pages*r.pageSize > max(r.maxAlertsPerGather, r.pageSize):
		why = fmt.Sprintf("%d pages read", w.pages)
	}
	if why == "" {
		if u := r.sameOrigin(w.next); u != nil {
			w.visited[w.next] = true
			// The chain of one instant is read in one poll, whatever its deadline: begun again in the next, a chain
			// longer than a poll's requests would never end. maxAlertsPerGather bounds it.
			pr.then = &request{url: u, continues: true}
			return pr
		}
		to := "a link that is no URL" // named as a refused redirect's target: the rest may hold anything
		if u, err := url.Parse(w.next); err == nil {
			to = originSeenFrom(u, r.endpoint)
		}
		k.log.Warnf("Graph paging: the Graph API at %s sent an @odata.nextLink to another place, not followed: %s",
			r.endpoint.Host, sanitize(to, maxBodySnippet))
		pr.errors++
		why = "a next link to another place"
	}
	k.log.Warnf("%s%ss sharing lastUpdateDateTime %s could not all be shown read whole (%s): %d read, moving on",
		strings.ToUpper(r.noun[:1]), r.noun[1:], w.from.Format(time.RFC3339Nano), why, len(w.chain))
	return r.settle(c, pr, len(w.chain))
}

// isServerError reports a 500 answer, which $expand=alerts may cause.
func isServerError(err error) bool {
	var statusErr *statusError
	return errors.As(err, &statusErr) && statusErr.status == http.StatusInternalServerError
}

// fullPage is how many records a page holds at most: $top, or fewer where the service showed so.
func (r *graphReader) fullPage(w *graphWalk) int {
	return min(r.pageSize, cmp.Or(w.pageCap, r.pageSize))
}

// sameOrigin is a next link to follow: only to the API's own origin, as it carries the token (as redirects).
func (r *graphReader) sameOrigin(next string) *url.URL {
	u, err := url.Parse(next)
	if err != nil || origin(u) != origin(r.endpoint) {
		return nil
	}
	return u
}

// split ends the part's first half at the median time the page held inside it, or at half the part if
// earlier, and at least 100 ns after its start.
func (*graphReader) split(c *chunk, k *known, pr progress) progress {
	w := &c.graph
	cut := w.to.Sub(w.from) / 2
	if len(w.times) > 0 {
		slices.SortFunc(w.times, time.Time.Compare)
		cut = min(cut, w.times[(len(w.times)-1)/2].Sub(w.from))
	}
	c.To = w.from.Add(max(cut.Truncate(tick), tick))
	k.log.Debugf("Graph part [%s, %s) not shown whole: reading [%[1]s, %s) first", w.from.Format(time.RFC3339Nano),
		w.to.Format(time.RFC3339Nano), c.To.Format(time.RFC3339Nano))
	return pr
}

// settle moves the chunk past the part and sizes the next from the n records this one held, to about 0.8 of
// a page, at most 16 times as wide; after an empty part, the rest of the chunk.
func (r *graphReader) settle(c *chunk, pr progress, n int) progress {
	width := c.graph.to.Sub(c.graph.from)
	c.From, c.To = c.To, c.End
	if n > 0 {
		next := min(16*width, time.Duration(float64(width)*0.8*float64(r.fullPage(&c.graph))/float64(n)))
		if next = max(next.Truncate(tick), tick); next < c.End.Sub(c.From) {
			c.To = c.From.Add(next)
		}
	}
	pr.settledAfter, pr.settledBefore = c.Start.Add(-tick), c.From
	return pr
}
