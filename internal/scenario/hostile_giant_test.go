package scenario_test

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/influxdata/telegraf/config"

	simulator "github.com/sectelemetry/telegraf-defender/internal/sim"
)

// A detection larger than max_body_size, polled at Telegraf's default
// interval (10 s) with the default max_requests_per_minute (60): finding
// its instant takes about 35 one-detection requests, more than one poll may
// send, and the next poll resumes the search instead of starting it over.
func TestUnreadableInstantSearchSpansPolls(t *testing.T) {
	bubble(t, func(t *testing.T) {
		s := newScenario(t, simulator.Config{Seed: 5, Rate: 12, History: 15 * time.Minute,
			Faults: simulator.FaultConfig{GiantRate: 0.005, GiantBytes: 300 * 1024}})
		p := s.plugin(func(m *MicrosoftDefender) {
			m.MaxBodySize = 256 * 1024
			m.InitialLookback = config.Duration(15 * time.Minute)
		})
		// Telegraf's ticker: a tick that finds the previous Gather running is
		// skipped.
		end := time.Now().Add(time.Hour)
		var stuckSince time.Time
		var longestStuck time.Duration
		var before time.Time
		for time.Now().Before(end) {
			started := time.Now()
			s.poll(p)
			after := s.position
			stuck := after.Equal(before)
			before = after
			if stuck {
				if stuckSince.IsZero() {
					stuckSince = started
				}
				longestStuck = max(longestStuck, time.Since(stuckSince))
			} else {
				stuckSince = time.Time{}
			}
			next := started.Add(10 * time.Second)
			for next.Before(time.Now()) {
				next = next.Add(10 * time.Second)
			}
			time.Sleep(time.Until(next))
		}
		// A search takes about 35 requests, at 60 a minute, over several polls.
		require.Less(t, longestStuck, 3*time.Minute, "the watermark stood still too long")
		var giants int
		for _, w := range s.logger.Warnings() {
			if strings.Contains(w, "cannot be read (larger than max_body_size") {
				giants++
			}
		}
		require.Positive(t, giants)
	})
}
