package microsoft_defender

import (
	"bytes"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/influxdata/telegraf"
)

// record is a SIEM detection or a Graph alert or incident version: all that deduplication, the cursor and counts see.
type record interface {
	identity() string                    // the deduplication key; "" when there is none
	cursorTime() time.Time               // the time the API's window filters on
	inWindow() bool                      // whether cursorTime lies in the window asked: if not, it moves no bound
	metric() (telegraf.Metric, []string) // defender_alert, and the fields cut to maxFieldBytes
	countKey() countKey                  // its defender_alert_count series
	problems() *recordProblems           // what of it could not be decoded
	validate()                           // parses what the decoder left as text, once decoded
}

// fieldProblem is a member whose value does not fit its field: the field is
// left as it was and the rest of the record decoded.
type fieldProblem struct{ field, reason string }

// recordProblems is what of one record could not be decoded.
type recordProblems struct {
	noun    string // with index and offset, places the record (where)
	index   int
	offset  int64
	invalid []fieldProblem
	skip    string // why the record is not emitted; "" when it is
}

// where starts a log message on the record: "Detection 3 at byte 1204".
func (p *recordProblems) where() string {
	return fmt.Sprintf("%s%s %d at byte %d", strings.ToUpper(p.noun[:1]), p.noun[1:], p.index, p.offset)
}

// fieldNames lists the fields left out, for the invalid_field_names field.
func (p *recordProblems) fieldNames() string {
	names := make([]string, len(p.invalid))
	for i, f := range p.invalid {
		names[i] = f.field
	}
	return strings.Join(names, ",")
}

func (p *recordProblems) String() string {
	parts := make([]string, len(p.invalid))
	for i, f := range p.invalid {
		parts[i] = f.field + ": " + f.reason
	}
	return strings.Join(parts, "; ")
}

// parseTime parses the named field's time; "" is none, and no problem.
func (p *recordProblems) parseTime(field, value string) time.Time {
	if value == "" {
		return time.Time{}
	}
	t, err := parseAPITime(value)
	if err != nil {
		p.invalid = append(p.invalid, fieldProblem{field, err.Error()})
	}
	return t
}

// A metric's time is nanoseconds since 1970 in an int64: one beyond these would wrap around.
var earliestTime, latestTime = time.Unix(0, math.MinInt64), time.Unix(0, math.MaxInt64)

// parseAPITime reads the forms the APIs and their documentation use; no zone is UTC, as in the SIEM API.
func parseAPITime(s string) (time.Time, error) {
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04:05.999999999", "2006-01-02 15:04:05.999999999"} {
		if t, err := time.Parse(layout, s); err == nil {
			if t.Before(earliestTime) || t.After(latestTime) {
				return time.Time{}, fmt.Errorf("%q lies outside the years 1678 to 2262 that a metric's time can hold", s)
			}
			return t.UTC(), nil
		}
	}
	return time.Time{}, fmt.Errorf("%s is not an RFC 3339 timestamp", quoteShort([]byte(strconv.Quote(s))))
}

// optional is a JSON integer or boolean that may also be null, "" or absent.
type optional[T int64 | bool] struct {
	value T
	set   bool
}

// UnmarshalJSON implements json.Unmarshaler; what does not parse leaves o as it was.
func (o *optional[T]) UnmarshalJSON(b []byte) error {
	s := string(bytes.TrimSpace(b))
	switch {
	case len(s) >= 2 && s[0] == '"' && s[len(s)-1] == '"':
		s = s[1 : len(s)-1]
	case s == "null":
		return nil
	}
	if s == "" {
		return nil
	}
	var v T
	var err error
	what := "an integer"
	switch p := any(&v).(type) {
	case *int64:
		*p, err = strconv.ParseInt(s, 10, 64)
	case *bool:
		what = "a boolean"
		*p, err = strconv.ParseBool(s)
	}
	if err != nil {
		return fmt.Errorf("%s is not %s", quoteShort(b), what)
	}
	o.value, o.set = v, true
	return nil
}

// quoteShort quotes a misfit value for a message. A long one is only
// measured: cut, it could hold most of a secret that redaction misses.
func quoteShort(b []byte) string {
	if len(b) > 64 {
		return fmt.Sprintf("a value of %d bytes", len(b))
	}
	return string(b)
}
