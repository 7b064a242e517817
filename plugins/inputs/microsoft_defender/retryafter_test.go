package microsoft_defender

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/influxdata/telegraf/config"
	"github.com/influxdata/telegraf/testutil"
)

func TestParseRetryAfter(t *testing.T) {
	capped := func(value, asked string) string {
		return `API: the Retry-After of "` + value + `" asks to wait ` + asked + `, more than the 1h0m0s the plugin waits at most: waiting 1h0m0s`
	}
	tests := []struct {
		value string
		want  time.Duration
		err   string
	}{
		{"", 0, ""},
		{"20", 20 * time.Second, ""},
		{" 7 ", 7 * time.Second, ""},
		{"-5", 0, ""},
		{"soon", 0, ""},
		{"3600", time.Hour, ""},
		{"3601", time.Hour, capped("3601", "3601 seconds")},
		{"3153600000", time.Hour, capped("3153600000", "3153600000 seconds")},
		// Beyond what a time.Duration holds in seconds: no overflow.
		{"9223372036854775807", time.Hour, capped("9223372036854775807", "9223372036854775807 seconds")},
		{"99999999999999999999", 0, ""}, // not an int64, not a date
		{fixedNow.Add(30 * time.Minute).Format(http.TimeFormat), 30 * time.Minute, ""},
		{fixedNow.Add(-time.Minute).Format(http.TimeFormat), 0, ""},
		{"Fri, 01 Jan 2126 00:00:00 GMT", time.Hour, capped("Fri, 01 Jan 2126 00:00:00 GMT", "922617h0m0s")},
	}
	for _, tt := range tests {
		t.Run(tt.value, func(t *testing.T) {
			got, err := parseRetryAfter(tt.value, fixedNow, "API")
			require.Equal(t, tt.want, got)
			if tt.err == "" {
				require.NoError(t, err)
			} else {
				require.EqualError(t, err, tt.err)
			}
		})
	}
}

// The token endpoint's Retry-After is capped the same way.
func TestTokenEndpointRetryAfterIsCapped(t *testing.T) {
	var tokenRequests int
	server := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/token") {
			tokenRequests++
			w.Header().Set("Retry-After", "3153600000")
			http.Error(w, "busy", http.StatusServiceUnavailable)
			return
		}
		t.Errorf("unexpected request to %s", r.URL.Path)
	}))
	defer server.Close()
	var waits []time.Duration
	plugin := withDefaults(&MicrosoftDefender{
		EndpointURL: server.URL + "/api/alerts", LoginEndpoint: server.URL, TenantID: testTenant,
		ClientID: testClientID, ClientSecret: config.NewSecret([]byte(testClientSecret)),
		Log: testutil.Logger{},
		now: func() time.Time { return fixedNow },
		sleep: func(_ context.Context, d time.Duration) error {
			waits = append(waits, d)
			return nil
		},
	})
	require.NoError(t, plugin.Init())
	var acc testutil.Accumulator
	require.NoError(t, plugin.Gather(&acc))
	host := strings.TrimPrefix(server.URL, "http://")
	require.Len(t, acc.Errors, 1)
	require.Equal(t, `token endpoint `+host+`: the Retry-After of "3153600000" asks to wait 3153600000 seconds, `+
		`more than the 1h0m0s the plugin waits at most: waiting 1h0m0s`, acc.Errors[0].Error())
	require.Equal(t, time.Hour, plugin.throttledUntil.Sub(fixedNow))
	require.Empty(t, waits)
	require.Equal(t, 1, tokenRequests)
}
