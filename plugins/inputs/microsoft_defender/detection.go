package microsoft_defender

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math"
	"reflect"
	"strconv"
	"time"
)

// detection is one SIEM API detection, of any of the three payload
// generations (both spellings of IoaDefinitionId are read).
type detection struct {
	// Emitted as the string fields their metric tags name, in this order.
	AlertID                  string `json:"AlertId" metric:"alert_id"`
	FullID                   string `json:"FullId" metric:"full_id"`
	AlertTitle               string `json:"AlertTitle" metric:"alert_title"`
	ComputerDNSName          string `json:"ComputerDnsName" metric:"computer_dns_name"`
	MachineName              string `json:"MachineName" metric:"machine_name"`
	MachineDomain            string `json:"MachineDomain" metric:"machine_domain"`
	Description              string `json:"Description" metric:"description"`
	Actor                    string `json:"Actor" metric:"actor"`
	IocName                  string `json:"IocName" metric:"ioc_name"`
	IocValue                 string `json:"IocValue" metric:"ioc_value"`
	CreatorIocName           string `json:"CreatorIocName" metric:"creator_ioc_name"`
	CreatorIocValue          string `json:"CreatorIocValue" metric:"creator_ioc_value"`
	IocUniqueID              string `json:"IocUniqueId" metric:"ioc_unique_id"`
	IoaDefinitionID          string `json:"IoaDefinitionId" metric:"ioa_definition_id"`
	Sha1                     string `json:"Sha1" metric:"sha1"`
	Sha256                   string `json:"Sha256" metric:"sha256"`
	Md5                      string `json:"Md5" metric:"md5"`
	FileHash                 string `json:"FileHash" metric:"file_hash"`
	FileName                 string `json:"FileName" metric:"file_name"`
	FilePath                 string `json:"FilePath" metric:"file_path"`
	CommandLine              string `json:"CommandLine" metric:"command_line"`
	IPAddress                string `json:"IpAddress" metric:"ip_address"`
	URL                      string `json:"Url" metric:"url"`
	UserName                 string `json:"UserName" metric:"user_name"`
	UserDomain               string `json:"UserDomain" metric:"user_domain"`
	LogOnUsers               string `json:"LogOnUsers" metric:"log_on_users"`
	InternalIPv4List         string `json:"InternalIPv4List" metric:"internal_ipv4_list"`
	InternalIPv6List         string `json:"InternalIPv6List" metric:"internal_ipv6_list"`
	DeviceID                 string `json:"DeviceID" metric:"device_id"`
	ThreatCategory           string `json:"ThreatCategory" metric:"threat_category"`
	ThreatFamily             string `json:"ThreatFamily" metric:"threat_family"`
	ThreatName               string `json:"ThreatName" metric:"threat_name"`
	RemediationAction        string `json:"RemediationAction" metric:"remediation_action"`
	ExternalID               string `json:"ExternalId" metric:"external_id"`
	DeviceCreatedMachineTags string `json:"DeviceCreatedMachineTags" metric:"device_created_machine_tags"`
	CloudCreatedMachineTags  string `json:"CloudCreatedMachineTags" metric:"cloud_created_machine_tags"`
	LinkToWDATP              string `json:"LinkToWDATP" metric:"link_to_wdatp"`
	LinkToMTP                string `json:"LinkToMTP" metric:"link_to_mtp"`
	IncidentLinkToWDATP      string `json:"IncidentLinkToWDATP" metric:"incident_link_to_wdatp"`
	IncidentLinkToMTP        string `json:"IncidentLinkToMTP" metric:"incident_link_to_mtp"`
	// Tags, times and typed fields, which alertMetric maps by name.
	AlertTime                 string          `json:"AlertTime"`
	Category                  string          `json:"Category"`
	Severity                  string          `json:"Severity"`
	AlertPart                 optional[int64] `json:"AlertPart"`
	LastProcessedTimeUtc      string          `json:"LastProcessedTimeUtc"`
	RemediationIsSuccess      optional[bool]  `json:"RemediationIsSuccess"`
	Source                    string          `json:"Source"`
	WasExecutingWhileDetected optional[bool]  `json:"WasExecutingWhileDetected"`
	MachineGroup              string          `json:"MachineGroup"`
	ReportID                  optional[int64] `json:"ReportID"`
	IoaDefinitiondID          string          `json:"IoaDefinitiondId"` // the 2017 spelling, for IoaDefinitionId when absent

	alertAt, lastProcessed time.Time // parsed by validate
	cursorAt               time.Time // for the cursor, when lastProcessed lies outside the window asked (placeIn)
	issues                 recordProblems
}

// identity is the detection's deduplication key: FullId, or AlertId and
// IocUniqueId when FullId is absent (they are equal in every known sample).
func (d *detection) identity() string {
	switch {
	case d.FullID != "":
		return d.FullID
	case d.AlertID != "" || d.IocUniqueID != "":
		return d.AlertID + ":" + d.IocUniqueID
	case d.lastProcessed.IsZero():
		return ""
	}
	// Without an id, its content tells a detection apart, so that a repeat is dropped.
	h := sha256.New()
	fields := reflect.ValueOf(d).Elem()
	for _, f := range alertStringFields {
		fmt.Fprintf(h, "%q,", fields.FieldByIndex(f.index).String())
	}
	fmt.Fprintf(h, "%q,%q,%v", d.AlertTime, d.LastProcessedTimeUtc, d.AlertPart)
	return "content:" + hex.EncodeToString(h.Sum(nil)[:16])
}

// validate reads the old spelling of IoaDefinitionId and parses the times;
// a detection neither placed in time nor told apart is skipped.
func (d *detection) validate() {
	if d.IoaDefinitionID == "" {
		d.IoaDefinitionID = d.IoaDefinitiondID
	}
	d.lastProcessed = d.issues.parseTime("LastProcessedTimeUtc", d.LastProcessedTimeUtc)
	d.alertAt = d.issues.parseTime("AlertTime", d.AlertTime)
	if d.lastProcessed.IsZero() && d.identity() == "" {
		d.issues.skip = "it has neither a valid LastProcessedTimeUtc nor a FullId, AlertId or IocUniqueId"
	}
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

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return cutAtRune(s, n) + "..."
}

// detectionDecoder streams a JSON array of detections one at a time.
type detectionDecoder struct {
	r     *recordReader
	index int // of the next detection; -1 after the closing bracket
}

func newDetectionDecoder(body io.Reader) (*detectionDecoder, error) {
	r := newRecordReader(body, detectionNames)
	if err := r.open('[', "of detections"); err != nil {
		return nil, err
	}
	return &detectionDecoder{r: r}, nil
}

// next decodes the next detection into d; io.EOF after the closing bracket.
func (dd *detectionDecoder) next(d *detection) error {
	if dd.index < 0 {
		return io.EOF
	}
	*d = detection{}
	if err := dd.r.next(d, "detection", dd.index); !errors.Is(err, io.EOF) {
		dd.index++
		return err
	}
	dd.index = -1
	if err := dd.r.expectEnd(); err != nil {
		return fmt.Errorf("after the closing bracket: %w", err)
	}
	return io.EOF
}
