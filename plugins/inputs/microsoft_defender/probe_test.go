package microsoft_defender

import (
	"net/url"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/sectelemetry/telegraf-defender/internal/defendersim"
)

// Probe sends one minimal request, over the last hour (SIEM) or a page of
// three alerts of the last week (Graph), emits nothing and leaves the
// cursor where it was.
func TestProbeSendsOneMinimalRequest(t *testing.T) {
	s := newScenario(t, defendersim.Config{Seed: 3, Rate: 10, History: time.Hour})
	siem := s.plugin(nil)
	require.NoError(t, siem.Probe())
	graph := s.graphPlugin(nil)
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
		"$filter":  {"lastUpdateDateTime ge 2020-09-23T15:00:00.0000000Z and lastUpdateDateTime lt 2020-09-30T15:00:00.0000000Z"},
		"$orderby": {"lastUpdateDateTime asc"},
		"$count":   {"true"},
		"$top":     {"3"},
	}, pages[0].URL.Query())
	require.Equal(t, "$orderby honoured (ascending); @odata.nextLink carries $skip; @odata.count present", graph.ProbeObservations())
	require.Empty(t, siem.ProbeObservations())

	for _, p := range []*MicrosoftDefender{siem, graph} {
		require.True(t, p.cursor.watermark.IsZero())
		require.Nil(t, p.cursor.pending)
		require.Empty(t, p.cursor.seen)
	}
}
