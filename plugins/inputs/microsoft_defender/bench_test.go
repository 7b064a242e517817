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

	"github.com/sectelemetry/telegraf-defender/internal/defendersim"
)

// benchPayloads are 10,000 SIEM detections (2020 shape) and a Graph page of
// alerts from the simulator's generator.
func benchPayloads(b *testing.B) (siemBody, graphBody []byte, graphAlerts int) {
	b.Helper()
	// About two detections an event: 5000 events make 10,000 detections.
	sim := defendersim.New(defendersim.Config{TenantID: "t", Seed: 1, Rate: 5500 / 60.0, History: time.Hour,
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
