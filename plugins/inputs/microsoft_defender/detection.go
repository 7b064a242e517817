package microsoft_defender

import (
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strings"
	"time"

	"github.com/influxdata/telegraf"
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

// detectionNames are the names in a detection's json tags.
var detectionNames = taggedFields(reflect.TypeFor[detection](), "json")

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

// cursorTime is LastProcessedTimeUtc, or the window's end (placeIn).
func (d *detection) cursorTime() time.Time {
	if !d.cursorAt.IsZero() {
		return d.cursorAt
	}
	return d.lastProcessed
}

func (d *detection) inWindow() bool            { return d.cursorAt.IsZero() }
func (d *detection) problems() *recordProblems { return &d.issues }

// placeIn keeps the cursor inside the window [since, until] asked: a time outside it, or none, is not
// trusted; until keeps it remembered long enough.
func (d *detection) placeIn(since, until time.Time) {
	if d.lastProcessed.IsZero() || d.lastProcessed.Before(since) || d.lastProcessed.After(until) {
		d.cursorAt = until
	}
}

// metric maps a detection to defender_alert at AlertTime, else LastProcessedTimeUtc, and names the fields it cut.
func (d *detection) metric() (telegraf.Metric, []string) {
	ts := cmp.Or(d.alertAt, d.lastProcessed, d.cursorAt)
	b := newMetricBuilder(measurementAlert, eventTime(ts, d.identity()))
	b.countTags(d.countKey())
	b.tag("detection_source", sanitize(d.Source, maxTagBytes))
	var cut []string
	fields := reflect.ValueOf(d).Elem()
	for _, f := range alertStringFields {
		cut = b.cutField(f.name, fields.FieldByIndex(f.index).String(), cut)
	}
	addOptional(b, "alert_part", d.AlertPart)
	addOptional(b, "report_id", d.ReportID)
	addOptional(b, "remediation_is_success", d.RemediationIsSuccess)
	addOptional(b, "was_executing_while_detected", d.WasExecutingWhileDetected)
	b.stringField("last_processed_time_utc", formatTimeAs(d.lastProcessed, d.LastProcessedTimeUtc))
	b.stringField("alert_time", formatTimeAs(d.alertAt, d.AlertTime))
	return b.metric(), cut
}

// alertStringFields are the detection's fields emitted as the tag metric names.
var alertStringFields = taggedFields(reflect.TypeFor[detection](), "metric")

// countKey returns the tags defender_alert and defender_alert_count share.
func (d *detection) countKey() countKey {
	return countKey{
		severity:     lowerSeverity(sanitize(d.Severity, maxTagBytes)),
		category:     sanitize(d.Category, maxTagBytes),
		machineGroup: sanitize(d.MachineGroup, maxTagBytes),
	}
}

// lowerSeverity is strings.ToLower without allocating for the SIEM API's severities.
func lowerSeverity(s string) string {
	if lower, ok := siemSeverities[s]; ok {
		return lower
	}
	return strings.ToLower(s)
}

var siemSeverities = map[string]string{
	"Informational": "informational", "Low": "low", "Medium": "medium", "High": "high", "UnSpecified": "unspecified",
}
