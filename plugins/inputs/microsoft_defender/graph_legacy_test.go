package microsoft_defender

import (
	"net/url"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	simulator "github.com/sectelemetry/telegraf-defender/internal/sim"
)

// legacyGraphReader is the Graph paging the plugin had before it read in
// parts (git show 8a1bb09:plugins/inputs/microsoft_defender/graph.go), kept
// as the control of the scenarios: it trusts an ascending order, reads a
// missing next link as the end of the span and restarts by time before a
// $top + $skip of 6000.
type legacyGraphReader struct {
	*graphBackend
	// restartedAt is where the chain of this poll's span last restarted.
	restartedAt *time.Time
}

const legacyGraphSkipCap = 6000

func (b legacyGraphReader) next(sp *span, _ reading) *request {
	*b.restartedAt = time.Time{}
	// Every page is decoded for all of time: the reader looks at no time
	// but the newest it read.
	everything := &graphPart{to: time.Unix(1<<40, 0)}
	return &request{url: b.legacyFirstPage(sp.From, sp.To), ask: everything}
}

func (b legacyGraphReader) advance(sp *span, req *request, res *response, _ reading) move {
	var mv move
	if res.decoded > 0 && res.newest.After(sp.From) {
		sp.From = res.newest
		mv = move{kind: movePart, forgetAfter: sp.Start.Add(-tick), forgetBefore: sp.From}
	}
	pg := &req.ask.(*graphPart).page
	if res.err != nil {
		return move{kind: moveFailed, err: res.err}
	}
	if pg.next == "" {
		return move{kind: moveDone}
	}
	nextURL, err := b.checkNextLink(pg.next)
	if err != nil {
		return move{kind: moveFailed, err: err}
	}
	mv.then = &request{url: nextURL, ask: req.ask}
	skip, err := strconv.Atoi(nextURL.Query().Get("$skip"))
	if err != nil || skip+b.pageSize <= legacyGraphSkipCap || sp.From.Equal(*b.restartedAt) {
		return mv
	}
	*b.restartedAt = sp.From
	mv.then.url = b.legacyFirstPage(sp.From, sp.To)
	return mv
}

func (b legacyGraphReader) legacyFirstPage(from, to time.Time) *url.URL {
	u := b.firstPage(from, to, b.pageSize)
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
				m.backend = legacyGraphReader{m.backend.(*graphBackend), new(time.Time)}
			})
			c := s.checkGraphVersions(p, start)
			t.Logf("%s: %d of %d readable versions never emitted, %d emitted twice", name, len(c.missing), c.readable, len(c.duplicated))
			require.Greater(t, len(c.missing), 100)
		})
	}
}
