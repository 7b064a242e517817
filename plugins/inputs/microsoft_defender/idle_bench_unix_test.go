//go:build unix

package microsoft_defender

import (
	"bytes"
	"encoding/pem"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/influxdata/telegraf"
	"github.com/influxdata/telegraf/config"
	"github.com/influxdata/telegraf/testutil"
)

// idleAccumulator drops metrics as cheaply as it can, keeping the last
// defender_poll and counting errors.
type idleAccumulator struct {
	testutil.NopAccumulator
	poll   telegraf.Metric
	errors int
}

func (a *idleAccumulator) AddMetric(m telegraf.Metric) { a.poll = m }
func (a *idleAccumulator) AddError(error)              { a.errors++ }

// emptyPages answers every request with Graph's empty page, dated now(),
// without a network.
type emptyPages struct {
	now      func() time.Time
	requests atomic.Int64
}

var emptyPage = []byte(`{"@odata.context":"https://graph.microsoft.com/v1.0/$metadata#security/alerts_v2","@odata.count":0,"value":[]}`)

func (e *emptyPages) RoundTrip(r *http.Request) (*http.Response, error) {
	e.requests.Add(1)
	return &http.Response{StatusCode: http.StatusOK, Status: "200 OK", Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1, Request: r,
		Header:        http.Header{"Date": {e.now().Format(http.TimeFormat)}, "Content-Type": {"application/json"}},
		ContentLength: int64(len(emptyPage)), Body: io.NopCloser(bytes.NewReader(emptyPage))}, nil
}

func (e *emptyPages) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Date", e.now().Format(http.TimeFormat))
	w.Header().Set("Content-Type", "application/json")
	if strings.HasSuffix(r.URL.Path, "/token") {
		w.Write([]byte(`{"token_type":"Bearer","expires_in":86399,"access_token":"idle-token"}`)) //nolint:errcheck // the client notices
		return
	}
	e.requests.Add(1)
	w.Write(emptyPage) //nolint:errcheck // the client notices
}

// BenchmarkIdlePoll is one poll of a quiet tenant, every 10 s of the
// plugin's clock: one request to Graph answered by an empty page, with
// client_secret's token cached and a state file, reporting the process's
// CPU time per poll beside the wall time. "plugin" answers in
// memory: what the plugin costs alone (the answer itself is 6 of the
// allocations); "https" sends the request over a keep-alive connection to
// a server in the same process, whose work is in the figures too.
func BenchmarkIdlePoll(b *testing.B) {
	b.Run("plugin", func(b *testing.B) { idlePolls(b, false) })
	b.Run("https", func(b *testing.B) { idlePolls(b, true) })
}

func idlePolls(b *testing.B, overHTTPS bool) {
	var clock atomic.Int64
	clock.Store(fixedNow.UnixNano())
	pages := &emptyPages{now: func() time.Time { return time.Unix(0, clock.Load()).UTC() }}
	server := httptest.NewTLSServer(pages)
	defer server.Close()
	caFile := filepath.Join(b.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: server.Certificate().Raw}), 0o600); err != nil {
		b.Fatal(err)
	}
	plugin := withDefaults(&MicrosoftDefender{
		API:           "graph",
		EndpointURL:   server.URL + graphAlertsPath,
		LoginEndpoint: server.URL,
		TenantID:      testTenant,
		ClientID:      testClientID,
		ClientSecret:  config.NewSecret([]byte(testClientSecret)),
		StateFile:     filepath.Join(b.TempDir(), "defender.state"),
		now:           pages.now,
		Log:           testutil.Logger{Quiet: true},
	})
	plugin.TLSCA = caFile
	if err := plugin.Init(); err != nil {
		b.Fatal(err)
	}
	defer plugin.Stop()
	if !overHTTPS {
		plugin.client.client.Transport = pages // the token still comes from the server
	}
	acc := &idleAccumulator{}
	poll := func() {
		clock.Add(int64(10 * time.Second))
		if err := plugin.Gather(acc); err != nil {
			b.Fatal(err)
		}
	}
	for range 3 { // the first poll reads initial_lookback, in chunks
		poll()
	}
	before, cpuBefore := pages.requests.Load(), processCPU(b)
	b.ReportAllocs()
	for b.Loop() {
		poll()
	}
	b.ReportMetric(float64(processCPU(b)-cpuBefore)/float64(b.N), "cpu-ns/op")
	if n := pages.requests.Load() - before; acc.errors > 0 || n != int64(b.N) {
		b.Fatalf("%d errors, %d requests in %d polls", acc.errors, n, b.N)
	}
	if status := acc.poll.Tags()["status"]; status != "ok" {
		b.Fatalf("the last poll's status is %q", status)
	}
}

// processCPU is the CPU time the process used so far, user and system.
func processCPU(b *testing.B) time.Duration {
	var u syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &u); err != nil {
		b.Fatal(err)
	}
	return time.Duration(u.Utime.Nano() + u.Stime.Nano())
}
