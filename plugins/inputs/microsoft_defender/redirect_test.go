package microsoft_defender

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/influxdata/telegraf/testutil"
)

// elsewhere is a server that must never be reached; it counts the requests
// it got anyway.
func elsewhere(t *testing.T) (*httptest.Server, *atomic.Int32) {
	t.Helper()
	var hits atomic.Int32
	server := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		hits.Add(1)
		fmt.Fprint(w, `{"token_type":"Bearer","expires_in":3599,"access_token":"forged"}`)
	}))
	t.Cleanup(server.Close)
	return server, &hits
}

func TestTokenRequestRedirectsAreRefused(t *testing.T) {
	for _, status := range []int{http.StatusTemporaryRedirect, http.StatusPermanentRedirect, http.StatusFound} {
		t.Run(http.StatusText(status), func(t *testing.T) {
			other, otherHits := elsewhere(t)
			var tokenRequests atomic.Int32
			server := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if strings.HasSuffix(r.URL.Path, "/token") {
					tokenRequests.Add(1)
					http.Redirect(w, r, other.URL+r.URL.Path, status)
					return
				}
				t.Errorf("unexpected API request %s", r.URL)
			}))
			t.Cleanup(server.Close)
			logger := &testutil.CaptureLogger{}
			plugin := stubbedPlugin(t, server, logger)

			msg, acc := gatherError(t, plugin, logger)
			require.Equal(t, fmt.Sprintf("token request to %s failed: refused the redirect of the token request from %s to %s: "+
				"the credentials are sent only to the configured token endpoint; set login_endpoint to the address that answers",
				mustParse(t, server.URL).Host, origin(mustParse(t, server.URL)), origin(mustParse(t, other.URL))), msg)
			require.Zero(t, otherHits.Load(), "the redirect target got the form with the client secret")
			require.Equal(t, int32(1), tokenRequests.Load(), "a refused redirect is not retried")
			requirePollStatus(t, acc, "error")
		})
	}
}

func TestAPIRedirectsStayOnTheEndpointsOrigin(t *testing.T) {
	other, otherHits := elsewhere(t)
	server := stub(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/api/alerts":
			// Same origin: followed.
			http.Redirect(w, r, "/api/moved?"+r.URL.RawQuery, http.StatusFound)
		case "/api/moved":
			http.Redirect(w, r, strings.Replace(other.URL, "127.0.0.1", "localhost", 1)+"/api/alerts?"+r.URL.RawQuery, http.StatusFound)
		default:
			t.Errorf("unexpected request %s", r.URL)
		}
	})
	logger := &testutil.CaptureLogger{}
	plugin := stubbedPlugin(t, server, logger)

	msg, _ := gatherError(t, plugin, logger)
	otherURL := mustParse(t, other.URL)
	require.Equal(t, fmt.Sprintf("SIEM API request to %s failed: refused the redirect of the API request from %s to http://(another host):%s: "+
		"the token is sent only to the scheme, host and port of the configured endpoint; set endpoint_url to the address that answers",
		mustParse(t, server.URL).Host, origin(mustParse(t, server.URL)), otherURL.Port()), msg)
	require.Zero(t, otherHits.Load(), "the redirect target got the bearer token")
}

func TestAPIRedirectsOnTheSameOriginAreFollowed(t *testing.T) {
	server := stub(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/api/alerts":
			http.Redirect(w, r, "/api/v2/alerts?"+r.URL.RawQuery, http.StatusTemporaryRedirect)
		case "/api/v2/alerts":
			if got := r.Header.Get("Authorization"); got != "Bearer "+testAccessToken {
				t.Errorf("the redirected request carries %q", got)
			}
			fmt.Fprintf(w, "[%s]", detectionJSON("da1", "2020-09-30T14:30:00Z"))
		}
	})
	plugin := stubbedPlugin(t, server, nil)
	acc := gatherOK(t, plugin)
	require.Equal(t, []string{"da1"}, emittedIDs(acc))
}

func TestSameOriginRedirects(t *testing.T) {
	tests := []struct {
		from, to string
		refused  bool
	}{
		{"https://api.example.com/api/alerts", "https://api.example.com/other", false},
		{"https://api.example.com/api/alerts", "https://API.example.com:443/other", false},
		{"https://api.example.com/api/alerts", "http://api.example.com/api/alerts", true},
		{"https://api.example.com/api/alerts", "https://api.example.com:8443/api/alerts", true},
		{"https://api.example.com/api/alerts", "https://evil.example.com/api/alerts", true},
		{"http://127.0.0.1:8080/api/alerts", "http://127.0.0.1:8081/api/alerts", true},
	}
	for _, tt := range tests {
		t.Run(tt.from+" -> "+tt.to, func(t *testing.T) {
			via := []*http.Request{{URL: mustParse(t, tt.from)}}
			err := sameOriginRedirects(&http.Request{URL: mustParse(t, tt.to)}, via)
			if tt.refused {
				to := originSeenFrom(mustParse(t, tt.to), via[0].URL)
				require.ErrorContains(t, err, "refused the redirect of the API request from "+origin(via[0].URL)+" to "+to)
			} else {
				require.NoError(t, err)
			}
		})
	}

	// A chain on the same origin ends after maxRedirects hops.
	via := make([]*http.Request, maxRedirects)
	for i := range via {
		via[i] = &http.Request{URL: mustParse(t, "https://api.example.com/loop")}
	}
	require.EqualError(t, sameOriginRedirects(&http.Request{URL: mustParse(t, "https://api.example.com/loop")}, via),
		"refused the redirect of the API request from https://api.example.com:443 to https://api.example.com:443: stopped after 5 redirects")
}

func mustParse(t *testing.T, raw string) *url.URL {
	t.Helper()
	u, err := url.Parse(raw)
	require.NoError(t, err)
	return u
}
