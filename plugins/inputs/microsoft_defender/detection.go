package microsoft_defender

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"time"
)

// detection is one SIEM API detection. It decodes all three payload
// generations: absent, null and "" all leave a string empty, and both
// spellings of IoaDefinitionId are kept so the mapping can pick either.
type detection struct {
	AlertTime                 string       `json:"AlertTime"`
	ComputerDNSName           string       `json:"ComputerDnsName"`
	AlertTitle                string       `json:"AlertTitle"`
	Category                  string       `json:"Category"`
	Severity                  string       `json:"Severity"`
	AlertID                   string       `json:"AlertId"`
	Actor                     string       `json:"Actor"`
	LinkToWDATP               string       `json:"LinkToWDATP"`
	IocName                   string       `json:"IocName"`
	IocValue                  string       `json:"IocValue"`
	CreatorIocName            string       `json:"CreatorIocName"`
	CreatorIocValue           string       `json:"CreatorIocValue"`
	Sha1                      string       `json:"Sha1"`
	FileName                  string       `json:"FileName"`
	FilePath                  string       `json:"FilePath"`
	IPAddress                 string       `json:"IpAddress"`
	URL                       string       `json:"Url"`
	IoaDefinitionID           string       `json:"IoaDefinitionId"`
	IoaDefinitiondID          string       `json:"IoaDefinitiondId"` // the 2017 spelling
	UserName                  string       `json:"UserName"`
	AlertPart                 optionalInt  `json:"AlertPart"`
	FullID                    string       `json:"FullId"`
	LastProcessedTimeUtc      string       `json:"LastProcessedTimeUtc"`
	ThreatCategory            string       `json:"ThreatCategory"`
	ThreatFamily              string       `json:"ThreatFamily"`
	ThreatName                string       `json:"ThreatName"`
	RemediationAction         string       `json:"RemediationAction"`
	RemediationIsSuccess      optionalBool `json:"RemediationIsSuccess"`
	Source                    string       `json:"Source"`
	Md5                       string       `json:"Md5"`
	Sha256                    string       `json:"Sha256"`
	WasExecutingWhileDetected optionalBool `json:"WasExecutingWhileDetected"`
	UserDomain                string       `json:"UserDomain"`
	LogOnUsers                string       `json:"LogOnUsers"`
	MachineDomain             string       `json:"MachineDomain"`
	MachineName               string       `json:"MachineName"`
	InternalIPv4List          string       `json:"InternalIPv4List"`
	InternalIPv6List          string       `json:"InternalIPv6List"`
	FileHash                  string       `json:"FileHash"`
	DeviceID                  string       `json:"DeviceID"`
	MachineGroup              string       `json:"MachineGroup"`
	Description               string       `json:"Description"`
	DeviceCreatedMachineTags  string       `json:"DeviceCreatedMachineTags"`
	CloudCreatedMachineTags   string       `json:"CloudCreatedMachineTags"`
	CommandLine               string       `json:"CommandLine"`
	IncidentLinkToWDATP       string       `json:"IncidentLinkToWDATP"`
	ReportID                  optionalInt  `json:"ReportID"`
	LinkToMTP                 string       `json:"LinkToMTP"`
	IncidentLinkToMTP         string       `json:"IncidentLinkToMTP"`
	ExternalID                string       `json:"ExternalId"`
	IocUniqueID               string       `json:"IocUniqueId"`

	// Parsed from the strings above by validate.
	alertAt       time.Time
	lastProcessed time.Time
	// cursorAt replaces lastProcessed for the cursor when that lies outside
	// the request's window (placeIn).
	cursorAt time.Time
	issues   recordProblems
}

// identity is the detection's deduplication key: FullId, or AlertId and
// IocUniqueId when FullId is absent (they are equal in every known sample).
func (d *detection) identity() string {
	if d.FullID != "" {
		return d.FullID
	}
	if d.AlertID == "" && d.IocUniqueID == "" {
		return ""
	}
	return d.AlertID + ":" + d.IocUniqueID
}

func (d *detection) ioaDefinitionID() string {
	if d.IoaDefinitionID != "" {
		return d.IoaDefinitionID
	}
	return d.IoaDefinitiondID
}

