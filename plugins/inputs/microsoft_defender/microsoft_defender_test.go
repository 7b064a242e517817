package microsoft_defender

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
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

// TestCases runs every folder of testcases/, as Telegraf's openweathermap
// tests do:
//   - telegraf.conf configures the plugin;
//   - response.json (or the detection*.json files, wrapped in an array in
//     name order) answers every request; or response_<N>.json answers the
//     N-th request (from 1), with the HTTP status in response_<N>.status
//     when it is not 200, and a request past the last is a test failure;
//     "{{server}}" in a response is the fixture server's URL;
//   - requests.txt, when present, lists the requests the plugin must send,
//     in order, as path and query;
//   - expected.out is the line protocol the plugin must emit (defender_poll
//     left out), expected.err the errors of the poll, one per line (none
//     when absent);
//   - now, when present, is the clock (RFC 3339) in place of fixedNow, so
//     that the window holds the fixture's times.
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
			answers := readResponses(t, dir)
			cfg := config.NewConfig()
			require.NoError(t, cfg.LoadConfig(filepath.Join(dir, "telegraf.conf")))
			require.Len(t, cfg.Inputs, 1)
			plugin := cfg.Inputs[0].Input.(*MicrosoftDefender)
			path := map[string]string{"siem": "/api/alerts", "graph": graphAlertsPath, "graph_incidents": graphIncidentsPath}[plugin.API]
			var mu sync.Mutex
			var requests []string
			var server *httptest.Server
			server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path != path || r.Header.Get("Authorization") != "Bearer fixture-token" {
					w.WriteHeader(http.StatusUnauthorized)
					return
				}
				mu.Lock()
				requests = append(requests, r.URL.RequestURI())
				n := len(requests)
				mu.Unlock()
				answer, ok := answers.forRequest(n)
				if !ok {
					t.Errorf("request %d (%s): the testcase has no response for it", n, r.URL.RequestURI())
					w.WriteHeader(http.StatusNotFound)
					return
				}
				w.WriteHeader(answer.status)
				respond(t, w, bytes.ReplaceAll(answer.body, []byte("{{server}}"), []byte(server.URL)))
			}))
			defer server.Close()
			plugin.EndpointURL = server.URL + path
			plugin.Log = testutil.Logger{}
			plugin.sleep = func(ctx context.Context, _ time.Duration) error { return ctx.Err() }
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
			// nil when there is no error, as readLines of an absent file
			var errs []string
			if len(acc.Errors) > 0 {
				errs = make([]string, 0, len(acc.Errors))
			}
			for _, err := range acc.Errors {
				errs = append(errs, strings.ReplaceAll(err.Error(), strings.TrimPrefix(server.URL, "http://"), "{{host}}"))
			}
			require.Equal(t, readLines(t, filepath.Join(dir, "expected.err")), errs)
			testutil.RequireMetricsEqual(t, expected, detectionMetrics(&acc), testutil.SortMetrics())
			if want := readLines(t, filepath.Join(dir, "requests.txt")); want != nil {
				require.Equal(t, want, requests)
			}
		})
	}
}

// fixtureAnswer is one answer of a testcase's fixture server.
type fixtureAnswer struct {
	status int
	body   []byte
}

// fixtureAnswers are a testcase's answers: one for every request, or one
// per request in order.
type fixtureAnswers struct {
	every   *fixtureAnswer
	inOrder []fixtureAnswer
}

func (a *fixtureAnswers) forRequest(n int) (fixtureAnswer, bool) {
	if a.every != nil {
		return *a.every, true
	}
	if n > len(a.inOrder) {
		return fixtureAnswer{}, false
	}
	return a.inOrder[n-1], true
}

func readResponses(t *testing.T, dir string) *fixtureAnswers {
	t.Helper()
	var answers fixtureAnswers
	for n := 1; ; n++ {
		body, err := os.ReadFile(filepath.Join(dir, fmt.Sprintf("response_%d.json", n)))
		if errors.Is(err, os.ErrNotExist) {
			break
		}
		require.NoError(t, err)
		status := http.StatusOK
		if text, err := os.ReadFile(filepath.Join(dir, fmt.Sprintf("response_%d.status", n))); err == nil {
			status, err = strconv.Atoi(strings.TrimSpace(string(text)))
			require.NoError(t, err)
		}
		answers.inOrder = append(answers.inOrder, fixtureAnswer{status: status, body: body})
	}
	if len(answers.inOrder) == 0 {
		answers.every = &fixtureAnswer{status: http.StatusOK, body: readResponse(t, dir)}
	}
	return &answers
}

// readLines returns the lines of a testcase's file, nil when it is absent.
func readLines(t *testing.T, name string) []string {
	t.Helper()
	text, err := os.ReadFile(name)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	require.NoError(t, err)
	return strings.Split(strings.TrimSuffix(string(text), "\n"), "\n")
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
	// Most tests read the SIEM API, whose answers are the simplest to write.
	orDefault(&p.API, "siem")
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

// A poll's deadline is the shorter of the last two gaps between polls
// (Telegraf's interval): after a host suspend of five hours a poll does not
// wait half an hour to retry, and two polls at once shorten two deadlines,
// not every one after them.
func TestPollDeadlineIsTheShorterOfTheLastTwoGaps(t *testing.T) {
	var retryAfter string
	var requests int
	server := stub(t, func(w http.ResponseWriter, _ *http.Request) {
		requests++
		if retryAfter != "" && requests == 1 {
			w.Header().Set("Retry-After", retryAfter)
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		respond(t, w, []byte("[]"))
	})
	plugin := stubbedPlugin(t, server, &testutil.CaptureLogger{}, func(m *MicrosoftDefender) { m.MaxWindow = config.Duration(24 * time.Hour) })
	at := fixedNow
	for i, step := range []struct {
		gap        time.Duration
		retryAfter string
		requests   int // 1: the wait would pass the deadline, not retried
	}{
		{0, "", 1},
		{10 * time.Second, "", 1},
		{5 * time.Hour, "30", 1},
		{30 * time.Second, "5", 3}, // retried; then the 30 s since the suspended poll's window
		{time.Millisecond, "", 1},
		{10 * time.Second, "5", 1},
		{10 * time.Second, "5", 3},
	} {
		at = at.Add(step.gap)
		plugin.now = func() time.Time { return at }
		retryAfter, requests = step.retryAfter, 0
		var acc testutil.Accumulator
		require.NoError(t, plugin.Gather(&acc))
		require.Equal(t, step.requests, requests, "poll %d", i)
	}
}
