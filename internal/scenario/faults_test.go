package scenario_test

import (
	"path/filepath"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/influxdata/telegraf/config"
	"github.com/influxdata/telegraf/testutil"

	simulator "github.com/sectelemetry/telegraf-defender/internal/sim"
)

// Every fault of the simulator, injected while the plugin works off a
// backfill and then follows the stream: each run ends with every detection
// emitted exactly once, the problems explained, and no secret anywhere.
func TestFaultScenarios(t *testing.T) {
	tests := []struct {
		name      string
		faults    simulator.FaultConfig
		configure func(*MicrosoftDefender)
		// inject runs before poll number i.
		inject   func(sim *simulator.Server, i int)
		warnings []string // substrings some warning must hold
		errors   []string // substrings some error must hold
	}{
		{
			name:   "429 storm with Retry-After in seconds",
			faults: simulator.FaultConfig{RetryAfter: 20 * time.Second},
			inject: func(sim *simulator.Server, i int) {
				if i%7 == 0 {
					sim.Inject(simulator.FaultThrottle, 3)
				}
			},
			warnings: []string{"answered 429 Too Many Requests (throttled)", "Retry 1 of 3 in 20s (as Retry-After asks): "},
		},
		{
			name:   "429 with an HTTP-date Retry-After longer than a poll",
			faults: simulator.FaultConfig{RetryAfter: 3 * time.Minute, RetryAfterAsDate: true},
			inject: func(sim *simulator.Server, i int) {
				if i == 3 {
					sim.Inject(simulator.FaultThrottle, 1)
				}
			},
			warnings: []string{"the wait of 3m0s would pass its deadline", "(Retry-After): no request in this poll"},
		},
		{
			name: "500 bursts longer than max_retries",
			inject: func(sim *simulator.Server, i int) {
				if i%5 == 1 {
					sim.Inject(simulator.FaultServerError, 5)
				}
			},
			warnings: []string{"answered 500 Internal Server Error (service error)", "Retry 3 of 3 in"},
			errors:   []string{`answered 500 Internal Server Error (service error): body "<html><body><h1>500 - Internal server error.</h1></body></html>"`},
		},
		{
			name: "connection resets",
			inject: func(sim *simulator.Server, i int) {
				if i%4 == 0 {
					sim.Inject(simulator.FaultReset, 2)
				}
			},
			warnings: []string{"connection reset by peer", "Retry 2 of 3"},
		},
		{
			name: "truncated bodies",
			inject: func(sim *simulator.Server, i int) {
				if i%3 == 0 {
					sim.Inject(simulator.FaultTruncate, 1)
				}
			},
			warnings: []string{"response truncated at byte"},
		},
		{
			name: "token endpoint outage",
			inject: func(sim *simulator.Server, i int) {
				if i == 2 || i == 9 {
					sim.ExpireTokens()
					sim.Inject(simulator.FaultTokenDown, 3)
				}
			},
			warnings: []string{"answered 401 Unauthorized", "token request to", "HTTP 503 Service Unavailable", "Retry 3 of 3"},
		},
		{
			name: "expired tokens mid-window",
			inject: func(sim *simulator.Server, i int) {
				if i%2 == 1 {
					sim.ExpireTokens()
				}
			},
			warnings: []string{`W! [] Retrying at once with a new token: SIEM API at 127.0.0.1`,
				`answered 401 Unauthorized (the token is invalid or expired, was issued for another audience (the SIEM API's is ` +
					`https://graph.windows.net), or the request is malformed): ` +
					`body "The access token has expired."`},
		},
		{
			name:      "trickling responses",
			faults:    simulator.FaultConfig{TrickleDelay: 20 * time.Millisecond},
			configure: func(m *MicrosoftDefender) { m.Timeout = config.Duration(2 * time.Second) },
			inject: func(sim *simulator.Server, i int) {
				if i == 1 || i == 6 {
					sim.Inject(simulator.FaultTrickle, 1)
				}
			},
			// The cause's words are net/http's and depend on which of its
			// goroutines sees the timeout first ("context deadline exceeded"
			// or "request canceled (Client.Timeout or context cancellation
			// while reading body)"): the warning is checked up to them.
			warnings: []string{"(backing off): reading the SIEM API answer from " + simHost + ": detection 0: "},
		},
		{
			name:      "oversized bodies",
			faults:    simulator.FaultConfig{PadBytes: 8 * 1024},
			configure: func(m *MicrosoftDefender) { m.MaxBodySize = config.Size(256 * 1024) },
			inject: func(sim *simulator.Server, i int) {
				if i == 0 || i == 8 {
					sim.Inject(simulator.FaultOversize, 1)
				}
			},
			// The poll goes on with smaller requests: a warning, no error.
			warnings: []string{"An answer grew past max_body_size (262144 bytes) after"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			bubble(t, func(t *testing.T) {
				s := newScenario(t, simulator.Config{Seed: 13, Rate: 10, History: 3 * time.Hour, Faults: tt.faults})
				s.allowErrors = true
				stateFile := filepath.Join(t.TempDir(), "defender.state")
				p := s.plugin(func(m *MicrosoftDefender) {
					m.MaxAlertsPerGather = 300
					m.StateFile = stateFile
					m.AuthMethod, m.RefreshToken = "refresh_token", config.NewSecret([]byte(testRefreshToken))
					if tt.configure != nil {
						tt.configure(m)
					}
				})
				start := firstWindowStart(p)
				for i := range 40 {
					tt.inject(s.sim, i)
					s.poll(p)
					time.Sleep(pollInterval)
					if i == 20 {
						p.Stop()
						p = s.plugin(func(m *MicrosoftDefender) {
							m.MaxAlertsPerGather = 300
							m.StateFile = stateFile
							if tt.configure != nil {
								tt.configure(m)
							}
						})
					}
				}
				s.run(p, 5*time.Minute)
				s.settled(p, start, 0)
				p.Stop()

				var messages []string
				for _, entry := range s.logger.Messages() {
					messages = append(messages, entry.String())
				}
				for _, want := range tt.warnings {
					require.True(t, containsAny(s.logger.Warnings(), want), "no warning holds %q; warnings:\n%s", want, strings.Join(s.logger.Warnings(), "\n"))
				}
				for _, want := range tt.errors {
					require.True(t, containsAny(s.errors, want), "no error holds %q; errors:\n%s", want, strings.Join(s.errors, "\n"))
				}
				if len(tt.errors) == 0 {
					require.Empty(t, s.errors)
				}
				for _, msg := range append(messages, s.errors...) {
					requireNoSecret(t, msg)
				}
			})
		})
	}
}

