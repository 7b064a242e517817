//go:build unix

package microsoft_defender

import (
	"bytes"
	"errors"
	"io"
	"testing"
)

// BenchmarkSIEMDecode and BenchmarkGraphDecode measure decoding alone, per
// record, as wall time and as the process's CPU time (cpu-µs, the garbage
// collector's included), which other work on a shared machine disturbs less.
func BenchmarkSIEMDecode(b *testing.B) {
	body, _, _ := benchPayloads(b)
	b.ReportAllocs()
	cpu := processCPU(b)
	for b.Loop() {
		dec, err := newDetectionDecoder(bytes.NewReader(body))
		if err != nil {
			b.Fatal(err)
		}
		var d detection
		for err == nil {
			err = dec.next(&d)
		}
		if !errors.Is(err, io.EOF) || dec.index != -1 {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(processCPU(b)-cpu)/float64(b.N)/10000/1e3, "cpu-µs/detection")
}

func BenchmarkGraphDecode(b *testing.B) {
	_, body, alerts := benchPayloads(b)
	b.ReportAllocs()
	cpu := processCPU(b)
	for b.Loop() {
		n := 0
		if _, err := decodeGraphPage(bytes.NewReader(body), evidenceNeeds{raw: true}, func(*graphAlert) bool { n++; return true }); err != nil || n != alerts {
			b.Fatal(n, err)
		}
	}
	b.ReportMetric(float64(processCPU(b)-cpu)/float64(b.N)/float64(alerts)/1e3, "cpu-µs/alert")
}
