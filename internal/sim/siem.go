package sim

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"
)

// SIEMBehaviour is how the simulated SIEM API treats what its
// documentation leaves to trust.
type SIEMBehaviour struct {
	// LimitOldest answers limit with the oldest matching detections
	// instead of the newest.
	LimitOldest bool
	// MaxLimit, when positive, silently lowers a larger limit (or none) to
	// it, as a service capping its answers without saying so would.
	MaxLimit int
}

// siemQuery is a parsed GET /api/alerts request.
type siemQuery struct {
	since, until        time.Time
	limit               int
	machineGroups       map[string]bool
	deviceTag, cloudTag string
}

// serveAlerts implements the SIEM API: GET /api/alerts filtered on
// LastProcessedTimeUtc, newest `limit` detections (the oldest with
// SIEMBehaviour.LimitOldest), repeated machinegroups
// and the two machine-tag filters.
func (s *Server) serveAlerts(w http.ResponseWriter, r *http.Request) {
	if !strings.EqualFold(r.PathValue("resource"), "alerts") {
		http.NotFound(w, r)
		return
	}
	fault := s.takeFault(false)
	if fault == FaultThrottle && s.serveFault(w, r, fault, nil) {
		return
	}
	if !s.checkBearer(w, r, siemAudiences) {
		return
	}
	now := s.now()
	q, err := parseSIEMQuery(r.URL.Query(), now)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	matches := s.selectDetections(q, now)
	if s.serveFault(w, r, fault, func() []byte { return marshalDetections(matches) }) {
		return
	}

	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	bw := bufio.NewWriterSize(w, 64*1024)
	var encoded bytes.Buffer
	enc := json.NewEncoder(&encoded)
	// Write errors mean the client went away: nothing left to do then.
	bw.WriteByte('[') //nolint:errcheck // see above
	for i := range matches {
		if i > 0 {
			bw.WriteByte(',') //nolint:errcheck // see above
		}
		encoded.Reset()
		if err := enc.Encode(&matches[i]); err != nil {
			return
		}
		if _, err := bw.Write(s.recordFaults(&matches[i], bytes.TrimSpace(encoded.Bytes()))); err != nil {
			return
		}
	}
	bw.WriteByte(']') //nolint:errcheck // see above
	bw.Flush()
}

func marshalDetections(matches []Detection) []byte {
	b, err := json.Marshal(matches)
	if err != nil {
		return []byte("[]")
	}
	return b
}

// selectDetections returns the detections a query sees, oldest first.
func (s *Server) selectDetections(q siemQuery, now time.Time) []Detection {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.generateLocked(now)

	matches := make([]Detection, 0, 64)
	first := sort.Search(len(s.detections), func(i int) bool { return !s.detections[i].lastProcessed.Before(q.since) })
	for i := first; i < len(s.detections); i++ {
		d := &s.detections[i]
		if d.lastProcessed.After(q.until) {
			break
		}
		if d.visibleAt.After(now) ||
			len(q.machineGroups) > 0 && !q.machineGroups[d.MachineGroup] ||
			q.deviceTag != "" && !hasTag(d.DeviceCreatedMachineTags, q.deviceTag) ||
			q.cloudTag != "" && !hasTag(d.CloudCreatedMachineTags, q.cloudTag) {
			continue
		}
		matches = append(matches, d.Detection)
	}
	if m := s.cfg.SIEM.MaxLimit; m > 0 && (q.limit == 0 || q.limit > m) {
		q.limit = m
	}
	if q.limit > 0 && len(matches) > q.limit {
		if s.cfg.SIEM.LimitOldest {
			return matches[:q.limit]
		}
		matches = matches[len(matches)-q.limit:]
	}
	return matches
}

func hasTag(list, tag string) bool {
	for t := range strings.SplitSeq(list, ",") {
		if strings.EqualFold(strings.TrimSpace(t), tag) {
			return true
		}
	}
	return false
}

// parseSIEMQuery reads the query the way the service does: parameter names
// are case-insensitive, the window defaults to the last two hours.
func parseSIEMQuery(values url.Values, now time.Time) (siemQuery, error) {
	q := siemQuery{since: now.Add(-2 * time.Hour), until: now, machineGroups: make(map[string]bool)}
	for key, vals := range values {
		v := vals[len(vals)-1]
		var err error
		switch strings.ToLower(key) {
		case "sincetimeutc":
			q.since, err = parseQueryTime(v)
		case "untiltimeutc":
			q.until, err = parseQueryTime(v)
		case "ago":
			var ago time.Duration
			if ago, err = parseISODuration(v); err == nil {
				q.since, q.until = now.Add(-ago), now
			}
		case "limit":
			if q.limit, err = strconv.Atoi(v); err == nil && q.limit < 0 {
				err = errors.New("must not be negative")
			}
		case "machinegroups":
			for _, g := range vals {
				q.machineGroups[g] = true
			}
		case "devicecreatedmachinetags":
			q.deviceTag = v
		case "cloudcreatedmachinetags":
			q.cloudTag = v
		}
		if err != nil {
			return q, fmt.Errorf("invalid value %q for parameter %s: %w", v, key, err)
		}
	}
	return q, nil
}

var queryTimeLayouts = []string{
	time.RFC3339Nano,
	"2006-01-02T15:04:05.9999999",
	"2006-01-02 15:04:05.9999999",
	"2006-01-02",
}

func parseQueryTime(v string) (time.Time, error) {
	v = strings.Trim(v, `"`)
	for _, layout := range queryTimeLayouts {
		if t, err := time.Parse(layout, v); err == nil {
			return t.UTC(), nil
		}
	}
	return time.Time{}, errors.New("not a date and time")
}

var isoDuration = regexp.MustCompile(`^P(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+(?:\.\d+)?)S)?)?$`)

// parseISODuration parses the ISO 8601 durations the `ago` parameter takes.
func parseISODuration(v string) (time.Duration, error) {
	m := isoDuration.FindStringSubmatch(v)
	if m == nil || v == "P" || strings.HasSuffix(v, "T") {
		return 0, errors.New("not an ISO 8601 duration")
	}
	var d time.Duration
	for i, unit := range []time.Duration{24 * time.Hour, time.Hour, time.Minute, time.Second} {
		if m[i+1] == "" {
			continue
		}
		n, err := strconv.ParseFloat(m[i+1], 64)
		if err != nil {
			return 0, err
		}
		d += time.Duration(n * float64(unit))
	}
	return d, nil
}
