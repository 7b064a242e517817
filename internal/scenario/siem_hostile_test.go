package scenario_test

import (
	"fmt"
	"regexp"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/influxdata/telegraf/testutil"

	simulator "github.com/sectelemetry/telegraf-defender/internal/sim"
)

// SIEM services that answer in ways Microsoft does not exclude (issue 23,
// items 5 and 6), each played by the simulator.

// backoff is the jittered wait a retry warning names.
var backoff = regexp.MustCompile(`in \d+(\.\d+)?m?s \(backing off\)`)

// retryWarnings are the logged warnings, the waits of backoffs left out.
func retryWarnings(logger *testutil.CaptureLogger) []string {
	out := make([]string, 0, len(logger.Warnings()))
	for _, w := range logger.Warnings() {
		out = append(out, backoff.ReplaceAllString(w, "in … (backing off)"))
	}
	return out
}

// Malformed answers (an unknown member nested 100,000 deep, a doubled
// comma), then honest ones, over bursts of three detections that share an
// instant: every detection arrives once. Up to max_retries malformed
// answers in a row cost one retry each; more make the chunk's requests
// smaller (not one detection each) until it is read, and no instant is
// passed over. An older reader took a malformed answer for a large one and
// read one detection per request, for good.
func TestSIEMMalformedAnswersAreRetried(t *testing.T) {
	const (
		nested = "detection 0: invalid JSON at byte 10009: exceeded max depth"
		syntax = "after detection 69: invalid JSON at byte 136291: invalid character ',' at start of value"
		retry  = "W! [] Retry %d of 3 in … (backing off): reading the SIEM API answer from 127.0.0.1:8080: "
	)
	for _, tt := range []struct {
		name     string
		fault    simulator.Fault
		n        int // malformed answers in a row
		requests int // over ten polls, the first checking below its short answer
		warnings []string
	}{
		{"two nested 100,000 deep", simulator.FaultNested, 2, 15, []string{
			fmt.Sprintf(retry, 1) + nested, fmt.Sprintf(retry, 2) + nested}},
		{"two with a syntax error", simulator.FaultSyntax, 2, 15, []string{
			fmt.Sprintf(retry, 1) + syntax, fmt.Sprintf(retry, 2) + syntax}},
		{"five with a syntax error", simulator.FaultSyntax, 5, 19, []string{
			fmt.Sprintf(retry, 1) + syntax, fmt.Sprintf(retry, 2) + syntax, fmt.Sprintf(retry, 3) + syntax,
			"W! [] An answer was malformed after 70 detections, also when retried: asking for at most 70 per request until the chunk is read",
			fmt.Sprintf(retry, 1) + "detection 34: invalid JSON at byte 69125: invalid character ',' at start of value"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			bubble(t, func(t *testing.T) {
				s := newScenario(t, simulator.Config{Seed: 9, Rate: 1, History: 2 * time.Hour, BurstEvery: 20 * time.Minute, BurstSize: 3})
				p := s.plugin(nil)
				start := firstWindowStart(p)
				s.sim.Inject(tt.fault, tt.n)
				s.run(p, 10*time.Minute)
				s.settled(p, start, 0)
				require.Equal(t, tt.warnings, retryWarnings(s.logger))
				require.Len(t, requestsTo(s.sim, "/api/alerts"), tt.requests)
			})
		})
	}
}

// Detections without FullId, AlertId or IocUniqueId, read again by every
// poll's overlap: each is emitted once, told apart by its content, and the
// repeats are counted as duplicates. An older reader emitted them again at
// every poll.
func TestSIEMDetectionsWithoutIDs(t *testing.T) {
	bubble(t, func(t *testing.T) {
		s := newScenario(t, simulator.Config{Seed: 9, Rate: 1, History: 2 * time.Hour, Faults: simulator.FaultConfig{NoIDRate: 0.2}})
		p := s.plugin(nil)
		start := firstWindowStart(p)
		emitted := make(map[int64]int) // by ReportID, which every detection has
		var withoutIDs, duplicates int64
		for range 10 {
			var acc testutil.Accumulator
			require.NoError(t, p.Gather(&acc))
			require.Empty(t, acc.Errors)
			for _, m := range acc.GetTelegrafMetrics() {
				switch m.Name() {
				case measurementAlert:
					id, _ := m.GetField("report_id")
					emitted[id.(int64)]++
					if _, ok := m.GetField("full_id"); !ok {
						withoutIDs++
					}
				case measurementPoll:
					n, _ := m.GetField("duplicates_dropped")
					duplicates += n.(int64)
				}
			}
			time.Sleep(pollInterval)
		}
		readUpTo := time.Now().Add(-pollInterval)
		want := make(map[int64]int)
		var wantWithout int64
		for _, d := range s.sim.All() {
			lpt, err := time.Parse(time.RFC3339Nano, d.LastProcessedTimeUtc)
			require.NoError(t, err)
			if !lpt.Before(start) && !lpt.After(readUpTo) {
				want[d.ReportID] = 1
				if s.sim.IsWithoutIDs(d.FullID) {
					wantWithout++
				}
			}
		}
		require.Equal(t, want, emitted)
		require.Equal(t, wantWithout, withoutIDs)
		require.Positive(t, wantWithout)
		require.Positive(t, duplicates, "the overlap read them again")
		require.Empty(t, s.logger.Warnings())
	})
}