// Invalid credentials fail at once, once per poll: no retry loop.
func TestInvalidCredentialsAreNotRetried(t *testing.T) {
	bubble(t, func(t *testing.T) {
		s := newScenario(t, simulator.Config{Seed: 1, Rate: 5, History: time.Hour})
		s.allowErrors = true
		p := s.plugin(func(m *MicrosoftDefender) { m.ClientSecret = config.NewSecret([]byte("expired-" + testClientSecret)) })
		for range 3 {
			s.poll(p)
			time.Sleep(pollInterval)
		}
		require.Len(t, s.errors, 3)
		require.Len(t, requestsTo(s.sim, "/token"), 3)
		require.Empty(t, s.logger.Warnings())
		require.Contains(t, s.errors[0], "HTTP 401 Unauthorized: invalid_client (AADSTS7000215)")
		for _, msg := range s.errors {
			require.NotContains(t, msg, "expired-"+testClientSecret)
		}
	})
}

// Interrupt ends a poll whose request hangs: the request is cancelled
// rather than left to its timeout, the poll is partial, the position stays
// where it was, and Stop, once Gather returned, saves it.
func TestInterruptCancelsAPollInFlight(t *testing.T) {
	bubble(t, func(t *testing.T) {
		s := newScenario(t, simulator.Config{Seed: 1, Rate: 5, History: time.Hour})
		stateFile := filepath.Join(t.TempDir(), "defender.state")
		p := s.plugin(func(m *MicrosoftDefender) {
			m.StateFile = stateFile
			m.Timeout = config.Duration(time.Hour)
		})
		s.poll(p)
		sent := len(requestsTo(s.sim, "/api/alerts"))
		require.Equal(t, []string{firstRunWindows[0], firstRunWindows[1],
			"2020-09-30T13:50:00.0000000Z 2020-09-30T14:00:12.0010000Z", // the short answer's oldest millisecond and below: nothing more
			firstRunWindows[2]}, windows(s.sim, 0))
		time.Sleep(pollInterval)
		s.sim.Inject(simulator.FaultHang, 1)

		interrupted := time.Now()
		acc := interruptAfterRequests(t, s, p, sent+1) // the last one hangs
		require.Equal(t, interrupted, time.Now(), "cancelled, not left to its timeout")
		require.Empty(t, acc.Errors, "an interruption is not an error")
		require.Equal(t, "partial", pollStatus(t, acc))
		require.Contains(t, s.logger.Messages(), testutil.Entry{Level: 'I', Text: "Poll cancelled: the plugin is stopping; the next start resumes here"})

		// An interrupted plugin sends nothing more.
		time.Sleep(pollInterval)
		s.poll(p)
		require.Len(t, requestsTo(s.sim, "/api/alerts"), sent+1)
		p.Stop()

		// The position is the first poll's: the restarted plugin reads from
		// the first poll's end less the overlap, the interrupted poll's
		// window included.
		restarted := s.plugin(func(m *MicrosoftDefender) { m.StateFile = stateFile })
		s.poll(restarted)
		require.Equal(t, []string{
			"2020-09-30T14:50:00.0000000Z 2020-09-30T15:01:00.0000000Z", // interrupted
			"2020-09-30T14:50:00.0000000Z 2020-09-30T15:02:00.0000000Z",
		}, windows(s.sim, sent))
		restarted.Stop()
	})
}

