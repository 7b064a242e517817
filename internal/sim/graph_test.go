package sim

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// graphPage is one alerts_v2 answer as a test reads it.
type graphPage struct {
	status int
	ids    []string
	next   string
	count  *int
	err    string
}

func graphGet(t *testing.T, server *httptest.Server, link string) graphPage {
	t.Helper()
	status, body := token(t, server, "/t/oauth2/v2.0/token", url.Values{
		"grant_type": {"client_credentials"}, "client_id": {"c"}, "client_secret": {"s"}, "scope": {"https://graph.microsoft.com/.default"},
	})
	require.Equal(t, http.StatusOK, status)
	req, err := http.NewRequest(http.MethodGet, link, nil)
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+body["access_token"].(string))
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	var page struct {
		Value []GraphAlert `json:"value"`
		Next  string       `json:"@odata.nextLink"`
		Count *int         `json:"@odata.count"`
		Error struct {
			Message string `json:"message"`
		} `json:"error"`
	}
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&page))
	out := graphPage{status: resp.StatusCode, next: page.Next, count: page.Count, err: page.Error.Message}
	for _, a := range page.Value {
		out.ids = append(out.ids, a.ID)
	}
	return out
}

// graphServer holds ten alerts, a0 (oldest) to a9, one a minute.
func graphServer(t *testing.T, g GraphBehaviour) *httptest.Server {
	t.Helper()
	sim, server := newTestServer(t, Config{Graph: g})
	for i := range 10 {
		updated := simNow.Add(time.Duration(i-10) * time.Minute).Format(TimeLayout)
		require.NoError(t, sim.AddGraph(GraphAlert{ID: fmt.Sprintf("a%d", i), LastUpdateDateTime: updated}))
	}
	return server
}

func graphQuery(server *httptest.Server, options string) string {
	return server.URL + "/v1.0/security/alerts_v2?$filter=" + url.QueryEscape("lastUpdateDateTime ge 2026-11-24T11:00:00Z") + options
}

