package scenario_test

import (
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/influxdata/telegraf/testutil"

	simulator "github.com/sectelemetry/telegraf-defender/internal/sim"
)

// throttle answers 429, as Graph does past its budget, to a request that
// would be the limit+1-th to the alerts in a minute; throttled counts them.
type throttle struct {
	limit     int
	mu        sync.Mutex
	arrived   []time.Time
	throttled int
}

func (th *throttle) wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasSuffix(r.URL.Path, graphAlertsPath) {
			next.ServeHTTP(w, r)
			return
		}
		th.mu.Lock()
		now, inMinute := time.Now(), 0
		for _, at := range th.arrived {
			if now.Sub(at) < time.Minute {
				inMinute++
			}
		}
		th.arrived = append(th.arrived, now)
		if inMinute >= th.limit {
			th.throttled++
			th.mu.Unlock()
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(http.StatusTooManyRequests)
			return
		}
		th.mu.Unlock()
		next.ServeHTTP(w, r)
	})
}

// busiestMinute is the most requests that arrived within one minute.
func (th *throttle) busiestMinute() int {
	th.mu.Lock()
	defer th.mu.Unlock()
	most := 0
	for i, from := range th.arrived {
		n := 0
		for _, at := range th.arrived[i:] {
			if at.Sub(from) < time.Minute {
				n++
			}
		}
		most = max(most, n)
	}
	return most
}

// A short interval and a backlog of 20,000 alert versions: the polls send
// what max_requests_per_minute (the default, 60) allows and leave the rest
// to the next polls. No minute holds more than 60 requests, so a service
// whose budget that is never throttles, and the backlog is read whole,
// each version once.
func TestShortIntervalsStayWithinTheRequestBudget(t *testing.T) {
	for _, interval := range []time.Duration{time.Second, 10 * time.Second} {
		t.Run(interval.String(), func(t *testing.T) {
			bubble(t, func(t *testing.T) {
				th := &throttle{limit: 60}
				s := &scenario{emitted: make(map[string]int), logger: &testutil.CaptureLogger{}, wrap: th.wrap}
				s.serve(t, simulator.Config{})
				require.NoError(t, s.sim.AddGraph(graphAlertsAt(time.Now().Add(-2*time.Hour), 20000, 2*time.Hour/20000)...))
				p := s.graphPlugin(nil)
				for start := time.Now(); time.Since(start) < 20*time.Minute; time.Sleep(interval) {
					s.poll(p)
				}
				require.Zero(t, th.throttled, "requests answered 429")
				require.Equal(t, 60, th.busiestMinute(), "the budget is used, and no more")
				require.Len(t, s.emitted, 20000)
				for version, n := range s.emitted {
					if n != 1 {
						t.Fatalf("%s emitted %d times", version, n)
					}
				}
			})
		})
	}
}
