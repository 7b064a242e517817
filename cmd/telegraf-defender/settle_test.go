package main

import (
	"bytes"
	"context"
	"io"
	"os"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/influxdata/telegraf"
	"github.com/influxdata/telegraf/logger"
	"github.com/influxdata/telegraf/metric"
	"github.com/influxdata/telegraf/plugins/common/shim"
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

// stopEmittingInput emits one metric in Stop, as the plugin's Stop emits
// its delivery counter.
type stopEmittingInput struct{ acc telegraf.Accumulator }

func (*stopEmittingInput) SampleConfig() string                   { return "" }
func (*stopEmittingInput) Gather(telegraf.Accumulator) error      { return nil }
func (s *stopEmittingInput) Start(acc telegraf.Accumulator) error { s.acc = acc; return nil } //nolint:unparam // telegraf.ServiceInput's signature
func (s *stopEmittingInput) Stop() {
	s.acc.AddFields("counter", map[string]any{"n": 1}, nil, time.Unix(0, 0))
}

// The lines made by Stop are in the pipe when the process ends: Telegraf's
// execd closes the pipe's read end once the process exited (os/exec's Wait),
// so a line it has not read by then is lost. The run ends only once the
// reader read them (or stopWait passed).
func TestRunInputEndsOnceTheStopsLinesWereRead(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r, w, err := os.Pipe()
		require.NoError(t, err)
		defer r.Close()
		defer w.Close()
		ran := make(chan error, 1)
		go func() {
			ran <- runInput(context.Background(), &stopEmittingInput{}, shim.PollIntervalDisabled, strings.NewReader(""), w, io.Discard)
		}()
		synctest.Wait()
		select {
		case err := <-ran:
			n, _ := unreadBytes(w)
			t.Fatalf("the run ended (%v) with %d bytes not read from the pipe", err, n)
		default:
		}
		line := "counter n=1i 0\n"
		_, err = io.ReadFull(r, make([]byte, len(line)))
		require.NoError(t, err)
		time.Sleep(pipePoll)
		synctest.Wait()
		require.NoError(t, <-ran)
	})
}
