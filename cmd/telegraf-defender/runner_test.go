package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/influxdata/telegraf"
	"github.com/influxdata/telegraf/metric"
	"github.com/influxdata/telegraf/plugins/common/shim"
)

// countingInput emits perGather metrics on each Gather through the
// accumulator its Start received, as the plugin does, and records the
// calls the runner makes.
type countingInput struct {
	perGather int
	gathers   int
	calls     []string
	acc       telegraf.Accumulator
	// gathered receives after each Gather, when not nil.
	gathered chan struct{}
}

func (*countingInput) SampleConfig() string { return "" }

func (c *countingInput) Start(acc telegraf.Accumulator) error { //nolint:unparam // telegraf.ServiceInput's signature
	c.calls = append(c.calls, "start")
	c.acc = acc
	return nil
}

func (c *countingInput) Stop() { c.calls = append(c.calls, "stop") }

func (c *countingInput) Gather(telegraf.Accumulator) error {
	c.gathers++
	c.calls = append(c.calls, "gather")
	for i := range c.perGather {
		// Nanoseconds survive: the accumulator keeps them. One field, since
		// the order of a map's fields is random.
		c.acc.AddMetric(metric.New("defender_alert", map[string]string{"severity": "high"},
			map[string]interface{}{"n": int64(c.gathers*100000 + i)}, time.Unix(0, int64(i)+1)))
	}
	if c.gathered != nil {
		c.gathered <- struct{}{}
	}
	return nil
}

// expectedLines is what countingInput's gathers write, in order.
func expectedLines(gathers, perGather int) string {
	var want strings.Builder
	for g := 1; g <= gathers; g++ {
		for i := range perGather {
			fmt.Fprintf(&want, "defender_alert,severity=high n=%di %d\n", g*100000+i, i+1)
		}
	}
	return want.String()
}

// run is a runner at work on input, polling on stdin only.
type run struct {
	stdin *io.PipeWriter
	done  chan error
}

func startRun(ctx context.Context, input telegraf.Input, stdout, stderr io.Writer) *run {
	stdinR, stdinW := io.Pipe()
	r := &run{stdin: stdinW, done: make(chan error, 1)}
	go func() { r.done <- runInput(ctx, input, shim.PollIntervalDisabled, stdinR, stdout, stderr) }()
	return r
}

// poll asks for n polls, one after the other: each line, then the end of
// its Gather, which gathered reports.
func (r *run) poll(t *testing.T, n int, gathered <-chan struct{}) {
	t.Helper()
	for range n {
		_, err := r.stdin.Write([]byte("\n"))
		require.NoError(t, err)
		<-gathered
	}
}

// end closes stdin and returns what the run returned.
func (r *run) end(t *testing.T) error {
	t.Helper()
	require.NoError(t, r.stdin.Close())
	return <-r.done
}

// With polling on stdin only, each line asks for one Gather; when stdin
// closes, the input is stopped and every metric of every poll has been
// written, in order, with its nanoseconds.
func TestRunInputWritesEveryMetricInOrder(t *testing.T) {
	input := &countingInput{perGather: 5000, gathered: make(chan struct{})}
	var stdout, stderr bytes.Buffer
	r := startRun(context.Background(), input, &stdout, &stderr)
	r.poll(t, 2, input.gathered)
	require.NoError(t, r.end(t))

	require.Equal(t, []string{"start", "gather", "gather", "stop"}, input.calls)
	require.Equal(t, expectedLines(2, 5000), stdout.String())
	require.Empty(t, stderr.String())
}

