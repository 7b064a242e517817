package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"time"

	"github.com/influxdata/telegraf"
	"github.com/influxdata/telegraf/agent"
	"github.com/influxdata/telegraf/logger"
	"github.com/influxdata/telegraf/plugins/common/shim"
	"github.com/influxdata/telegraf/plugins/serializers/influx"
)

// metricQueue is how many metrics may wait for the writer. Telegraf's shim
// hands each metric over through a channel of one, so that its gathering
// and writing goroutines take turns for every metric; a longer queue lets
// the writer take them in runs.
const metricQueue = 256

// stdoutBuffer is the most the writer holds before it writes to stdout.
const stdoutBuffer = 64 * 1024

// runInput runs input as Telegraf's shim does (shim.RunInput): a service
// input is started with an accumulator that keeps nanoseconds; Gather runs
// every pollInterval and whenever a line arrives on stdin
// (shim.PollIntervalDisabled: only then); gathering ends when stdin closes
// or ctx ends, which interrupts a poll in flight (the input's Interrupt);
// then, once Gather returned, the metrics made so far are flushed and
// settled, the input is stopped and the rest written out, all within
// stopWait. No two of the input's functions but Interrupt run at once.
// Unlike the shim, it writes the line protocol through a buffer that is
// flushed whenever no metric waits, so that a poll of thousands of
// detections takes a few writes instead of one per metric, and a stdout
// that breaks fails the run instead of blocking the poll.
func runInput(ctx context.Context, input telegraf.Input, pollInterval time.Duration, stdin io.Reader, stdout, stderr io.Writer) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	log := logger.New("", "", "")
	metrics := make(chan telegraf.Metric, metricQueue)
	written := make(chan error, 1)
	go func() { written <- writeMetrics(metrics, stdout, log) }()

	acc := agent.NewAccumulator(metricMaker{log: log}, metrics)
	acc.SetPrecision(time.Nanosecond)
	service, isService := input.(telegraf.ServiceInput)
	if isService {
		if err := service.Start(acc); err != nil {
			close(metrics)
			<-written
			return fmt.Errorf("starting the input failed: %w", err)
		}
	}

	prompts := make(chan struct{}, 1)
	go func() {
		lines := bufio.NewScanner(stdin)
		for lines.Scan() {
			select {
			case prompts <- struct{}{}:
			default: // a poll is already asked for
			}
		}
		cancel()
	}()

	// An input that can be interrupted ends a poll in flight as soon as the
	// run ends: the input is stopped only after its Gather returned, which
	// could take a whole interval, and Telegraf's execd kills the process
	// ten seconds after closing its stdin.
	interrupted := make(chan struct{})
	go func() {
		<-ctx.Done()
		if interruptible, ok := input.(interface{ Interrupt() }); ok {
			interruptible.Interrupt()
		}
		close(interrupted)
	}()
	gatherUntilDone(ctx, input, acc, pollInterval, prompts, stderr)
	<-interrupted
	stopping, cancelStop := context.WithTimeout(context.Background(), stopWait)
	defer cancelStop()
	// The plugin's Stop saves its state from the metrics settled: the lines
	// made so far are flushed first, or a restart would repeat them.
	if !flushMetrics(metrics, stopping.Done()) {
		log.Warnf("Stdout did not take the last lines within %s: stopping without them, the next start emits them again", stopWait)
	}
	if isService {
		service.Stop()
	}
	close(metrics)
	select {
	case err := <-written:
		return err
	case <-stopping.Done():
		return fmt.Errorf("stdout did not take the last lines within %s of the stop: they are not written", stopWait)
	}
}

// stopWait bounds the stop: Telegraf's execd sends SIGTERM five seconds
// after closing stdin, and kills the process five seconds later.
const stopWait = 4 * time.Second

// flushRequest, queued among the metrics, has the writer flush and settle
// every metric queued before it, then close done. It is never written.
type flushRequest struct {
	telegraf.Metric
	done chan struct{}
}

// flushMetrics has the metrics queued so far flushed and settled; false if
// that did not happen before giveUp.
func flushMetrics(metrics chan<- telegraf.Metric, giveUp <-chan struct{}) bool {
	request := flushRequest{done: make(chan struct{})}
	select {
	case metrics <- request:
	case <-giveUp:
		return false
	}
	select {
	case <-request.done:
		return true
	case <-giveUp:
		return false
	}
}

// gatherUntilDone runs Gather on every tick and prompt until ctx ends, which takes
// precedence over both.
func gatherUntilDone(
	ctx context.Context, input telegraf.Input, acc telegraf.Accumulator, pollInterval time.Duration, prompts <-chan struct{}, stderr io.Writer,
) {
	var ticks <-chan time.Time
	if pollInterval != shim.PollIntervalDisabled {
		ticker := time.NewTicker(pollInterval)
		defer ticker.Stop()
		ticks = ticker.C
	}
	for {
		if ctx.Err() != nil {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-prompts:
		case <-ticks:
		}
		if err := input.Gather(acc); err != nil {
			fmt.Fprintf(stderr, "E! Gathering failed: %s\n", oneLine(err.Error()))
		}
	}
}

// writeMetrics writes each metric as line protocol until metrics is closed.
// Once stdout has failed, it goes on taking metrics (so that no poll blocks)
// but rejects them, so that the plugin reads them again, and returns the
// first failure.
func writeMetrics(metrics <-chan telegraf.Metric, stdout io.Writer, log telegraf.Logger) error {
	serializer := &influx.Serializer{}
	if err := serializer.Init(); err != nil {
		for m := range metrics {
			if request, ok := m.(flushRequest); ok {
				close(request.done)
				continue
			}
			m.Reject()
		}
		return fmt.Errorf("creating the serializer failed: %w", err)
	}
	out := bufio.NewWriterSize(stdout, stdoutBuffer)
	var failed error
	// Metrics are taken once flushed: a line still in the buffer dies with
	// the process, and the plugin saves its state past what was taken.
	var buffered []telegraf.Metric
	settle := func() {
		if failed == nil {
			failed = out.Flush()
		}
		for _, b := range buffered {
			if failed == nil {
				b.Accept()
			} else {
				b.Reject()
			}
		}
		buffered = buffered[:0]
	}
	for m := range metrics {
		if request, ok := m.(flushRequest); ok {
			settle()
			close(request.done)
			continue
		}
		if failed != nil {
			m.Reject()
			continue
		}
		line, err := serializer.Serialize(m)
		if err != nil {
			// One metric Telegraf's serializer refuses is no reason to lose
			// the ones after it.
			m.Reject()
			log.Errorf("Serializing a metric failed: %v", err)
			continue
		}
		_, failed = out.Write(line)
		if buffered = append(buffered, m); failed != nil || len(metrics) == 0 {
			settle()
		}
	}
	settle()
	if failed != nil {
		return fmt.Errorf("writing metrics to stdout: %w", failed)
	}
	return nil
}

// metricMaker is what the accumulator needs of the plugin's host: metrics
// pass as the input made them, as in the shim.
type metricMaker struct{ log telegraf.Logger }

func (metricMaker) LogName() string                              { return "" }
func (metricMaker) MakeMetric(m telegraf.Metric) telegraf.Metric { return m }
func (mm metricMaker) Log() telegraf.Logger                      { return mm.log }
