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
	"unicode"
	"unicode/utf8"

	"github.com/sectelemetry/telegraf-defender/plugins/inputs/microsoft_defender/jsonstream"
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

// detectionField is where the value of one key of a detection goes: a
// string field, or a field that parses its raw JSON itself.
type detectionField struct {
	name      string // the key as the API spells it
	str       func(*detection) *string
	unmarshal func(d *detection, raw []byte) error
}

// detectionFields maps every key of detection's json tags to its field
// (TestDetectionFieldsMatchTags keeps the two in step).
var detectionFields = map[string]detectionField{
	"AlertTime":                 {str: func(d *detection) *string { return &d.AlertTime }},
	"ComputerDnsName":           {str: func(d *detection) *string { return &d.ComputerDNSName }},
	"AlertTitle":                {str: func(d *detection) *string { return &d.AlertTitle }},
	"Category":                  {str: func(d *detection) *string { return &d.Category }},
	"Severity":                  {str: func(d *detection) *string { return &d.Severity }},
	"AlertId":                   {str: func(d *detection) *string { return &d.AlertID }},
	"Actor":                     {str: func(d *detection) *string { return &d.Actor }},
	"LinkToWDATP":               {str: func(d *detection) *string { return &d.LinkToWDATP }},
	"IocName":                   {str: func(d *detection) *string { return &d.IocName }},
	"IocValue":                  {str: func(d *detection) *string { return &d.IocValue }},
	"CreatorIocName":            {str: func(d *detection) *string { return &d.CreatorIocName }},
	"CreatorIocValue":           {str: func(d *detection) *string { return &d.CreatorIocValue }},
	"Sha1":                      {str: func(d *detection) *string { return &d.Sha1 }},
	"FileName":                  {str: func(d *detection) *string { return &d.FileName }},
	"FilePath":                  {str: func(d *detection) *string { return &d.FilePath }},
	"IpAddress":                 {str: func(d *detection) *string { return &d.IPAddress }},
	"Url":                       {str: func(d *detection) *string { return &d.URL }},
	"IoaDefinitionId":           {str: func(d *detection) *string { return &d.IoaDefinitionID }},
	"IoaDefinitiondId":          {str: func(d *detection) *string { return &d.IoaDefinitiondID }},
	"UserName":                  {str: func(d *detection) *string { return &d.UserName }},
	"AlertPart":                 {unmarshal: func(d *detection, b []byte) error { return d.AlertPart.UnmarshalJSON(b) }},
	"FullId":                    {str: func(d *detection) *string { return &d.FullID }},
	"LastProcessedTimeUtc":      {str: func(d *detection) *string { return &d.LastProcessedTimeUtc }},
	"ThreatCategory":            {str: func(d *detection) *string { return &d.ThreatCategory }},
	"ThreatFamily":              {str: func(d *detection) *string { return &d.ThreatFamily }},
	"ThreatName":                {str: func(d *detection) *string { return &d.ThreatName }},
	"RemediationAction":         {str: func(d *detection) *string { return &d.RemediationAction }},
	"RemediationIsSuccess":      {unmarshal: func(d *detection, b []byte) error { return d.RemediationIsSuccess.UnmarshalJSON(b) }},
	"Source":                    {str: func(d *detection) *string { return &d.Source }},
	"Md5":                       {str: func(d *detection) *string { return &d.Md5 }},
	"Sha256":                    {str: func(d *detection) *string { return &d.Sha256 }},
	"WasExecutingWhileDetected": {unmarshal: func(d *detection, b []byte) error { return d.WasExecutingWhileDetected.UnmarshalJSON(b) }},
	"UserDomain":                {str: func(d *detection) *string { return &d.UserDomain }},
	"LogOnUsers":                {str: func(d *detection) *string { return &d.LogOnUsers }},
	"MachineDomain":             {str: func(d *detection) *string { return &d.MachineDomain }},
	"MachineName":               {str: func(d *detection) *string { return &d.MachineName }},
	"InternalIPv4List":          {str: func(d *detection) *string { return &d.InternalIPv4List }},
	"InternalIPv6List":          {str: func(d *detection) *string { return &d.InternalIPv6List }},
	"FileHash":                  {str: func(d *detection) *string { return &d.FileHash }},
	"DeviceID":                  {str: func(d *detection) *string { return &d.DeviceID }},
	"MachineGroup":              {str: func(d *detection) *string { return &d.MachineGroup }},
	"Description":               {str: func(d *detection) *string { return &d.Description }},
	"DeviceCreatedMachineTags":  {str: func(d *detection) *string { return &d.DeviceCreatedMachineTags }},
	"CloudCreatedMachineTags":   {str: func(d *detection) *string { return &d.CloudCreatedMachineTags }},
	"CommandLine":               {str: func(d *detection) *string { return &d.CommandLine }},
	"IncidentLinkToWDATP":       {str: func(d *detection) *string { return &d.IncidentLinkToWDATP }},
	"ReportID":                  {unmarshal: func(d *detection, b []byte) error { return d.ReportID.UnmarshalJSON(b) }},
	"LinkToMTP":                 {str: func(d *detection) *string { return &d.LinkToMTP }},
	"IncidentLinkToMTP":         {str: func(d *detection) *string { return &d.IncidentLinkToMTP }},
	"ExternalId":                {str: func(d *detection) *string { return &d.ExternalID }},
	"IocUniqueId":               {str: func(d *detection) *string { return &d.IocUniqueID }},
}