// A poll interrupted after it emitted part of its window, then a clean
// stop and a start: nothing the interrupted poll emitted comes again, and
// nothing is lost.
func TestInterruptedPollRepeatsNothingAfterARestart(t *testing.T) {
	bubble(t, func(t *testing.T) {
		s := newScenario(t, simulator.Config{Seed: 6, Rate: 10, History: 3 * time.Hour})
		stateFile := filepath.Join(t.TempDir(), "defender.state")
		configure := func(m *MicrosoftDefender) {
			m.StateFile = stateFile
			m.Timeout = config.Duration(time.Hour)
		}
		p := s.plugin(configure)
		start := firstWindowStart(p)
		// The poll's first request is answered, its second hangs.
		s.sim.Inject(simulator.FaultNone, 1)
		s.sim.Inject(simulator.FaultHang, 1)

		acc := interruptAfterRequests(t, s, p, 2)
		require.Empty(t, acc.Errors)
		require.Equal(t, "partial", pollStatus(t, acc))
		s.record(acc)
		emittedBefore := len(emittedIDs(acc))
		require.Positive(t, emittedBefore, "the first answer was emitted before the interruption")
		p.Stop()

		time.Sleep(pollInterval)
		p = s.plugin(configure) // a new process: everything but the state file is gone
		s.run(p, 10*time.Minute)
		s.settled(p, start, 0)
		p.Stop()
	})
}

// interruptAfterRequests runs a Gather of p and interrupts it once the
// simulator has received n alerts requests and every goroutine waits; it
// returns what the poll emitted, after its Gather returned and the
// simulator's handlers ended.
func interruptAfterRequests(t *testing.T, s *scenario, p *MicrosoftDefender, n int) *testutil.Accumulator {
	t.Helper()
	var acc testutil.Accumulator
	done := make(chan struct{})
	go func() {
		defer close(done)
		p.Gather(&acc) //nolint:errcheck // Gather reports through the accumulator
	}()
	// The n-th request hangs until the plugin gives up on it: the clock
	// stands still while every goroutine waits for another.
	synctest.Wait()
	require.Len(t, requestsTo(s.sim, "/api/alerts"), n)
	p.Interrupt()
	<-done
	synctest.Wait() // the hung request's handler ends with its connection
	return &acc
}

// max_requests_per_minute spaces the requests of a poll that needs many:
// at 6 a minute, one poll of a minute sends 6, ten seconds apart, and
// leaves the rest to the next poll.
func TestRequestsPerMinuteAreLimited(t *testing.T) {
	bubble(t, func(t *testing.T) {
		s := newScenario(t, simulator.Config{Seed: 6, Rate: 20, History: 2 * time.Hour})
		p := s.plugin(func(m *MicrosoftDefender) {
			m.PageSize = 5
			m.MaxRequestsPerMinute = 6
		})
		acc := s.poll(p)
		require.Equal(t, int64(6), pollFields(t, acc)["requests"])
		var gaps []time.Duration
		arrivals := s.arrivalsTo("/api/alerts")
		for i := 1; i < len(arrivals); i++ {
			gaps = append(gaps, arrivals[i].Sub(arrivals[i-1]))
		}
		require.Equal(t, []time.Duration{10 * time.Second, 10 * time.Second, 10 * time.Second, 10 * time.Second, 10 * time.Second}, gaps)
		require.Equal(t, true, pollFields(t, acc)["backlog"])
		// The request left for the next poll failed nothing.
		require.Equal(t, int64(0), pollFields(t, acc)["errors"])
		require.Len(t, requestsTo(s.sim, "/api/alerts"), 6)
	})
}
