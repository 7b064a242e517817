package microsoft_defender

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/influxdata/telegraf"
	"github.com/influxdata/telegraf/plugins/serializers/influx"
)

// TestLineProtocol holds the defender_alert events of the shape_2020 and
// graph_alerts fixtures to testdata/line_protocol.out byte for byte: tags,
// fields in their fixed order, value types and timestamps, as Telegraf's
// influx serializer writes them. The expected.out files of testcases/ are
// compared as sets of fields and would not see a field move.
func TestLineProtocol(t *testing.T) {
	serializer := &influx.Serializer{}
	require.NoError(t, serializer.Init())
	var got []byte

	body, err := os.ReadFile("testcases/shape_2020/response.json")
	require.NoError(t, err)
	dec, err := newDetectionDecoder(bytes.NewReader(body))
	require.NoError(t, err)
	for {
		var d detection
		err := dec.next(&d)
		if errors.Is(err, io.EOF) {
			break
		}
		require.NoError(t, err)
		m, cut := d.metric()
		require.Empty(t, cut)
		line, err := serializer.Serialize(m)
		require.NoError(t, err)
		got = append(got, line...)
	}

	body, err = os.ReadFile("testcases/graph_alerts/response.json")
	require.NoError(t, err)
	_, err = decodeGraphPage(bytes.NewReader(body), evidenceNeeds{raw: true}, func(a *graphAlert) bool {
		m, cut := a.metric()
		require.Empty(t, cut)
		line, err := serializer.Serialize(m)
		require.NoError(t, err)
		got = append(got, line...)
		return true
	})
	require.NoError(t, err)

	want, err := os.ReadFile("testdata/line_protocol.out")
	require.NoError(t, err)
	require.Equal(t, strings.Split(string(want), "\n"), strings.Split(string(got), "\n"))
}

func TestSanitize(t *testing.T) {
	for _, tc := range []struct {
		in   string
		n    int
		want string
	}{
		{"Servers-EU", 256, "Servers-EU"},
		{"Servers-EU", 7, "Servers"},
		{"a\tb\r\nc", 256, "a b  c"},
		{"bell\a del\x7f", 256, "bell\uFFFD del\uFFFD"},
		{"bad \xff utf-8", 256, "bad \uFFFD utf-8"},
		{"Zürich", 256, "Zürich"},
		{"Zürich", 2, "Z"}, // not half of the ü
		{"", 256, ""},
	} {
		require.Equalf(t, tc.want, sanitize(tc.in, tc.n), "sanitize(%q, %d)", tc.in, tc.n)
	}
}

// benchDetections decodes the 10,000 SIEM detections of benchPayloads.
func benchDetections(b *testing.B) []*detection {
	b.Helper()
	body, _, _ := benchPayloads(b)
	dec, err := newDetectionDecoder(bytes.NewReader(body))
	require.NoError(b, err)
	var out []*detection
	for {
		d := new(detection)
		err := dec.next(d)
		if errors.Is(err, io.EOF) {
			return out
		}
		require.NoError(b, err)
		out = append(out, d)
	}
}

// BenchmarkSIEMMetric measures building the defender_alert metric of a
// decoded SIEM detection.
func BenchmarkSIEMMetric(b *testing.B) {
	detections := benchDetections(b)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		for _, d := range detections {
			d.metric()
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(len(detections))/1000, "µs/detection")
}

// BenchmarkSIEMLineProtocol measures what Telegraf's influx serializer,
// which outputs.file uses, spends on one defender_alert: a cost of every
// pipeline that writes the plugin's metrics, which the plugin cannot lower.
func BenchmarkSIEMLineProtocol(b *testing.B) {
	detections := benchDetections(b)
	metrics := make([]telegraf.Metric, 0, len(detections))
	for _, d := range detections {
		m, _ := d.metric()
		metrics = append(metrics, m)
	}
	serializer := &influx.Serializer{}
	require.NoError(b, serializer.Init())
	written := 0
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		for _, m := range metrics {
			line, err := serializer.Serialize(m)
			if err != nil {
				b.Fatal(err)
			}
			written += len(line)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(len(metrics))/1000, "µs/detection")
	b.ReportMetric(float64(written)/float64(b.N)/float64(len(metrics)), "bytes/detection")
}

// Every distinct event is its own point whatever its tags and times, and
// every repeat the same point: versions of one alert that keep every tag,
// detections of two alerts that share AlertTime, tags and AlertPart, and
// the detections of one alert. A point stays in the event's second.
func TestDistinctEventsAreDistinctPoints(t *testing.T) {
	created := time.Date(2026, 12, 7, 10, 0, 0, 123456700, time.UTC)
	version := func(id string, updated time.Time) time.Time {
		a := &graphAlert{graphVersion: graphVersion{ID: id, created: created, lastUpdate: updated}}
		m, _ := a.metric()
		return m.Time()
	}
	v1, v2 := version("a1", created), version("a1", created.Add(time.Minute))
	require.NotEqual(t, v1, v2, "two versions of one alert")
	require.Equal(t, v1, version("a1", created), "a version read again")
	require.NotEqual(t, v1, version("a2", created), "two alerts created at once")

	detectionAt := func(alertID string, part int64) time.Time {
		d := &detection{AlertID: alertID, FullID: fmt.Sprintf("%s:ioc%d", alertID, part), alertAt: created}
		d.AlertPart.value, d.AlertPart.set = part, true
		m, _ := d.metric()
		return m.Time()
	}
	require.NotEqual(t, detectionAt("da1", 0), detectionAt("da2", 0), "two alerts at one AlertTime with one AlertPart")
	require.NotEqual(t, detectionAt("da1", 0), detectionAt("da1", 1), "two detections of one alert")
	again := detectionAt("da1", 1)
	require.Equal(t, detectionAt("da1", 1), again, "a detection read again")
	for _, tm := range []time.Time{v1, v2, detectionAt("da1", 0)} {
		require.Equal(t, created.Truncate(time.Second), tm.Truncate(time.Second))
	}
}
