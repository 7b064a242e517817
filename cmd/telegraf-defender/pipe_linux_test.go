package main

import (
	"io"
	"os"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/influxdata/telegraf"
	"github.com/influxdata/telegraf/metric"
	"github.com/influxdata/telegraf/plugins/serializers/influx"
)

// Through a pipe, a metric is taken only once Telegraf read its line: a line
// flushed into the pipe dies there when Telegraf does, or when execd closes
// the pipe under its reader, and the plugin saves its state past what was
// taken. On a stop the writer waits for the reader, and rejects what it did
// not read in time.
func TestLinesAreTakenOnceReadFromThePipe(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r, w, err := os.Pipe()
		require.NoError(t, err)
		defer r.Close()
		defer w.Close()
		metrics := make(chan telegraf.Metric, 4)
		var mu sync.Mutex // the pipe is no synchronisation the race detector sees
		var outcomesSeen []bool
		outcomes := func() []bool {
			mu.Lock()
			defer mu.Unlock()
			return slices.Clone(outcomesSeen)
		}
		serializer := &influx.Serializer{}
		require.NoError(t, serializer.Init())
		lengths := make([]int, 0, 3)
		for i := range 3 {
			m := metric.New("m", nil, map[string]any{"i": i}, time.Unix(0, 0))
			line, err := serializer.Serialize(m)
			require.NoError(t, err)
			lengths = append(lengths, len(line))
			tracked, _ := metric.WithTracking(m, func(info telegraf.DeliveryInfo) {
				mu.Lock()
				defer mu.Unlock()
				outcomesSeen = append(outcomesSeen, info.Delivered())
			})
			metrics <- tracked
		}
		written := make(chan error, 1)
		go func() { written <- writeMetrics(metrics, w, nil) }()
		synctest.Wait()
		require.Empty(t, outcomes(), "flushed into the pipe, not yet read")

		_, err = io.ReadFull(r, make([]byte, lengths[0]+1))
		require.NoError(t, err)
		time.Sleep(pipePoll)
		synctest.Wait()
		require.Equal(t, []bool{true}, outcomes(), "the first line read, the second begun")

		giveUp := make(chan struct{})
		stopped := make(chan bool)
		go func() { stopped <- flushMetrics(metrics, giveUp) }()
		_, err = io.ReadFull(r, make([]byte, lengths[1]-1))
		require.NoError(t, err)
		time.Sleep(pipePoll)
		synctest.Wait()
		require.Equal(t, []bool{true, true}, outcomes())
		close(giveUp)
		<-stopped // false, or true if the writer closed done first
		synctest.Wait()
		require.Equal(t, []bool{true, true, false}, outcomes(), "the line not read by the stop's end is rejected")
		close(metrics)
		require.NoError(t, <-written)
	})
}
