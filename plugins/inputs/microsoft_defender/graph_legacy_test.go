package microsoft_defender

import (
	"context"
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
	*graphBackend
}

const legacyGraphSkipCap = 6000

func (b legacyGraphReader) readSpan(ctx context.Context, p *poll, sp *span) (bool, error) {
	page := b.legacyFirstPage(sp.From, sp.To)
	var restartedAt time.Time
	everything := time.Unix(1<<40, 0)
	for {
		if p.budget == 0 || p.pastDeadline() {
			return false, nil
		}
		var pg graphPage
		r, err := p.request(ctx, b.send(page, time.Time{}, everything, &pg))
		if r.decoded > 0 && r.newest.After(sp.From) {
			sp.From = r.newest
			horizon := sp.End.Add(-time.Duration(p.m.Overlap))
			if sp.From.Before(horizon) {
				horizon = sp.From
			}
			p.m.cursor.forget(sp.Start.Add(-tick), horizon)
		}
		if err != nil || r.interrupted {
			return false, err
		}
		if pg.next == "" {
			return true, nil
		}
		nextURL, err := b.checkNextLink(pg.next)
		if err != nil {
			return false, err
		}
		skip, err := strconv.Atoi(nextURL.Query().Get("$skip"))
		if err != nil || skip+b.pageSize <= legacyGraphSkipCap {
			page = nextURL
			continue
		}
		if sp.From.Equal(restartedAt) {
			page = nextURL
			continue
		}
		restartedAt = sp.From
		page = b.legacyFirstPage(sp.From, sp.To)
	}
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
				m.backend = legacyGraphReader{m.backend.(*graphBackend)}
			})
			c := s.checkGraphVersions(p, start)
			t.Logf("%s: %d of %d readable versions never emitted, %d emitted twice", name, len(c.missing), c.readable, len(c.duplicated))
			require.Greater(t, len(c.missing), 100)
		})
	}
}
