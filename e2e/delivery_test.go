//go:build e2e

package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// Built into Telegraf with a buffer smaller than the backlog and InfluxDB
// down for the first 15 s: every detection reaches InfluxDB once. With
// max_undelivered_alerts below the buffer the plugin waits for the output
// and Telegraf drops nothing; above it Telegraf drops what overflows, the
// outputs report it rejected, and the plugin reads it again.
func TestInTreeOutputOutageLosesNothing(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name           string
		maxUndelivered int
		drops          bool
	}{
		{"bounded below the buffer", 400, false},
		{"above the buffer", 5000, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			sim, _, url := newStillSimulator(t, 47, 90)
			port := freePort(t)
			a := startInTree(t, t.TempDir(), "telegraf", fmt.Sprintf(`
[agent]
  interval = "1s"
  flush_interval = "1s"
  metric_batch_size = 500
  metric_buffer_limit = 1000
  omit_hostname = true
`)+siemSection(url, "e2e-secret", `delay = "0s"`, `initial_lookback = "2h"`,
				fmt.Sprintf("max_undelivered_alerts = %d", tc.maxUndelivered))+fmt.Sprintf(`
[[outputs.influxdb]]
  urls = ["http://127.0.0.1:%d"]
  database = "defender"
  timeout = "2s"
`, port))
			want := len(sim.All())
			require.Greater(t, want, 3000, "a backlog larger than the buffer")
			time.Sleep(15 * time.Second) // the outage
			db := startInfluxDBOn(t, port)
			points := func() int {
				for _, s := range db.queryIfExists(t, `SELECT count("full_id") FROM "defender_alert"`) {
					return int(s.Values[0][1].(float64))
				}
				return 0
			}
			waitFor(t, a, "every detection in InfluxDB", func() bool { return points() >= want })
			a.stop(t)
			require.Equal(t, want, points())
			dropped := strings.Contains(a.stderr.String(), "metrics have been dropped")
			require.Equal(t, tc.drops, dropped, "Telegraf's log:\n%s", a.stderr.String())
		})
	}
}
