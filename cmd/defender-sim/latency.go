package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strings"
	"time"

	simulator "github.com/sectelemetry/telegraf-defender/internal/sim"
)

// latencyWatch measures, for the benchmark script, how long each Graph alert
// version takes from becoming visible in the simulator to its line in a
// Telegraf file output: it reads the file as it grows, notes when each
// defender_alert line appears, and reports the versions that became
// visible after it started.
type latencyWatch struct {
	sim     *simulator.Server
	path    string
	started time.Time
	visible map[string]time.Time // id@lastUpdateDateTime (as Unix nanoseconds) -> when it became visible
	seen    map[string]bool
	latency []time.Duration
	unknown int // lines of versions the simulator does not hold
}

var (
	lineAlertID    = regexp.MustCompile(`[ ,]alert_id="([^"]*)"`)
	lineLastUpdate = regexp.MustCompile(`[ ,]last_update_date_time="([^"]*)"`)
)

func newLatencyWatch(sim *simulator.Server, path string) *latencyWatch {
	return &latencyWatch{sim: sim, path: path, started: time.Now(), visible: make(map[string]time.Time), seen: make(map[string]bool)}
}

func versionKey(id, lastUpdate string) (string, bool) {
	t, err := time.Parse(time.RFC3339Nano, lastUpdate)
	return fmt.Sprintf("%s@%d", id, t.UnixNano()), err == nil
}

// refresh learns when each version the simulator holds became visible:
// once both its time and its VisibleAt have come.
func (w *latencyWatch) refresh() {
	for _, a := range w.sim.AllGraph() {
		key, ok := versionKey(a.ID, a.LastUpdateDateTime)
		if !ok {
			continue
		}
		at, _ := time.Parse(time.RFC3339Nano, a.LastUpdateDateTime) //nolint:errcheck // parsed by versionKey
		w.visible[key] = at
		if a.VisibleAt.After(at) {
			w.visible[key] = a.VisibleAt
		}
	}
}

// run reads the file every 20 ms until ctx ends.
func (w *latencyWatch) run(ctx context.Context) {
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	var f *os.File
	for f == nil {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			f, _ = os.Open(w.path) //nolint:errcheck // not there yet: Telegraf creates it
		}
	}
	defer f.Close()
	r := bufio.NewReaderSize(f, 1<<20)
	var pending strings.Builder
	for {
		for {
			chunk, err := r.ReadString('\n')
			pending.WriteString(chunk)
			if err != nil {
				break // EOF: a line cut short is finished at the next tick
			}
			w.line(pending.String(), time.Now())
			pending.Reset()
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

func (w *latencyWatch) line(line string, at time.Time) {
	if !strings.HasPrefix(line, "defender_alert,") && !strings.HasPrefix(line, "defender_alert ") {
		return
	}
	id, update := lineAlertID.FindStringSubmatch(line), lineLastUpdate.FindStringSubmatch(line)
	if id == nil || update == nil {
		return
	}
	key, ok := versionKey(id[1], update[1])
	if !ok || w.seen[key] {
		return
	}
	w.seen[key] = true
	visible, known := w.visible[key]
	if !known {
		w.refresh()
		if visible, known = w.visible[key]; !known {
			w.unknown++
			return
		}
	}
	if visible.After(w.started) {
		w.latency = append(w.latency, at.Sub(visible))
	}
}

// report is the count, median, 95th percentile and maximum of the latencies.
func (w *latencyWatch) report() string {
	if len(w.latency) == 0 {
		return fmt.Sprintf("latency: no version became visible after the start and reached %s (%d unknown)", w.path, w.unknown)
	}
	slices.Sort(w.latency)
	at := func(q float64) float64 { return w.latency[int(q*float64(len(w.latency)-1))].Seconds() }
	return fmt.Sprintf("latency: %d versions, p50 %.2f s, p95 %.2f s, max %.2f s (%d unknown)",
		len(w.latency), at(0.5), at(0.95), at(1), w.unknown)
}
