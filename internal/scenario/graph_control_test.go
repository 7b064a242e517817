package scenario_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/influxdata/telegraf/config"

	simulator "github.com/sectelemetry/telegraf-defender/internal/sim"
)

// The control of the Graph scenarios: the same scenario read without delay
// and overlap loses the versions that become visible late, and the check
// of the scenarios finds them missing, under the service peers assume as
// under the harshest that still counts.
func TestGraphScenarioWithoutOverlapLosesVersions(t *testing.T) {
	for name, behaviour := range map[string]simulator.GraphBehaviour{
		"as peers assume": {},
		"newest first, no next links, $top clamped": {
			Order: simulator.GraphOrderIgnored, NextLink: simulator.GraphLinkNone, MaxTop: 50,
		},
	} {
		t.Run(name, func(t *testing.T) {
			bubble(t, func(t *testing.T) {
				s, p, start := playGraphScenario(t, behaviour, func(m *MicrosoftDefender) {
					m.Delay = 0
					m.Overlap = config.Duration(time.Nanosecond)
				})
				c := s.checkGraphVersions(p, start)
				t.Logf("%s: %d of %d readable versions never emitted, %d emitted twice", name, len(c.missing), c.readable, len(c.duplicated))
				require.Greater(t, len(c.missing), 100)
			})
		})
	}
}
