package scenario_test

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/stretchr/testify/require"

	"github.com/influxdata/telegraf"
	"github.com/influxdata/telegraf/agent"
	"github.com/influxdata/telegraf/models"
	"github.com/influxdata/telegraf/testutil"

	simulator "github.com/sectelemetry/telegraf-defender/internal/sim"
)

// Built into Telegraf, the plugin gets two accumulators: Start's, which
// keeps nanoseconds, and Gather's, which rounds to the agent's precision (a
// second for any interval of a second or more). Driven the way Telegraf's
// agent drives it, the plugin emits exactly what it emits into a
// testutil.Accumulator, nanoseconds included, and nothing through Gather's.
func TestGatherEmitsThroughStartsAccumulator(t *testing.T) {
	for _, api := range []string{"siem", "graph"} {
		t.Run(api, func(t *testing.T) {
			// Both polls start at the same time: each runs in a bubble of its
			// own, on a simulator of its own, whose stream is the same.
			newPlugin := func(s *scenario) *MicrosoftDefender {
				if api == "graph" {
					return s.graphPlugin(nil)
				}
				return s.plugin(nil)
			}
			var reference testutil.Accumulator
			bubble(t, func(t *testing.T) {
				s := newScenario(t, simulator.Config{Seed: 8, Rate: 20, History: 10 * time.Minute})
				require.NoError(t, newPlugin(s).Gather(&reference))
				require.Empty(t, reference.Errors)
			})

			var got []telegraf.Metric
			bubble(t, func(t *testing.T) {
				s := newScenario(t, simulator.Config{Seed: 8, Rate: 20, History: 10 * time.Minute})
				input := models.NewRunningInput(newPlugin(s), &models.InputConfig{Name: "microsoft_defender"})
				started := make(chan telegraf.Metric, 10*len(reference.Metrics))
				gathered := make(chan telegraf.Metric, 10*len(reference.Metrics))
				// As agent.startInputs and agent.runInputs set them up for an
				// [agent] without precision and an interval of 10s.
				startAcc := agent.NewAccumulator(input, started)
				startAcc.SetPrecision(time.Nanosecond)
				gatherAcc := agent.NewAccumulator(input, gathered)
				gatherAcc.SetPrecision(time.Second)
				require.NoError(t, input.Start(startAcc))
				require.NoError(t, input.Gather(gatherAcc))
				// The outputs take the alerts: Stop then counts them.
				for range len(started) {
					m := <-started
					m.Accept()
					got = append(got, m)
				}
				input.Stop()
				close(started)
				close(gathered)

				if n := len(drain(gathered)); n > 0 {
					t.Fatalf("%d metrics went to Gather's accumulator, which loses their nanoseconds", n)
				}
				got = append(got, drain(started)...)
			})
			// defender_poll's duration varies from poll to poll; counts are
			// at the window's end without tracking, once confirmed with it.
			for _, name := range []string{measurementAlert, measurementCount} {
				only := func(n string) bool { return n == name }
				var options []cmp.Option
				if name == measurementCount {
					options = append(options, testutil.IgnoreTime())
				}
				testutil.RequireMetricsEqual(t, selectMetrics(reference.GetTelegrafMetrics(), only),
					selectMetrics(got, only), append(options, testutil.SortMetrics())...)
			}
			require.Len(t, got, len(reference.Metrics))

			alerts := selectMetrics(got, func(name string) bool { return name == measurementAlert })
			require.Len(t, distinctPoints(alerts, time.Nanosecond), len(alerts))
			if api == "siem" {
				// The detections of one alert would merge when rounded.
				require.Less(t, len(distinctPoints(alerts, time.Second)), len(alerts))
			}
		})
	}
}

func drain(ch <-chan telegraf.Metric) []telegraf.Metric {
	var out []telegraf.Metric
	for m := range ch {
		out = append(out, m)
	}
	return out
}

// selectMetrics returns the metrics whose name keep accepts.
func selectMetrics(metrics []telegraf.Metric, keep func(name string) bool) []telegraf.Metric {
	var out []telegraf.Metric
	for _, m := range metrics {
		if keep(m.Name()) {
			out = append(out, m)
		}
	}
	return out
}

// distinctPoints is the set of (series, time) pairs a database such as
// InfluxDB would keep, with times rounded to precision.
func distinctPoints(metrics []telegraf.Metric, precision time.Duration) map[string]bool {
	points := make(map[string]bool, len(metrics))
	for _, m := range metrics {
		var key strings.Builder
		key.WriteString(m.Name())
		for _, tag := range m.TagList() {
			key.WriteString("," + tag.Key + "=" + tag.Value)
		}
		points[key.String()+" "+m.Time().Round(precision).String()] = true
	}
	return points
}