// Each behaviour of GraphBehaviour, one at a time.
func TestGraphBehaviours(t *testing.T) {
	t.Run("default: asc honoured, $skip links, count", func(t *testing.T) {
		server := graphServer(t, GraphBehaviour{})
		first := graphGet(t, server, graphQuery(server, "&$orderby=lastUpdateDateTime+asc&$top=4&$count=true"))
		require.Equal(t, []string{"a0", "a1", "a2", "a3"}, first.ids)
		require.Equal(t, 10, *first.count)
		require.Contains(t, first.next, "%24skip=4")
		second := graphGet(t, server, first.next)
		require.Equal(t, []string{"a4", "a5", "a6", "a7"}, second.ids)
		third := graphGet(t, server, second.next)
		require.Equal(t, []string{"a8", "a9"}, third.ids)
		require.Empty(t, third.next)
	})
	t.Run("without $orderby newest first", func(t *testing.T) {
		server := graphServer(t, GraphBehaviour{})
		page := graphGet(t, server, graphQuery(server, "&$top=3"))
		require.Equal(t, []string{"a9", "a8", "a7"}, page.ids)
		require.Nil(t, page.count)
	})
	t.Run("$orderby ignored", func(t *testing.T) {
		server := graphServer(t, GraphBehaviour{Order: GraphOrderIgnored})
		page := graphGet(t, server, graphQuery(server, "&$orderby=lastUpdateDateTime+asc&$top=3"))
		require.Equal(t, []string{"a9", "a8", "a7"}, page.ids)
	})
	t.Run("$orderby rejected", func(t *testing.T) {
		server := graphServer(t, GraphBehaviour{Order: GraphOrderRejected})
		page := graphGet(t, server, graphQuery(server, "&$orderby=lastUpdateDateTime+asc"))
		require.Equal(t, http.StatusBadRequest, page.status)
		require.Equal(t, "Invalid OrderBy clause: OrderBy is not supported on this resource.", page.err)
	})
	t.Run("opaque $skiptoken", func(t *testing.T) {
		server := graphServer(t, GraphBehaviour{NextLink: GraphLinkSkipToken})
		first := graphGet(t, server, graphQuery(server, "&$top=6"))
		require.Contains(t, first.next, "%24skiptoken=")
		require.NotContains(t, first.next, "%24skip=")
		require.Equal(t, []string{"a3", "a2", "a1", "a0"}, graphGet(t, server, first.next).ids)
	})
	t.Run("no next link", func(t *testing.T) {
		server := graphServer(t, GraphBehaviour{NextLink: GraphLinkNone})
		page := graphGet(t, server, graphQuery(server, "&$top=4&$count=true"))
		require.Len(t, page.ids, 4)
		require.Empty(t, page.next)
		require.Equal(t, 10, *page.count)
	})
	t.Run("$skip above the maximum", func(t *testing.T) {
		server := graphServer(t, GraphBehaviour{MaxSkip: 5})
		require.Len(t, graphGet(t, server, graphQuery(server, "&$top=2&$skip=5")).ids, 2)
		page := graphGet(t, server, graphQuery(server, "&$top=2&$skip=6"))
		require.Equal(t, http.StatusBadRequest, page.status)
		require.Equal(t, "The $skip value 6 exceeds the maximum of 5.", page.err)
	})
	t.Run("chain ends silently", func(t *testing.T) {
		server := graphServer(t, GraphBehaviour{ChainEnd: 6})
		first := graphGet(t, server, graphQuery(server, "&$top=3"))
		second := graphGet(t, server, first.next)
		require.Len(t, second.ids, 3)
		require.Empty(t, second.next, "six alerts reached, four more match")
	})
	t.Run("$top clamped", func(t *testing.T) {
		server := graphServer(t, GraphBehaviour{MaxTop: 3})
		page := graphGet(t, server, graphQuery(server, "&$top=1000"))
		require.Len(t, page.ids, 3)
		require.Contains(t, page.next, "%24skip=3")
		require.Contains(t, page.next, "%24top=1000", "the next link repeats the $top asked for")
	})
	t.Run("unordered", func(t *testing.T) {
		server := graphServer(t, GraphBehaviour{Order: GraphOrderNone})
		all := graphGet(t, server, graphQuery(server, "&$orderby=lastUpdateDateTime+asc")).ids
		require.Equal(t, []string{"a5", "a8", "a1", "a6", "a9", "a4", "a7", "a3", "a2", "a0"}, all)
		first := graphGet(t, server, graphQuery(server, "&$top=4"))
		require.Equal(t, all[:4], first.ids, "the same order on every page")
		require.Equal(t, all[4:8], graphGet(t, server, first.next).ids)
	})
	t.Run("count always, offset", func(t *testing.T) {
		for offset, want := range map[int]int{0: 10, -4: 6, -1e9: 0, 1e9: 1e9 + 10} {
			server := graphServer(t, GraphBehaviour{Count: GraphCountAlways, CountOffset: offset})
			first := graphGet(t, server, graphQuery(server, "&$top=4"))
			require.Equal(t, want, *first.count)
			require.Equal(t, want, *graphGet(t, server, first.next).count, "on every page")
		}
	})
	t.Run("short pages", func(t *testing.T) {
		server := graphServer(t, GraphBehaviour{ShortPages: 1})
		first := graphGet(t, server, graphQuery(server, "&$top=4"))
		require.Equal(t, []string{"a9"}, first.ids)
		require.Contains(t, first.next, "%24skip=1")
		require.Contains(t, first.next, "%24top=4")
		require.Equal(t, []string{"a8", "a7", "a6", "a5"}, graphGet(t, server, first.next).ids, "one short page only")
	})
	t.Run("count ignored and rejected", func(t *testing.T) {
		server := graphServer(t, GraphBehaviour{Count: GraphCountIgnored})
		require.Nil(t, graphGet(t, server, graphQuery(server, "&$count=true")).count)
		server = graphServer(t, GraphBehaviour{Count: GraphCountRejected})
		page := graphGet(t, server, graphQuery(server, "&$count=true"))
		require.Equal(t, http.StatusBadRequest, page.status)
		require.Equal(t, "Query option '$count' is not allowed.", page.err)
	})
}

func TestGraphBehaviourCheck(t *testing.T) {
	require.NoError(t, (&GraphBehaviour{}).Check())
	require.EqualError(t, (&GraphBehaviour{Order: "desc"}).Check(), `graph order "desc" is none of asc, ignored, rejected, unordered`)
	require.EqualError(t, (&GraphBehaviour{MaxTop: -1}).Check(), "graph max skip, chain end, max top, short pages and late in chain must not be negative")
	require.EqualError(t, (&GraphBehaviour{LateInChain: -1}).Check(), "graph max skip, chain end, max top, short pages and late in chain must not be negative")
}
