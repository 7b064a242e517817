package microsoft_defender

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/influxdata/telegraf"
	"github.com/influxdata/telegraf/config"
	"github.com/influxdata/telegraf/plugins/parsers/influx"
	"github.com/influxdata/telegraf/testutil"
)

// fixedNow is the clock of the fixture tests: the end of every window.
var fixedNow = time.Date(2020, 9, 30, 15, 0, 0, 0, time.UTC)

// TestCases runs every folder of testcases/: telegraf.conf configures the
// plugin, response.json (or the detection*.json files, wrapped in an array
// in name order) is what the API answers, expected.out the line protocol
// the plugin must emit, and now, when present, the clock (RFC 3339) in
// place of fixedNow, so that the window holds the fixture's times.
func TestCases(t *testing.T) {
	folders, err := os.ReadDir("testcases")
	require.NoError(t, err)

	parser := &influx.Parser{}
	require.NoError(t, parser.Init())

	for _, f := range folders {
		if !f.IsDir() {
			continue
		}
		dir := filepath.Join("testcases", f.Name())
		t.Run(f.Name(), func(t *testing.T) {
			body := readResponse(t, dir)
			cfg := config.NewConfig()
			require.NoError(t, cfg.LoadConfig(filepath.Join(dir, "telegraf.conf")))
			require.Len(t, cfg.Inputs, 1)
			plugin := cfg.Inputs[0].Input.(*MicrosoftDefender)
			path := "/api/alerts"
			if plugin.API == "graph" {
				path = graphAlertsPath
			}
			server := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path != path || r.Header.Get("Authorization") != "Bearer fixture-token" {
					w.WriteHeader(http.StatusUnauthorized)
					return
				}
				respond(t, w, body)
			}))
			defer server.Close()
			plugin.EndpointURL = server.URL + path
			plugin.Log = testutil.Logger{}
			now := fixedNow
			if clock, err := os.ReadFile(filepath.Join(dir, "now")); err == nil {
				now, err = time.Parse(time.RFC3339, strings.TrimSpace(string(clock)))
				require.NoError(t, err)
			}
			plugin.now = func() time.Time { return now }
			require.NoError(t, plugin.Init())

			expected, err := testutil.ParseMetricsFromFile(filepath.Join(dir, "expected.out"), parser)
			require.NoError(t, err)

			var acc testutil.Accumulator
			require.NoError(t, plugin.Gather(&acc))
			require.Empty(t, acc.Errors)
			testutil.RequireMetricsEqual(t, expected, detectionMetrics(&acc), testutil.SortMetrics())
		})
	}
}

func readResponse(t *testing.T, dir string) []byte {
	t.Helper()
	if body, err := os.ReadFile(filepath.Join(dir, "response.json")); err == nil {
		return body
	}
	files, err := filepath.Glob(filepath.Join(dir, "detection*.json"))
	require.NoError(t, err)
	require.NotEmpty(t, files, "testcase %s has neither response.json nor detection*.json", dir)
	sort.Strings(files)
	parts := make([]string, 0, len(files))
	for _, name := range files {
		b, err := os.ReadFile(name)
		require.NoError(t, err)
		parts = append(parts, string(b))
	}
	return []byte("[" + strings.Join(parts, ",") + "]")
}

// detectionMetrics returns the defender_alert and defender_alert_count
// metrics, leaving out defender_poll, whose duration varies from run to run.
func detectionMetrics(acc *testutil.Accumulator) []telegraf.Metric {
	var out []telegraf.Metric
	for _, m := range acc.GetTelegrafMetrics() {
		if m.Name() != measurementPoll {
			out = append(out, m)
		}
	}
	return out
}

func readFile(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(name)
	require.NoError(t, err)
	return b
}

// The README's configuration block is the sample configuration, as
// Telegraf's README linter requires.
func TestReadmeConfigurationIsSampleConfig(t *testing.T) {
	readme := string(readFile(t, "README.md"))
	_, block, found := strings.Cut(readme, "```toml @sample.conf\n")
	require.True(t, found, "README.md has no ```toml @sample.conf block")
	block, _, found = strings.Cut(block, "```\n")
	require.True(t, found)
	require.Equal(t, sampleConfig, block)
}

// respond writes a test server's answer; handlers run on the server's
// goroutine, where require must not be used.
func respond(t *testing.T, w http.ResponseWriter, body []byte) {
	if _, err := w.Write(body); err != nil {
		t.Errorf("writing the response: %v", err)
	}
}

// withDefaults fills the settings a test left unset with the plugin's
// defaults, as Telegraf does before applying a configuration.
func withDefaults(p *MicrosoftDefender) *MicrosoftDefender {
	d := newMicrosoftDefender()
	orDefault(&p.API, d.API)
	orDefault(&p.InitialLookback, d.InitialLookback)
	orDefault(&p.Delay, d.Delay)
	orDefault(&p.Overlap, d.Overlap)
	orDefault(&p.MaxWindow, d.MaxWindow)
	orDefault(&p.MaxAlertsPerGather, d.MaxAlertsPerGather)
	orDefault(&p.Timeout, d.Timeout)
	orDefault(&p.PageSize, d.PageSize)
	orDefault(&p.MaxRetries, d.MaxRetries)
	orDefault(&p.MaxRequestsPerMinute, d.MaxRequestsPerMinute)
	orDefault(&p.MaxBodySize, d.MaxBodySize)
	if p.Log == nil {
		p.Log = testutil.Logger{}
	}
	if p.sleep == nil {
		// Waits between retries pass at once; scenarios move their clock.
		p.sleep = func(ctx context.Context, _ time.Duration) error { return ctx.Err() }
	}
	return p
}

// orDefault sets *v to d when it holds its type's zero value.
func orDefault[T comparable](v *T, d T) {
	var zero T
	if *v == zero {
		*v = d
	}
}

// roundTripState serialises a state as Telegraf's persister does and
// decodes it into a fresh value of the same type.
func roundTripState(t *testing.T, state interface{}) interface{} {
	t.Helper()
	data, err := json.Marshal(state)
	require.NoError(t, err)
	fresh := reflect.New(reflect.TypeOf(state)).Interface()
	require.NoError(t, json.Unmarshal(data, fresh))
	return reflect.ValueOf(fresh).Elem().Interface()
}
