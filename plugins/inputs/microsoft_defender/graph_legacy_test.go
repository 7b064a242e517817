package microsoft_defender

import (
	"net/url"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/sectelemetry/telegraf-defender/plugins/inputs/microsoft_defender/simulator"
)

// legacyGraphReader is the Graph paging the plugin had before it read in
// parts (git show 8a1bb09:plugins/inputs/microsoft_defender/graph.go), kept
// as the control of the scenarios: it trusts an ascending order, reads a
// missing next link as the end of the span and restarts by time before a
// $top + $skip of 6000.
type legacyGraphReader struct {
	*graphReader
	// restartedAt is where the chain of this poll's chunk last restarted.
	restartedAt *time.Time
}

const legacyGraphSkipCap = 6000

func (b legacyGraphReader) next(c *chunk, _ *known) *request {
	if !c.From.Before(c.End) {
		return nil
	}
	*b.restartedAt = time.Time{}
	// Every page is decoded for all of time: the reader looks at no time
	// but the newest it read.
	c.graph.part = &graphPart{to: time.Unix(1<<40, 0)}
	return &request{url: b.legacyFirstPage(c.From, c.To)}
}

func (b legacyGraphReader) after(c *chunk, a *answer, _ *known) progress {
	var pr progress
	if a.decoded > 0 && a.newest.After(c.From) {
		c.From = a.newest
		pr = progress{settledAfter: c.Start.Add(-tick), settledBefore: c.From}
	}
	pg := &c.graph.part.page
	if a.err != nil {
		return progress{err: a.err}
	}
	if pg.next == "" {
		c.From = c.End
		return pr
	}
	nextURL, err := b.checkNextLink(pg.next)
	if err != nil {
		return progress{err: err}
	}
	pr.then = &request{url: nextURL}
	skip, err := strconv.Atoi(nextURL.Query().Get("$skip"))
	if err != nil || skip+b.pageSize <= legacyGraphSkipCap || c.From.Equal(*b.restartedAt) {
		return pr
	}
	*b.restartedAt = c.From
	pr.then.url = b.legacyFirstPage(c.From, c.To)
	return pr
}

func (b legacyGraphReader) legacyFirstPage(from, to time.Time) *url.URL {
	u := b.firstPage(from, to, b.pageSize, &graphPaging{})
	q := u.Query()
	q.Del("$count")
	u.RawQuery = q.Encode()
	return u
}

// The control: the same scenario with the paging of before loses versions
// when the service answers newest first, and when it sends no next links.
func TestGraphLegacyPagingLosesVersions(t *testing.T) {
	for name, behaviour := range map[string]simulator.GraphBehaviour{
		"newest first":  {Order: simulator.GraphOrderIgnored},
		"no next links": {NextLink: simulator.GraphLinkNone},
	} {
		t.Run(name, func(t *testing.T) {
			s, p, start := playGraphScenario(t, behaviour, func(m *MicrosoftDefender) {
				m.reader = legacyGraphReader{m.reader.(*graphReader), new(time.Time)}
			})
			c := s.checkGraphVersions(p, start)
			t.Logf("%s: %d of %d readable versions never emitted, %d emitted twice", name, len(c.missing), c.readable, len(c.duplicated))
			require.Greater(t, len(c.missing), 100)
		})
	}
}
