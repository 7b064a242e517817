package microsoft_defender

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"
)

// benchPayloads are 10,000 SIEM detections (2020 shape) and a Graph page
// of 6,000 alerts with evidence, each a fixture of testcases/ (shape_2020,
// graph_alerts) repeated with an id and a time of its own.
func benchPayloads(b *testing.B) (siemBody, graphBody []byte, graphAlerts int) {
	b.Helper()
	siemBody = repeatRecords(b, "testcases/shape_2020/response.json", "", 10000, "FullId", "LastProcessedTimeUtc")
	graphAlerts = 6000
	graphBody = repeatRecords(b, "testcases/graph_alerts/response.json", "value", graphAlerts, "id", "lastUpdateDateTime")
	return siemBody, graphBody, graphAlerts
}

// repeatRecords makes n records from the fixture's, in turn, each with its
// id made unique and its time a second after the previous one's; the
// records are an array, or the array under key.
func repeatRecords(b *testing.B, fixture, key string, n int, idKey, timeKey string) []byte {
	b.Helper()
	data, err := os.ReadFile(fixture)
	if err != nil {
		b.Fatal(err)
	}
	var records []map[string]json.RawMessage
	if key == "" {
		err = json.Unmarshal(data, &records)
	} else {
		var page map[string]json.RawMessage
		if err = json.Unmarshal(data, &page); err == nil {
			err = json.Unmarshal(page[key], &records)
		}
	}
	if err != nil || len(records) == 0 {
		b.Fatalf("%s: %v", fixture, err)
	}
	out := make([]map[string]json.RawMessage, 0, n)
	for i := range n {
		r := maps.Clone(records[i%len(records)])
		var id string
		if err := json.Unmarshal(r[idKey], &id); err != nil {
			b.Fatal(err)
		}
		r[idKey], _ = json.Marshal(fmt.Sprintf("%s-%d", id, i))                                               //nolint:errcheck // a string
		r[timeKey], _ = json.Marshal(fixedNow.Add(time.Duration(i-n) * time.Second).Format(time.RFC3339Nano)) //nolint:errcheck // a string
		out = append(out, r)
	}
	var body []byte
	if key == "" {
		body, err = json.Marshal(out)
	} else {
		body, err = json.Marshal(map[string]any{key: out})
	}
	if err != nil {
		b.Fatal(err)
	}
	return body
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
		_, err := decodeGraphPage(bytes.NewReader(body), evidenceNeeds{}, func(a *graphAlert) bool {
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
// a process command line of size bytes, before its device evidence, and a
// small alert after it.
func hugeEvidencePage(size int64) io.Reader {
	return io.MultiReader(
		strings.NewReader(`{"value":[{"id":"a","lastUpdateDateTime":"2026-01-01T00:00:00Z","evidence":[`+
			`{"@odata.type":"#microsoft.graph.security.processEvidence","processCommandLine":"`),
		io.LimitReader(repeatedByte('x'), size),
		strings.NewReader(`"},{"@odata.type":"#microsoft.graph.security.deviceEvidence","deviceDnsName":"h","rbacGroupName":"g"}]},`+
			`{"id":"b","lastUpdateDateTime":"2026-01-01T00:00:00Z"}]}`))
}

// cappedBody is body as apiClient.get hands it on: limited to the default max_body_size.
func cappedBody(body io.Reader) io.Reader {
	return limitedBody{http.MaxBytesReader(nil, io.NopCloser(body), int64(newMicrosoftDefender().MaxBodySize))}
}

// BenchmarkGraphHugeEvidence reads a page whose first alert holds 100 MB of
// evidence, over maxRecordBytes: skipped, and the alert after it read. The
// memory it takes (B/op) is what jsontext holds to skip it: one token at a
// time, so a few entries' worth for many entries, but the whole string for
// one string of 100 MB.
func BenchmarkGraphHugeEvidence(b *testing.B) {
	for _, bb := range []struct {
		name string
		page func() io.Reader
		read string // the alerts read whole
	}{
		{"one_string", func() io.Reader { return hugeEvidencePage(100 << 20) }, "b"},
		// As the API client reads it, capped at the default max_body_size:
		// the page is unreadable, and what jsontext held is bounded by it.
		{"one_string_default_cap", func() io.Reader { return cappedBody(hugeEvidencePage(100 << 20)) }, ""},
		{"many_entries", func() io.Reader { page, _ := manyEntriesPage(100 << 20); return page }, "a,c"},
	} {
		b.Run(bb.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(100 << 20)
			for b.Loop() {
				var read []string
				_, err := decodeGraphPage(bb.page(), evidenceNeeds{raw: true}, func(a *graphAlert) bool {
					if a.issues.skip == "" {
						read = append(read, a.ID)
					}
					return true
				})
				if err != nil && (bb.read != "" || !errors.Is(err, errBodyTooLarge)) {
					b.Fatal(err)
				}
				if strings.Join(read, ",") != bb.read {
					b.Fatalf("read %v, not %s", read, bb.read)
				}
			}
		})
	}
}