// detectionFieldsFolded finds the keys that match only case-insensitively,
// folded as encoding/json folds them.
var detectionFieldsFolded = func() map[string]detectionField {
	folded := make(map[string]detectionField, len(detectionFields))
	for key, f := range detectionFields {
		f.name = key
		detectionFields[key] = f
		folded[string(foldName([]byte(key)))] = f
	}
	return folded
}()

// smallestFold walks r's fold set, which unicode.SimpleFold visits in
// increasing order before wrapping around to its smallest rune.
func smallestFold(r rune) rune {
	for {
		next := unicode.SimpleFold(r)
		if next <= r {
			return next
		}
		r = next
	}
}

func lookupDetectionField(key []byte) detectionField {
	if f, ok := detectionFields[string(key)]; ok {
		return f
	}
	return detectionFieldsFolded[string(foldName(key))]
}

// foldName folds a key as encoding/json does to match keys without regard
// to case: ASCII letters to upper case, other runes to the smallest rune of
// their fold set.
func foldName(key []byte) []byte {
	folded := make([]byte, 0, len(key))
	for i := 0; i < len(key); {
		if c := key[i]; c < utf8.RuneSelf {
			if 'a' <= c && c <= 'z' {
				c -= 'a' - 'A'
			}
			folded = append(folded, c)
			i++
			continue
		}
		r, n := utf8.DecodeRune(key[i:])
		folded = utf8.AppendRune(folded, smallestFold(r))
		i += n
	}
	return folded
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
	return cutAtRune(s, n) + "..."
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
// memory does not grow with the size of the response. It maps keys to
// fields itself, without reflection, and accepts what encoding/json would:
// keys match exactly or else case-insensitively, null leaves a field as it
// is, and the last of repeated keys wins.
type detectionDecoder struct {
	r     *jsonstream.Reader
	index int  // of the next detection
	done  bool // the closing bracket was read

	// Reused from detection to detection.
	key     []byte
	raw     []byte
	values  []byte         // the unescaped string values, back to back
	assigns []stringAssign // which field each of values goes to
}

// stringAssign is a string field and where its value lies in values.
type stringAssign struct {
	field      *string
	start, end int
}

// readBufferSize is what the decoder reads from the connection at a time.
const readBufferSize = 64 * 1024

func newDetectionDecoder(body io.Reader) (*detectionDecoder, error) {
	r := jsonstream.NewReader(body, readBufferSize)
	c, err := r.NextByte()
	if err != nil {
		return nil, fmt.Errorf("response is not a JSON array: %w", explainRead(err, r))
	}
	if c == '[' {
		return &detectionDecoder{r: r}, nil
	}
	if c == '"' {
		s, err := r.AppendString(nil)
		if err != nil {
			return nil, fmt.Errorf("response is not a JSON array: %w", explainRead(err, r))
		}
		return nil, fmt.Errorf("response is not a JSON array of detections: it starts with the string %q", truncate(string(s), 64))
	}
	if c == '{' {
		return nil, errors.New(`response is not a JSON array of detections: it starts with "{"`)
	}
	raw, err := r.AppendRaw(nil, c, 0)
	if err != nil {
		return nil, fmt.Errorf("response is not a JSON array: %w", explainRead(err, r))
	}
	return nil, fmt.Errorf("response is not a JSON array of detections: it starts with %s", truncate(string(raw), 64))
}

// next decodes the next detection into d. It returns io.EOF after the
// closing bracket, and an error naming the detection's index otherwise.
func (dd *detectionDecoder) next(d *detection) error {
	if dd.done {
		return io.EOF
	}
	c, err := dd.r.NextByte()
	if err != nil {
		return dd.afterError(explainRead(err, dd.r))
	}
	if c == ']' {
		return dd.end()
	}
	if dd.index > 0 {
		switch c {
		case ',':
			if c, err = dd.r.NextByte(); err != nil {
				return fmt.Errorf("detection %d: %w", dd.index, explainRead(err, dd.r))
			}
		default:
			return dd.afterError(explainRead(dd.r.ExpectedArraySeparator(c), dd.r))
		}
	}
	i := dd.index
	dd.index++
	*d = detection{}
	if err := dd.decode(c, d); err != nil {
		return fmt.Errorf("detection %d: %w", i, explainRead(err, dd.r))
	}
	if err := d.validate(); err != nil {
		return fmt.Errorf("detection %d (FullId %q): %w", i, truncate(d.identity(), 128), err)
	}
	return nil
}

// end checks that nothing but whitespace follows the closing bracket: more
// would be a second answer or garbage, and either means this one cannot be
// trusted whole.
func (dd *detectionDecoder) end() error {
	dd.done = true
	if err := dd.r.ExpectEnd(); err != nil {
		return fmt.Errorf("after the closing bracket: %w", explainRead(err, dd.r))
	}
	return io.EOF
}

// afterError places an error found between detections.
func (dd *detectionDecoder) afterError(err error) error {
	if dd.index == 0 {
		return fmt.Errorf("after the opening bracket: %w", err)
	}
	return fmt.Errorf("after detection %d: %w", dd.index-1, err)
}

// decode reads one element of the array, whose first byte is c, into d.
// As with encoding/json, malformed JSON anywhere in the element is reported
// before a value of the wrong type.
func (dd *detectionDecoder) decode(c byte, d *detection) error {
	switch c {
	case '{':
	case 'n': // null decodes to nothing, as in encoding/json
		return dd.r.Skip(c, 0)
	default:
		if err := dd.r.Skip(c, 0); err != nil {
			return err
		}
		return fmt.Errorf("a JSON %s where a detection object was expected", jsonstream.Kind(c))
	}
	start := dd.r.Offset() - 1
	dd.values, dd.assigns = dd.values[:0], dd.assigns[:0]
	var valueErr, typeErr error
	c, err := dd.r.NextByte()
	if err != nil {
		return err
	}
	if c != '}' {
		for {
			if c != '"' {
				return dd.r.ExpectedKey(c)
			}
			if dd.key, err = dd.r.AppendString(dd.key[:0]); err != nil {
				return err
			}
			if c, err = dd.r.NextByte(); err != nil {
				return err
			}
			if c != ':' {
				return dd.r.ExpectedColon(c)
			}
			if c, err = dd.r.NextByte(); err != nil {
				return err
			}
			field := lookupDetectionField(dd.key)
			switch {
			case field.name == "" || c == 'n' && field.str != nil:
				err = dd.r.Skip(c, 1)
			case field.str != nil && c == '"':
				begin := len(dd.values)
				dd.values, err = dd.r.AppendString(dd.values)
				dd.assigns = append(dd.assigns, stringAssign{field: field.str(d), start: begin, end: len(dd.values)})
			case field.str != nil:
				err = dd.r.Skip(c, 1)
				if typeErr == nil {
					typeErr = fmt.Errorf("field %s: JSON %s where a string was expected (byte %d of the detection)",
						field.name, jsonstream.Kind(c), dd.r.Offset()-start)
				}
			default:
				dd.raw, err = dd.r.AppendRaw(dd.raw[:0], c, 1)
				if err == nil && valueErr == nil {
					valueErr = field.unmarshal(d, dd.raw)
				}
			}
			if err != nil {
				return err
			}
			if c, err = dd.r.NextByte(); err != nil {
				return err
			}
			if c == '}' {
				break
			}
			if c != ',' {
				return dd.r.ExpectedObjectSeparator(c)
			}
			if c, err = dd.r.NextByte(); err != nil {
				return err
			}
		}
	}
	// One allocation holds every string of the detection.
	values := string(dd.values)
	for _, a := range dd.assigns {
		*a.field = values[a.start:a.end]
	}
	if valueErr != nil {
		return valueErr
	}
	return typeErr
}

// explainRead turns an error of the JSON reader into what went wrong: the
// body's own read error, a truncated answer, or malformed JSON with its
// position.
func explainRead(err error, r *jsonstream.Reader) error {
	var syntaxErr *jsonstream.SyntaxError
	switch {
	case errors.Is(err, io.ErrUnexpectedEOF):
		return fmt.Errorf("%w at byte %d: the connection closed before the announced length", errTruncated, r.Offset())
	case errors.Is(err, jsonstream.ErrEndOfInput):
		return fmt.Errorf("%w at byte %d", errTruncated, r.Offset())
	case errors.As(err, &syntaxErr):
		return fmt.Errorf("invalid JSON at byte %d: %w", syntaxErr.Offset, err)
	}
	return err
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
