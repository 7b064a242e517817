package scenario_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	simulator "github.com/sectelemetry/telegraf-defender/internal/sim"
)

// A 429 asking to wait a century is obeyed for an hour, with an error that
// says so; then the plugin reads on.
func TestCenturyRetryAfterIsCappedAtAnHour(t *testing.T) {
	bubble(t, func(t *testing.T) {
		s := newScenario(t, simulator.Config{Seed: 5, Rate: 10, History: time.Hour,
			Faults: simulator.FaultConfig{RetryAfter: 3153600000 * time.Second}})
		s.allowErrors = true
		p := s.plugin(nil)
		s.sim.Inject(simulator.FaultThrottle, 1)

		acc := s.poll(p)
		require.Equal(t, []string{`SIEM API at ` + simHost + `: the Retry-After of "3153600000" asks to wait 3153600000 seconds, ` +
			`more than the 1h0m0s the plugin waits at most: waiting 1h0m0s`}, s.errors)
		require.Equal(t, "partial", pollStatus(t, acc))
		require.Len(t, requestsTo(s.sim, "/api/alerts"), 1)

		// The polls of the next hour send nothing; the one an hour on reads.
		s.run(p, time.Hour)
		require.Len(t, requestsTo(s.sim, "/api/alerts"), 1)
		acc = s.poll(p)
		require.Equal(t, "ok", pollStatus(t, acc))
		require.NotEmpty(t, emittedIDs(acc))
		require.Len(t, s.errors, 1)
		require.Equal(t, fixedNow.Add(time.Hour), s.arrivalsTo("/api/alerts")[1], "the hour is counted from the 429")
	})
}