// A service whose limit answers the oldest detections of a window, not the
// newest as the seeds document: the poll fails with an error that says so,
// and the window is not read past. An older reader walked on below the
// answer's oldest detection and lost the rest silently.
func TestSIEMLimitThatAnswersTheOldest(t *testing.T) {
	bubble(t, func(t *testing.T) {
		s := newScenario(t, simulator.Config{Seed: 9, Rate: 1, History: 2 * time.Hour, SIEM: simulator.SIEMBehaviour{LimitOldest: true}})
		s.allowErrors = true
		p := s.plugin(func(m *MicrosoftDefender) { m.PageSize = 10 })
		start := firstWindowStart(p)
		s.run(p, 5*time.Minute)
		require.Len(t, s.errors, s.polls, "every poll fails")
		require.Equal(t, []string{
			"the SIEM API's answer to limit=10 held not the newest detections of 2020-09-30T13:00:00Z to 2020-09-30T14:00:00Z: " +
				"one at 2020-09-30T13:08:00Z came only when asked for above them; it would lose detections, so the window is not read on",
		}, s.errors[:1])
		// Nothing the plugin's position passed was left out.
		var missing []string
		for _, d := range s.sim.All() {
			lpt, err := time.Parse(time.RFC3339Nano, d.LastProcessedTimeUtc)
			require.NoError(t, err)
			if !lpt.Before(start) && !lpt.After(s.position) && s.emitted[d.FullID] == 0 {
				missing = append(missing, d.LastProcessedTimeUtc)
			}
		}
		require.Empty(t, missing, "detections passed over; the position is %s, the errors: %q", s.position, s.errors)
	})
}

// A service that answers at most 7 detections whatever limit asks for,
// without saying so, over bursts that share an instant: every detection
// once, and one warning a chunk with more than 7. An older reader took the
// short answer for the whole window and lost the rest silently.
func TestSIEMLimitTheServiceLowers(t *testing.T) {
	bubble(t, func(t *testing.T) {
		s := newScenario(t, simulator.Config{Seed: 9, Rate: 1, History: 2 * time.Hour, BurstEvery: 20 * time.Minute, BurstSize: 3,
			SIEM: simulator.SIEMBehaviour{MaxLimit: 7}})
		p := s.plugin(nil)
		start := firstWindowStart(p)
		s.run(p, 10*time.Minute)
		s.settled(p, start, 0)
		require.NotEmpty(t, s.logger.Warnings())
		for _, w := range s.logger.Warnings() {
			require.Regexp(t, `^W! \[\] The SIEM API answered 7 detections to limit=\d+ with more below them: it answers at most 7 a request`, w)
		}
	})
}

// limit = 1 over three detections of real size at three instants: one
// request each, one to find nothing older, and one above the newest to
// check the order: no warning that detections share an instant. An older
// reader warned so for each of them and sent 24 requests.
func TestSIEMLimitOneOverRealDetections(t *testing.T) {
	bubble(t, func(t *testing.T) {
		s := newScenario(t, simulator.Config{})
		generated := simulator.New(simulator.Config{Seed: 9, Rate: 1, History: 30 * time.Minute}).All()
		var three []simulator.Detection
		for _, d := range generated {
			if len(three) == 0 || d.LastProcessedTimeUtc != three[len(three)-1].LastProcessedTimeUtc {
				three = append(three, d)
			}
			if len(three) == 3 {
				break
			}
		}
		require.NoError(t, s.sim.Add(three...))
		p := s.plugin(func(m *MicrosoftDefender) { m.PageSize = 1 })
		start := firstWindowStart(p)
		s.poll(p)
		time.Sleep(pollInterval)
		s.poll(p)
		s.settled(p, start, 0)
		require.Len(t, s.emitted, 3)
		require.Empty(t, s.logger.Warnings())
		// In the chunk that holds them: each with limit 1 and then its instant
		// alone, one above the newest to check the order, one below them.
		require.Equal(t, []string{
			"2020-09-30T13:00:00.0000000Z 2020-09-30T14:00:00.0000000Z", // the first chunk, empty
			"2020-09-30T13:50:00.0000000Z 2020-09-30T14:50:00.0000000Z",
			"2020-09-30T14:33:00.0000001Z 2020-09-30T14:50:00.0000000Z", // the check
			"2020-09-30T14:33:00.0000000Z 2020-09-30T14:33:00.0000000Z",
			"2020-09-30T13:50:00.0000000Z 2020-09-30T14:32:59.9999999Z",
			"2020-09-30T14:32:00.0000000Z 2020-09-30T14:32:00.0000000Z",
			"2020-09-30T13:50:00.0000000Z 2020-09-30T14:31:59.9999999Z",
			"2020-09-30T14:31:00.0000000Z 2020-09-30T14:31:00.0000000Z",
			"2020-09-30T13:50:00.0000000Z 2020-09-30T14:30:59.9999999Z",
			"2020-09-30T14:40:00.0000000Z 2020-09-30T15:00:00.0000000Z", // the last chunk, empty
			"2020-09-30T14:50:00.0000000Z 2020-09-30T15:01:04.0000000Z", // the next poll
		}, windows(s.sim, 0))
	})
}

// More malformed answers in a row than max_retries: the answer was not
// large, and no warning may say it grew past max_body_size (issue 23 item
// 5 names that misreport).
func TestSIEMMalformedAnswersAreNotCalledLarge(t *testing.T) {
	bubble(t, func(t *testing.T) {
		s := newScenario(t, simulator.Config{Seed: 9, Rate: 1, History: 2 * time.Hour})
		p := s.plugin(nil)
		start := firstWindowStart(p)
		s.sim.Inject(simulator.FaultSyntax, 5)
		s.run(p, 3*time.Minute)
		s.settled(p, start, 0)
		for _, w := range s.logger.Warnings() {
			require.NotContains(t, w, "grew past max_body_size")
		}
	})
}
