package microsoft_defender

import (
	"net/http"
	"time"
)

// maxClockSkew is how far the host clock may run ahead of the API's before
// the plugin says so, and how far a saved position may lie in the future
// before it is distrusted.
const maxClockSkew = time.Minute

// serverClock keeps the API's own time, from the Date header of its latest
// answer. A host clock that runs ahead would otherwise end windows in the
// API's future and move the watermark past detections the API has yet to
// process.
type serverClock struct {
	latest time.Time
}

// observe reads the Date header of an answer; answers without one, or with
// one that does not parse, change nothing.
func (c *serverClock) observe(h http.Header) {
	t, err := http.ParseTime(h.Get("Date"))
	if err != nil {
		return
	}
	c.latest = t.UTC()
}

// now is the API's time at its latest answer; zero before the first.
func (c *serverClock) now() time.Time {
	return c.latest
}

// clampToServerClock ends the chunk sp, read whole, no later than the
// API's time minus delay, before it is completed. It reports whether the
// chunk may be completed (not when the API's time lies before its start),
// and whether its end was moved: the poll's window is then read as far as
// the API's time allows.
func (m *MicrosoftDefender) clampToServerClock(sp *span) (complete, clamped bool) {
	limit := m.chunkEnd(sp)
	if !sp.End.After(limit) {
		return true, false
	}
	serverNow := m.serverClock.now()
	if skew := m.now().Sub(serverNow); skew > maxClockSkew {
		m.warnf("The host clock runs %s ahead of the API's (Date: %s): the window ends at the API's time minus delay",
			skew.Round(time.Second), serverNow.Format(time.RFC3339))
	}
	if !limit.After(sp.Start) {
		// Read it all again once the API's time has passed its start.
		sp.From, sp.To = sp.Start, sp.End
		return false, true
	}
	sp.End = limit
	return true, true
}

// chunkEnd is where the chunk sp can end by the API's clock: its end, but
// no later than the API's time minus delay. An API whose Date lies behind
// the detections it has served is wrong: the newest time read in the chunk
// is a time the API had reached, so the chunk can end there at least.
func (m *MicrosoftDefender) chunkEnd(sp *span) time.Time {
	serverNow := m.serverClock.now()
	if serverNow.IsZero() {
		return sp.End
	}
	// The Date header has whole seconds.
	limit := serverNow.Add(-time.Duration(m.Delay) + time.Second)
	if sp.Newest.After(limit) {
		limit = sp.Newest
	}
	if sp.End.Before(limit) {
		return sp.End
	}
	return limit
}

// distrustFuturePosition resets a watermark or pending chunk that lies
// later than now: a host clock that ran ahead when it was saved, or an
// edited state file. Obeyed, it would skip everything up to that time.
func (m *MicrosoftDefender) distrustFuturePosition(now time.Time) error {
	c := m.cursor
	future := c.watermark
	if c.pending != nil && c.pending.Start.After(future) {
		future = c.pending.Start
	}
	if !future.After(now.Add(maxClockSkew)) {
		return nil
	}
	c.watermark, c.pending = time.Time{}, nil
	return &futurePositionError{position: future, now: now, lookback: time.Duration(m.InitialLookback)}
}

type futurePositionError struct {
	position, now time.Time
	lookback      time.Duration
}

func (e *futurePositionError) Error() string {
	return "the saved position " + e.position.Format(time.RFC3339) + " lies after now (" + e.now.Format(time.RFC3339) +
		"): the host clock ran ahead when it was saved, or the state was edited; reading again from initial_lookback (" +
		e.lookback.String() + ") before now, detections already emitted in that stretch are dropped as duplicates where still remembered"
}
