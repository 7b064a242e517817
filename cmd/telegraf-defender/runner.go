package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
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
		// Telegraf's execd closes the pipe once the process exited: what
		// Stop emitted must be read by then.
		flushMetrics(metrics, stopping.Done())
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

// flushRequest, queued among the metrics, has the writer flush every metric
// queued before it and settle each once its line was read (or giveUp
// closes: those not read are rejected), then close done. It is never written.
type flushRequest struct {
	telegraf.Metric
	giveUp <-chan struct{}
	done   chan struct{}
}

// flushMetrics has the metrics queued so far flushed and settled; false if
// that did not happen before giveUp.
func flushMetrics(metrics chan<- telegraf.Metric, giveUp <-chan struct{}) bool {
	request := flushRequest{giveUp: giveUp, done: make(chan struct{})}
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

// pipePoll is how often the writer looks how far Telegraf read the pipe
// while lines wait to be read.
const pipePoll = 10 * time.Millisecond

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
	lines := &lineTracker{stdout: stdout}
	var failed error
	// A metric is taken once Telegraf read its line: a line still in the
	// buffer or the pipe dies with the process, or with Telegraf, and the
	// plugin saves its state past what was taken.
	settle := func() {
		if failed == nil {
			failed = out.Flush()
		}
		lines.flush(failed)
	}
	poll := time.NewTicker(pipePoll)
	defer poll.Stop()
	for {
		var check <-chan time.Time
		if len(lines.unread) > 0 {
			check = poll.C
		}
		var m telegraf.Metric
		select {
		case <-check:
			lines.takeRead()
			continue
		case next, open := <-metrics:
			if !open {
				settle()
				lines.settle(failed == nil) // after Stop: nothing is read again
				if failed != nil {
					return fmt.Errorf("writing metrics to stdout: %w", failed)
				}
				return nil
			}
			m = next
		}
		if request, ok := m.(flushRequest); ok {
			settle()
			lines.waitForReader(poll.C, request.giveUp)
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
			if len(metrics) == 0 { // the lines before it wait for no next metric
				settle()
			}
			continue
		}
		_, failed = out.Write(line)
		if lines.add(m, len(line)); failed != nil || len(metrics) == 0 {
			settle()
		}
	}
}

// lineTracker follows the metrics written until their lines were read: from
// a pipe, once its reader took them; otherwise once flushed.
type lineTracker struct {
	stdout   io.Writer
	written  int64     // bytes of the lines added so far
	flushed  int64     // bytes of the lines flushed so far
	buffered []pending // not flushed yet
	unread   []pending // flushed, not yet read
}

// pending is a metric whose line ends end bytes into the output.
type pending struct {
	metric telegraf.Metric
	end    int64
}

func (l *lineTracker) add(m telegraf.Metric, n int) {
	l.written += int64(n)
	l.buffered = append(l.buffered, pending{m, l.written})
}

// flush takes the outcome of a flush: the lines are in stdout, or lost.
func (l *lineTracker) flush(err error) {
	l.unread, l.buffered, l.flushed = append(l.unread, l.buffered...), l.buffered[:0], l.written
	if err != nil {
		l.settle(false)
		return
	}
	l.takeRead()
}

// takeRead accepts the metrics whose lines the reader has read.
func (l *lineTracker) takeRead() {
	read := l.flushed
	if f, ok := l.stdout.(*os.File); ok {
		if n, ok := unreadBytes(f); ok {
			read -= int64(n)
		}
	}
	i := 0
	for ; i < len(l.unread) && l.unread[i].end <= read; i++ {
		l.unread[i].metric.Accept()
	}
	l.unread = l.unread[i:]
}

// waitForReader waits until every flushed line was read, looking at each
// tick; those not read when giveUp closes are rejected.
func (l *lineTracker) waitForReader(tick <-chan time.Time, giveUp <-chan struct{}) {
	for l.takeRead(); len(l.unread) > 0; l.takeRead() {
		select {
		case <-tick:
		case <-giveUp:
			l.settle(false)
			return
		}
	}
}

// settle accepts or rejects every metric not settled yet.
func (l *lineTracker) settle(delivered bool) {
	for _, p := range append(l.unread, l.buffered...) {
		if delivered {
			p.metric.Accept()
		} else {
			p.metric.Reject()
		}
	}
	l.unread, l.buffered = l.unread[:0], l.buffered[:0]
}

// metricMaker is what the accumulator needs of the plugin's host: metrics
// pass as the input made them, as in the shim.
type metricMaker struct{ log telegraf.Logger }

func (metricMaker) LogName() string                              { return "" }
func (metricMaker) MakeMetric(m telegraf.Metric) telegraf.Metric { return m }
func (mm metricMaker) Log() telegraf.Logger                      { return mm.log }
