package microsoft_defender

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	simulator "github.com/sectelemetry/telegraf-defender/internal/sim"
)

// benchPayloads are 10,000 SIEM detections (2020 shape) and a Graph page of
// alerts from the simulator's generator.
func benchPayloads(b *testing.B) (siemBody, graphBody []byte, graphAlerts int) {
	b.Helper()
	// About two detections an event: 5000 events make 10,000 detections.
	sim := simulator.New(simulator.Config{TenantID: "t", Seed: 1, Rate: 5500 / 60.0, History: time.Hour,
		Now: func() time.Time { return fixedNow }})
	detections := sim.All()
	if len(detections) < 10000 {
		b.Fatalf("only %d detections", len(detections))
	}
	siemBody, err := json.Marshal(detections[:10000])
	if err != nil {
		b.Fatal(err)
	}
	alerts := sim.AllGraph()
	graphBody, err = json.Marshal(map[string]any{"value": alerts})
	if err != nil {
		b.Fatal(err)
	}
	return siemBody, graphBody, len(alerts)
}

// BenchmarkSIEMDecodeAndMetric measures what the plugin does per SIEM
// detection: stream decoding, validation and the defender_alert metric.
func BenchmarkSIEMDecodeAndMetric(b *testing.B) {
	body, _, _ := benchPayloads(b)
	b.SetBytes(int64(len(body)))
	b.ResetTimer()
	for range b.N {
		dec, err := newDetectionDecoder(bytes.NewReader(body))
		if err != nil {
			b.Fatal(err)
		}
		var d detection
		n := 0
		for {
			err := dec.next(&d)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				b.Fatal(err)
			}
			d.metric()
			n++
		}
		if n != 10000 {
			b.Fatalf("decoded %d", n)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/10000/1000, "µs/detection")
}

// BenchmarkGraphDecodeAndMetric is the same for a page of Graph alerts.
func BenchmarkGraphDecodeAndMetric(b *testing.B) {
	_, body, alerts := benchPayloads(b)
	b.SetBytes(int64(len(body)))
	b.ResetTimer()
	for range b.N {
		n := 0
		_, err := decodeGraphPage(bytes.NewReader(body), func(a *graphAlert) bool {
			a.metric()
			n++
			return true
		})
		if err != nil {
			b.Fatal(err)
		}
		if n != alerts {
			b.Fatalf("decoded %d of %d", n, alerts)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(alerts)/1000, "µs/alert")
}

// repeatedByte is an endless stream of one byte.
type repeatedByte byte

func (r repeatedByte) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = byte(r)
	}
	return len(p), nil
}

// hugeEvidencePage streams a Graph page of one alert whose evidence holds
// a process command line of size bytes, before its device evidence.
func hugeEvidencePage(size int64) io.Reader {
	return io.MultiReader(
		strings.NewReader(`{"value":[{"id":"a","lastUpdateDateTime":"2026-01-01T00:00:00Z","evidence":[`+
			`{"@odata.type":"#microsoft.graph.security.processEvidence","processCommandLine":"`),
		io.LimitReader(repeatedByte('x'), size),
		strings.NewReader(`"},{"@odata.type":"#microsoft.graph.security.deviceEvidence","deviceDnsName":"h","rbacGroupName":"g"}]}]}`))
}

// BenchmarkGraphHugeEvidence reads one alert with 100 MB of evidence: the
// memory it takes (B/op) is bounded by the read buffer and what is kept of
// the evidence, not by the evidence's size.
func BenchmarkGraphHugeEvidence(b *testing.B) {
	for _, include := range []bool{false, true} {
		b.Run(fmt.Sprintf("include_evidence=%t", include), func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(100 << 20)
			for b.Loop() {
				_, err := decodeGraphPage(hugeEvidencePage(100<<20), func(a *graphAlert) bool {
					a.includeEvidence = include
					if a.device.RbacGroupName != "g" || a.evidenceCount != 2 || !a.evidenceLeftOut {
						b.Fatalf("evidence read wrong: %+v", a)
					}
					a.metric()
					return true
				})
				if err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// graphBacklogBehaviours are the services of BenchmarkGraphBacklog: the
// one peers assume, each documented uncertainty alone, and all at once.
var graphBacklogBehaviours = []struct {
	name      string
	behaviour simulator.GraphBehaviour
}{
	{"as_peers_assume", simulator.GraphBehaviour{}},
	{"orderby_ignored", simulator.GraphBehaviour{Order: simulator.GraphOrderIgnored}},
	{"orderby_rejected", simulator.GraphBehaviour{Order: simulator.GraphOrderRejected}},
	{"skiptoken", simulator.GraphBehaviour{NextLink: simulator.GraphLinkSkipToken}},
	{"no_next_link", simulator.GraphBehaviour{NextLink: simulator.GraphLinkNone}},
	{"skip_over_500_is_400", simulator.GraphBehaviour{MaxSkip: 500}},
	{"chain_ends_at_6000", simulator.GraphBehaviour{ChainEnd: 6000}},
	{"top_clamped_to_200", simulator.GraphBehaviour{MaxTop: 200}},
	{"no_count", simulator.GraphBehaviour{Count: simulator.GraphCountIgnored}},
	{"harshest", simulator.GraphBehaviour{Order: simulator.GraphOrderRejected, NextLink: simulator.GraphLinkSkipToken,
		Count: simulator.GraphCountRejected, MaxSkip: 500, ChainEnd: 6000, MaxTop: 200}},
}

// BenchmarkGraphBacklog reads a backlog of 20,000 alert versions, spread
// over the two hours of initial_lookback, with the default settings and a
// poll a minute, and reports the requests and polls it took under each
// service behaviour (requests/op, polls/op) and the requests beyond the
// pages it holds, 40 of 500 or 100 of 200 where $top is clamped (extra/op).
func BenchmarkGraphBacklog(b *testing.B) {
	for _, bb := range graphBacklogBehaviours {
		b.Run(bb.name, func(b *testing.B) {
			var requests, polls int
			for range b.N {
				s := newScenario(b, simulator.Config{Graph: bb.behaviour})
				if err := s.sim.AddGraph(graphAlertsAt(s.clock.Add(-2*time.Hour-time.Minute), 20000, 2*time.Hour/20000)...); err != nil {
					b.Fatal(err)
				}
				p := s.graphPlugin(nil)
				for s.polls < 100 {
					s.poll(p)
					s.clock = s.clock.Add(pollInterval)
					if p.cursor.pending == nil && !s.clock.Add(-time.Duration(p.Delay)).After(p.cursor.watermark.Add(pollInterval)) {
						break
					}
				}
				if len(s.emitted) != 20000 {
					b.Fatalf("%d versions emitted, not 20000", len(s.emitted))
				}
				requests, polls = len(requestsTo(s.sim, graphAlertsPath)), s.polls
			}
			b.ReportMetric(float64(requests), "requests/op")
			pages := 20000 / 500
			if bb.behaviour.MaxTop > 0 {
				pages = 20000 / bb.behaviour.MaxTop
			}
			b.ReportMetric(float64(requests-pages), "extra/op")
			b.ReportMetric(float64(polls), "polls/op")
		})
	}
}