// The end of ctx (SIGINT or SIGTERM in the binary) ends the run like the
// end of stdin: the input is stopped and nothing is left unwritten.
func TestRunInputEndsWithItsContext(t *testing.T) {
	input := &countingInput{perGather: 3, gathered: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	var stdout, stderr bytes.Buffer
	r := startRun(ctx, input, &stdout, &stderr)
	defer r.stdin.Close()
	r.poll(t, 1, input.gathered)
	cancel()
	require.NoError(t, <-r.done)
	require.Equal(t, []string{"start", "gather", "stop"}, input.calls)
	require.Equal(t, expectedLines(1, 3), stdout.String())
}

// A poll in flight when the run ends, by the end of stdin (Telegraf's
// execd stopping the process) or of ctx (SIGTERM), is interrupted at once,
// and the input is stopped only after its Gather returned: Interrupt is the
// one function of the input that runs while Gather does.
func TestRunInputInterruptsAPollInFlight(t *testing.T) {
	ends := map[string]func(r *run, cancel context.CancelFunc){
		"stdin closes": func(r *run, _ context.CancelFunc) { r.stdin.Close() },
		"ctx ends":     func(_ *run, cancel context.CancelFunc) { cancel() },
	}
	for name, end := range ends {
		t.Run(name, func(t *testing.T) {
			input := &interruptibleInput{gathering: make(chan struct{}), interrupted: make(chan struct{})}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			var stdout, stderr bytes.Buffer
			r := startRun(ctx, input, &stdout, &stderr)
			defer r.stdin.Close()
			_, err := r.stdin.Write([]byte("\n"))
			require.NoError(t, err)
			<-input.gathering
			end(r, cancel)
			select {
			case err := <-r.done:
				require.NoError(t, err)
			case <-time.After(30 * time.Second):
				t.Fatal("the run did not end: the poll in flight was not interrupted")
			}
			require.Equal(t, []string{"start", "gather", "interrupted", "stop"}, input.calls)
			require.Equal(t, "defender_poll status=\"partial\" 1\n", stdout.String())
			require.Empty(t, stderr.String())
		})
	}
}

// interruptibleInput's Gather runs until Interrupt is called, as the
// plugin's poll does when a request hangs; it starts, stops and records
// calls as countingInput does.
type interruptibleInput struct {
	countingInput
	// gathering is closed when Gather has begun.
	gathering chan struct{}
	// interrupted is closed by Interrupt.
	interrupted chan struct{}
	once        sync.Once
}

func (i *interruptibleInput) Interrupt() { i.once.Do(func() { close(i.interrupted) }) }

func (i *interruptibleInput) Gather(telegraf.Accumulator) error {
	i.calls = append(i.calls, "gather")
	close(i.gathering)
	<-i.interrupted
	i.calls = append(i.calls, "interrupted")
	i.acc.AddMetric(metric.New("defender_poll", nil, map[string]interface{}{"status": "partial"}, time.Unix(0, 1)))
	return nil
}

// A stdout that breaks fails the run with the cause, and the polls after
// the failure do not block on metrics nobody takes.
func TestRunInputFailsWhenStdoutBreaks(t *testing.T) {
	brokenR, broken, err := os.Pipe()
	require.NoError(t, err)
	require.NoError(t, brokenR.Close())
	defer broken.Close()

	input := &countingInput{perGather: 2 * metricQueue, gathered: make(chan struct{})}
	var stderr bytes.Buffer
	r := startRun(context.Background(), input, broken, &stderr)
	// A Gather would block for ever if the metrics nobody takes filled the
	// queue.
	r.poll(t, 3, input.gathered)
	err = r.end(t)
	require.ErrorIs(t, err, syscall.EPIPE)
	require.ErrorContains(t, err, "writing metrics to stdout: ")
	require.Equal(t, []string{"start", "gather", "gather", "gather", "stop"}, input.calls)
}

// A Gather error is logged as an error execd reads, and the polls go on.
func TestRunInputLogsGatherErrors(t *testing.T) {
	input := failingInput{gathered: make(chan struct{})}
	var stdout, stderr bytes.Buffer
	r := startRun(context.Background(), input, &stdout, &stderr)
	r.poll(t, 2, input.gathered)
	require.NoError(t, r.end(t))
	require.Equal(t, strings.Repeat("E! Gathering failed: the API is gone\n", 2), stderr.String())
	require.Empty(t, stdout.String())
}

type failingInput struct{ gathered chan struct{} }

func (failingInput) SampleConfig() string { return "" }

func (f failingInput) Gather(telegraf.Accumulator) error {
	defer func() { f.gathered <- struct{}{} }()
	return errors.New("the API is gone")
}

// failingWriter fails every write.
type failingWriter struct{}

func (failingWriter) Write([]byte) (int, error) { return 0, errors.New("stdout closed") }

// A metric is taken only once its line left the buffer for stdout: lines
// still buffered when stdout fails are dropped, not taken, so that the
// plugin reads them again.
func TestMetricsAreTakenOnlyOnceFlushed(t *testing.T) {
	metrics := make(chan telegraf.Metric, 3)
	var outcomes []bool
	for i := range 3 {
		m, _ := metric.WithTracking(metric.New("m", nil, map[string]any{"i": i}, time.Unix(0, 0)),
			func(info telegraf.DeliveryInfo) { outcomes = append(outcomes, info.Delivered()) })
		metrics <- m
	}
	close(metrics)
	err := writeMetrics(metrics, failingWriter{}, nil)
	require.EqualError(t, err, "writing metrics to stdout: stdout closed")
	require.Equal(t, []bool{false, false, false}, outcomes)
}

// A stop waits for stdout to take the lines made so far, so that the
// input's Stop saves its state past them, but no longer than stopWait:
// the input is stopped anyway, and the run fails, well before Telegraf
// kills the process.
func TestRunInputStopsWhenStdoutTakesNothing(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		input := &countingInput{perGather: 3, gathered: make(chan struct{})}
		stdout := &gatedWriter{open: make(chan struct{})}
		var stderr bytes.Buffer
		r := startRun(context.Background(), input, stdout, &stderr)
		r.poll(t, 1, input.gathered)
		stopping := time.Now()
		err := r.end(t)
		require.Equal(t, stopWait, time.Since(stopping))
		require.EqualError(t, err, "stdout did not take the last lines within 4s of the stop: they are not written")
		require.Equal(t, []string{"start", "gather", "stop"}, input.calls)
		require.Empty(t, stderr.String())
		close(stdout.open) // the writer, still waiting, ends
	})
}
