package microsoft_defender

import (
	"fmt"
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

// countOf says "1 alert", "2 alerts".
func countOf(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}
