package main

import (
	"bytes"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/influxdata/telegraf"
	"github.com/influxdata/telegraf/logger"
	"github.com/influxdata/telegraf/metric"
)

// A metric the serializer refuses, last in the queue, must not leave the
// lines written before it in the buffer: nothing else may come (the plugin
// waits for those to settle once max_undelivered_alerts is reached).
func TestARefusedLastMetricStillFlushesTheOnesBefore(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var mu sync.Mutex
		var outcomes []bool
		track := func(m telegraf.Metric) telegraf.Metric {
			tracked, _ := metric.WithTracking(m, func(info telegraf.DeliveryInfo) {
				mu.Lock()
				defer mu.Unlock()
				outcomes = append(outcomes, info.Delivered())
			})
			return tracked
		}
		metrics := make(chan telegraf.Metric, 2)
		metrics <- track(metric.New("m", nil, map[string]any{"i": 1}, time.Unix(0, 0)))
		metrics <- track(metric.New("m", nil, map[string]any{}, time.Unix(0, 0))) // no fields: refused
		var stdout bytes.Buffer                                                   // no pipe: taken once flushed
		written := make(chan error, 1)
		go func() { written <- writeMetrics(metrics, &stdout, logger.New("", "", "")) }()
		defer func() { close(metrics); require.NoError(t, <-written) }()
		synctest.Wait()
		mu.Lock()
		got := append([]bool(nil), outcomes...)
		mu.Unlock()
		require.Equal(t, []bool{false, true}, got, "the refused one rejected, the first flushed and taken")
		require.Equal(t, "m i=1i 0\n", stdout.String())
	})
}