// validate parses the timestamps. A time that does not parse is left out
// like any other value that does not fit; a detection that can be neither
// placed in time nor told apart from others is skipped.
func (d *detection) validate() {
	d.lastProcessed = d.issues.parseTime("LastProcessedTimeUtc", d.LastProcessedTimeUtc)
	d.alertAt = d.issues.parseTime("AlertTime", d.AlertTime)
	if d.lastProcessed.IsZero() && d.identity() == "" {
		d.issues.skip = "it has neither a valid LastProcessedTimeUtc nor a FullId, AlertId or IocUniqueId"
	}
}

// parseTime parses the time of the named field, recording a value that is
// no time as a problem; "" is no time and no problem.
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

// apiTimeLayouts are the forms the SIEM API and its documentation use; a
// value without a zone is UTC, as every SIEM API time is.
var apiTimeLayouts = []string{
	time.RFC3339Nano,
	"2006-01-02T15:04:05.999999999",
	"2006-01-02 15:04:05.999999999",
}

// Metric timestamps are nanoseconds since 1970 in an int64: times beyond
// these would wrap around.
var (
	earliestTime = time.Unix(0, math.MinInt64).UTC()
	latestTime   = time.Unix(0, math.MaxInt64).UTC()
)

func parseAPITime(s string) (time.Time, error) {
	for _, layout := range apiTimeLayouts {
		if t, err := time.Parse(layout, s); err == nil {
			if t.Before(earliestTime) || t.After(latestTime) {
				return time.Time{}, fmt.Errorf("%q lies outside the years 1678 to 2262 that a metric's time can hold", s)
			}
			return t.UTC(), nil
		}
	}
	return time.Time{}, fmt.Errorf("%s is not an RFC 3339 timestamp", quoteShort([]byte(strconv.Quote(s))))
}

// optionalInt is a JSON number that may also be null, "" or absent.
type optionalInt struct {
	value int64
	set   bool
}

// UnmarshalJSON implements json.Unmarshaler.
func (o *optionalInt) UnmarshalJSON(b []byte) error {
	s, quoted := unquote(b)
	if s == "" || s == "null" && !quoted {
		return nil
	}
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return fmt.Errorf("%s is not an integer", quoteShort(b))
	}
	o.value, o.set = v, true
	return nil
}

// optionalBool is true, false, null, "" or absent.
type optionalBool struct {
	value bool
	set   bool
}

// UnmarshalJSON implements json.Unmarshaler.
func (o *optionalBool) UnmarshalJSON(b []byte) error {
	s, quoted := unquote(b)
	if s == "" || s == "null" && !quoted {
		return nil
	}
	v, err := strconv.ParseBool(s)
	if err != nil {
		return fmt.Errorf("%s is not a boolean", quoteShort(b))
	}
	o.value, o.set = v, true
	return nil
}

// quoteShort quotes a value that does not fit its field, for a message. A
// long one is only measured: cut, it could hold most of a secret that the
// redaction of the whole message would then not recognise.
func quoteShort(b []byte) string {
	if len(b) > 64 {
		return fmt.Sprintf("a value of %d bytes", len(b))
	}
	return string(b)
}

func unquote(b []byte) (string, bool) {
	b = bytes.TrimSpace(b)
	if len(b) >= 2 && b[0] == '"' && b[len(b)-1] == '"' {
		return string(b[1 : len(b)-1]), true
	}
	return string(b), false
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return cutAtRune(s, n) + "..."
}

// detectionDecoder streams a JSON array of detections one at a time, so
// memory does not grow with the size of the response.
type detectionDecoder struct {
	r     *recordReader
	index int  // of the next detection
	done  bool // the closing bracket was read
}

func newDetectionDecoder(body io.Reader) (*detectionDecoder, error) {
	r := newRecordReader(body, detectionNames)
	if err := r.open('[', "of detections"); err != nil {
		return nil, err
	}
	return &detectionDecoder{r: r}, nil
}

// next decodes the next detection into d. It returns io.EOF after the
// closing bracket, and an error naming the detection's index otherwise.
func (dd *detectionDecoder) next(d *detection) error {
	if dd.done {
		return io.EOF
	}
	*d = detection{}
	if err := dd.r.next(d, &d.issues, "detection", dd.index); !errors.Is(err, io.EOF) {
		dd.index++
		return err
	}
	dd.done = true
	if err := dd.r.expectEnd(); err != nil {
		return fmt.Errorf("after the closing bracket: %w", err)
	}
	return io.EOF
}
