package microsoft_defender

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
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

// validate parses the timestamps; a detection without LastProcessedTimeUtc
// cannot be placed in a window and is rejected.
func (d *detection) validate() error {
	var err error
	if d.LastProcessedTimeUtc == "" {
		return errors.New("no LastProcessedTimeUtc")
	}
	if d.lastProcessed, err = parseAPITime(d.LastProcessedTimeUtc); err != nil {
		return fmt.Errorf("field LastProcessedTimeUtc: %w", err)
	}
	if d.AlertTime != "" {
		if d.alertAt, err = parseAPITime(d.AlertTime); err != nil {
			return fmt.Errorf("field AlertTime: %w", err)
		}
	}
	return nil
}

// apiTimeLayouts are the forms the SIEM API and its documentation use; a
// value without a zone is UTC, as every SIEM API time is.
var apiTimeLayouts = []string{
	time.RFC3339Nano,
	"2006-01-02T15:04:05.999999999",
	"2006-01-02 15:04:05.999999999",
}

func parseAPITime(s string) (time.Time, error) {
	for _, layout := range apiTimeLayouts {
		if t, err := time.Parse(layout, s); err == nil {
			return t.UTC(), nil
		}
	}
	return time.Time{}, fmt.Errorf("%q is not an RFC 3339 timestamp", truncate(s, 64))
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
		return fmt.Errorf("%s is not an integer", truncate(string(b), 64))
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
		return fmt.Errorf("%s is not a boolean", truncate(string(b), 64))
	}
	o.value, o.set = v, true
	return nil
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
	return strings.ToValidUTF8(s[:n], "") + "..."
}

// bodyReader remembers how the body ended. The JSON decoder reads ahead
// and reports a lost connection, an oversized body or a cut-off answer as
// one more syntax error; the reason tells which, and so whether a retry can
// help.
type bodyReader struct {
	r   io.Reader
	err error // the first error of r, io.EOF included
}

func (b *bodyReader) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	if err != nil && b.err == nil {
		b.err = err
	}
	return n, err
}

// jsonDecoder decodes a body and explains its errors.
type jsonDecoder struct {
	*json.Decoder
	body *bodyReader
}

func newJSONDecoder(r io.Reader) *jsonDecoder {
	body := &bodyReader{r: r}
	return &jsonDecoder{Decoder: json.NewDecoder(body), body: body}
}

// explain turns a decoding error into what went wrong: the body's own read
// error, a truncated answer, or malformed JSON with its position.
func (d *jsonDecoder) explain(err error) error {
	if errors.Is(d.body.err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("%w at byte %d: the connection closed before the announced length", errTruncated, d.InputOffset())
	}
	if d.body.err != nil && !errors.Is(d.body.err, io.EOF) {
		return d.body.err
	}
	var syntaxErr *json.SyntaxError
	if errors.As(err, &syntaxErr) && d.body.err != nil && strings.Contains(syntaxErr.Error(), "unexpected end of JSON input") {
		return fmt.Errorf("%w at byte %d", errTruncated, d.InputOffset())
	}
	return describeJSONError(err, d.Decoder)
}

// detectionDecoder streams a JSON array of detections one at a time, so
// memory does not grow with the size of the response.
type detectionDecoder struct {
	dec   *jsonDecoder
	index int
}

func newDetectionDecoder(r io.Reader) (*detectionDecoder, error) {
	dec := newJSONDecoder(r)
	tok, err := dec.Token()
	if err != nil {
		return nil, fmt.Errorf("response is not a JSON array: %w", dec.explain(err))
	}
	if delim, ok := tok.(json.Delim); !ok || delim != '[' {
		return nil, fmt.Errorf("response is not a JSON array of detections: it starts with %s", describeToken(tok))
	}
	return &detectionDecoder{dec: dec}, nil
}

// next decodes the next detection into d. It returns io.EOF after the
// closing bracket, and an error naming the detection's index otherwise.
func (dd *detectionDecoder) next(d *detection) error {
	if !dd.dec.More() {
		if _, err := dd.dec.Token(); err != nil {
			return fmt.Errorf("after detection %d: %w", dd.index-1, dd.dec.explain(err))
		}
		return io.EOF
	}
	*d = detection{}
	i := dd.index
	dd.index++
	if err := dd.dec.Decode(d); err != nil {
		return fmt.Errorf("detection %d: %w", i, dd.dec.explain(err))
	}
	if err := d.validate(); err != nil {
		return fmt.Errorf("detection %d (FullId %q): %w", i, truncate(d.identity(), 128), err)
	}
	return nil
}

func describeJSONError(err error, dec *json.Decoder) error {
	var typeErr *json.UnmarshalTypeError
	var syntaxErr *json.SyntaxError
	switch {
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return fmt.Errorf("%w at byte %d", errTruncated, dec.InputOffset())
	case errors.As(err, &typeErr) && typeErr.Field == "":
		return fmt.Errorf("a JSON %s where a detection object was expected", typeErr.Value)
	case errors.As(err, &typeErr):
		return fmt.Errorf("field %s: JSON %s where a %s was expected (byte %d of the detection)", typeErr.Field, typeErr.Value, typeErr.Type, typeErr.Offset)
	case errors.As(err, &syntaxErr):
		return fmt.Errorf("invalid JSON at byte %d: %s", syntaxErr.Offset, strings.TrimPrefix(err.Error(), "json: "))
	}
	return err
}

func describeToken(tok json.Token) string {
	switch v := tok.(type) {
	case json.Delim:
		return fmt.Sprintf("%q", string(v))
	case string:
		return fmt.Sprintf("the string %q", truncate(v, 64))
	case nil:
		return "null"
	default:
		return fmt.Sprintf("%v", v)
	}
}
