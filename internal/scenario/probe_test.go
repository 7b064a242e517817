package scenario_test

import (
	"net/url"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/influxdata/telegraf/config"

	simulator "github.com/sectelemetry/telegraf-defender/internal/sim"
)

// Probe sends one minimal request over the last hour, for one detection
// (SIEM) or a page of one alert (Graph), emits nothing, logs nothing and
// leaves the cursor where it was: the first poll after it reads
// initial_lookback and emits all it finds.
func TestProbeSendsOneMinimalRequest(t *testing.T) {
	bubble(t, func(t *testing.T) {
		s := newScenario(t, simulator.Config{Seed: 3, Rate: 10, History: 3 * time.Hour})
		siem := s.plugin(nil)
		require.NoError(t, siem.Probe())
		// The polls below split their parts in several requests: no wait for
		// the rate limit, so that the two first polls read the same window.
		unlimited := func(m *MicrosoftDefender) { m.MaxRequestsPerMinute = 6000 }
		graph := s.graphPlugin(unlimited)
		require.NoError(t, graph.Probe())

		alerts := requestsTo(s.sim, "/api/alerts")
		require.Len(t, alerts, 1)
		require.Equal(t, url.Values{
			"sinceTimeUtc": {"2020-09-30T14:00:00.0000000Z"},
			"untilTimeUtc": {"2020-09-30T15:00:00.0000000Z"},
			"limit":        {"1"},
		}, alerts[0].URL.Query())
		pages := requestsTo(s.sim, graphAlertsPath)
		require.Len(t, pages, 1)
		require.Equal(t, url.Values{
			"$filter": {"lastUpdateDateTime ge 2020-09-30T14:00:00.0000000Z and lastUpdateDateTime lt 2020-09-30T15:00:00.0000000Z"},
			"$top":    {"1"},
		}, pages[0].URL.Query())
		require.Empty(t, s.logger.Messages())

		// The probes moved no cursor and marked nothing as emitted: the
		// first polls read initial_lookback and emit what plugins that never
		// probed emit.
		afterProbe := emittedKeys(s.poll(siem))
		require.Equal(t, firstRunWindows, windows(s.sim, 1))
		require.NotEmpty(t, afterProbe)
		require.Equal(t, emittedKeys(s.poll(s.plugin(nil))), afterProbe)
		afterProbe = emittedKeys(s.poll(graph))
		require.Equal(t, "lastUpdateDateTime ge 2020-09-30T13:00:00.0000000Z and lastUpdateDateTime lt 2020-09-30T14:00:00.0000000Z",
			requestsTo(s.sim, graphAlertsPath)[1].URL.Query().Get("$filter"))
		require.NotEmpty(t, afterProbe)
		require.Equal(t, emittedKeys(s.poll(s.graphPlugin(unlimited))), afterProbe)
	})
}

// Telegraf logs only the error of a failed probe (startup_error_behavior =
// "probe"): the step and the error, which carries the fix, as -check prints it.
func TestProbeErrorCarriesTheFix(t *testing.T) {
	bubble(t, func(t *testing.T) {
		s := newScenario(t, simulator.Config{Seed: 3, Rate: 10, History: time.Hour})
		p := s.plugin(func(m *MicrosoftDefender) { m.ClientSecret = config.NewSecret([]byte("wrong-secret")) })
		err := p.Probe()
		require.EqualError(t, err, "token: token request to "+simHost+
			" failed: HTTP 401 Unauthorized: invalid_client (AADSTS7000215). The client secret is wrong, or is the secret's ID "+
			"rather than its value: create a new client secret for the app and set its value as client_secret")
	})
}
