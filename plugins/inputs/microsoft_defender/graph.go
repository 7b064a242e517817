package microsoft_defender

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/go-json-experiment/json/jsontext"
)

// graphAlert is one version of a Graph security alert.
type graphAlert struct {
	ID                    string          `json:"id"`
	ProviderAlertID       string          `json:"providerAlertId"`
	IncidentID            string          `json:"incidentId"`
	TenantID              string          `json:"tenantId"`
	Status                string          `json:"status"`
	Severity              string          `json:"severity"`
	Classification        string          `json:"classification"`
	Determination         string          `json:"determination"`
	ServiceSource         string          `json:"serviceSource"`
	DetectionSource       string          `json:"detectionSource"`
	DetectorID            string          `json:"detectorId"`
	Category              string          `json:"category"`
	Title                 string          `json:"title"`
	Description           string          `json:"description"`
	RecommendedActions    string          `json:"recommendedActions"`
	AlertWebURL           string          `json:"alertWebUrl"`
	IncidentWebURL        string          `json:"incidentWebUrl"`
	ActorDisplayName      string          `json:"actorDisplayName"`
	ThreatDisplayName     string          `json:"threatDisplayName"`
	ThreatFamilyName      string          `json:"threatFamilyName"`
	MitreTechniques       []string        `json:"mitreTechniques"`
	AssignedTo            string          `json:"assignedTo"`
	CreatedDateTime       string          `json:"createdDateTime"`
	LastUpdateDateTime    string          `json:"lastUpdateDateTime"`
	ResolvedDateTime      string          `json:"resolvedDateTime"`
	FirstActivityDateTime string          `json:"firstActivityDateTime"`
	LastActivityDateTime  string          `json:"lastActivityDateTime"`
	Evidence              json.RawMessage `json:"evidence"`

	// Derived by validate.
	created, lastUpdate time.Time
	device              deviceEvidence
	evidenceCount       int
	// evidenceLeftOut: the evidence is longer than a field may be.
	evidenceLeftOut bool
	includeEvidence bool
	issues          recordProblems
}

// deviceEvidence holds what the mapping takes from the alert's first
// device evidence.
type deviceEvidence struct {
	Type          string `json:"@odata.type"`
	DeviceDNSName string `json:"deviceDnsName"`
	MdeDeviceID   string `json:"mdeDeviceId"`
	RbacGroupName string `json:"rbacGroupName"`
}

// validate parses the timestamps and the evidence. Values that do not fit
// are left out; an alert without an id cannot be told apart from others and
// is skipped.
func (a *graphAlert) validate() {
	if a.ID == "" {
		a.issues.skip = "it has no id"
		return
	}
	a.lastUpdate = a.issues.parseTime("lastUpdateDateTime", a.LastUpdateDateTime)
	a.created = a.issues.parseTime("createdDateTime", a.CreatedDateTime)
}

func (a *graphAlert) identity() string {
	return a.ID + "@" + a.lastUpdate.Format(time.RFC3339Nano)
}

func (a *graphAlert) cursorTime() time.Time {
	return a.lastUpdate
}

func (a *graphAlert) inWindow() bool {
	return !a.lastUpdate.IsZero()
}

func (a *graphAlert) problems() *recordProblems {
	return &a.issues
}

func (a *graphAlert) countKey() countKey {
	return countKey{
		severity:     strings.ToLower(sanitize(a.Severity, maxTagBytes)),
		category:     sanitize(a.Category, maxTagBytes),
		machineGroup: sanitize(a.device.RbacGroupName, maxTagBytes),
	}
}

// graphPageMeta is what a page says about the chain it belongs to.
type graphPageMeta struct {
	next     string // @odata.nextLink
	count    int64  // @odata.count, when hasCount
	hasCount bool
}

// decodeGraphPage streams the alerts of one page, {"value": [...],
// "@odata.nextLink": ..., "@odata.count": ...} in any key order, to handle
// until it returns false, and returns the next page's link and the count.
func decodeGraphPage(body io.Reader, handle func(*graphAlert) bool) (graphPageMeta, error) {
	// An alert's evidence may hold strings of any length, which the
	// plugin never emits: they are cut (maxStringBytes).
	rd := newRecordDecoder(body, true)
	dec := rd.dec
	switch k := dec.PeekKind(); k {
	case '{':
	case 0:
		_, err := dec.ReadToken()
		return graphPageMeta{}, fmt.Errorf("response is not a JSON object: %w", rd.explain(err))
	default:
		start, err := rd.describeStart(k)
		if err != nil {
			return graphPageMeta{}, fmt.Errorf("response is not a JSON object: %w", rd.explain(err))
		}
		return graphPageMeta{}, fmt.Errorf("response is not a JSON object with a value array: it starts with %s", start)
	}
	meta, err := decodeGraphMembers(rd, handle)
	if errors.Is(err, errHandlerStopped) {
		return graphPageMeta{}, nil // the rest of the page is left unread
	}
	if err != nil {
		return graphPageMeta{}, err
	}
	if err := rd.expectEnd(); err != nil {
		return graphPageMeta{}, err
	}
	return meta, nil
}

// decodeGraphMembers reads the members of the page object, whose opening
// brace the decoder peeked at.
func decodeGraphMembers(rd *recordDecoder, handle func(*graphAlert) bool) (graphPageMeta, error) {
	dec := rd.dec
	var meta graphPageMeta
	if _, err := dec.ReadToken(); err != nil {
		return meta, rd.explain(err)
	}
	for dec.PeekKind() != '}' {
		name, err := dec.ReadToken()
		if err != nil {
			return meta, rd.explain(err)
		}
		switch name.String() {
		case "value":
			if err := decodeGraphAlerts(rd, handle); err != nil {
				return meta, err
			}
		case "@odata.nextLink":
			switch k := dec.PeekKind(); k {
			case '"':
				var link jsontext.Token
				link, err = dec.ReadToken()
				meta.next = link.String()
			case 'n', 0:
				_, err = dec.ReadToken()
			default:
				if err := dec.SkipValue(); err != nil {
					return meta, rd.explain(err)
				}
				return meta, fmt.Errorf("@odata.nextLink: JSON %s where a string was expected", kindName(k))
			}
		case "@odata.count":
			err = decodeODataCount(dec, &meta)
		default:
			err = dec.SkipValue()
		}
		if err != nil {
			return meta, rd.explain(err)
		}
	}
	if _, err := dec.ReadToken(); err != nil {
		return meta, rd.explain(err)
	}
	return meta, nil
}

// decodeODataCount reads @odata.count. Anything but a non-negative integer
// counts as no count: the count only tells whether a chain of pages may be
// trusted, and without one the plugin reads in parts that need no trust.
func decodeODataCount(dec *jsontext.Decoder, meta *graphPageMeta) error {
	raw, err := dec.ReadValue()
	if err != nil {
		return err
	}
	if n, err := strconv.ParseInt(string(raw), 10, 64); err == nil && n >= 0 {
		meta.count, meta.hasCount = n, true
	}
	return nil
}

// errHandlerStopped ends the decoding of a page whose handler returned
// false.
var errHandlerStopped = errors.New("the handler stopped")

// decodeGraphAlerts streams the value array. It returns errHandlerStopped
// when handle returns false, and errors that say what went wrong and where
// otherwise.
func decodeGraphAlerts(rd *recordDecoder, handle func(*graphAlert) bool) error {
	dec := rd.dec
	if k := dec.PeekKind(); k != '[' {
		if err := dec.SkipValue(); err != nil {
			return fmt.Errorf("value: %w", rd.explain(err))
		}
		return fmt.Errorf("value is not an array: it is a JSON %s", kindName(k))
	}
	if _, err := dec.ReadToken(); err != nil {
		return rd.explain(err)
	}
	for i := 0; ; i++ {
		k := dec.PeekKind()
		if k == ']' || k == 0 {
			if _, err := dec.ReadToken(); err != nil {
				return rd.explain(err)
			}
			return nil
		}
		var a graphAlert
		start := rd.valueStart()
		a.issues.noun, a.issues.index, a.issues.offset = "alert", i, rd.body.inBody(start)
		if k == '{' || k == 'n' {
			rd.alert = &a
			problems, err := rd.object(&a, start, graphAlertNames)
			rd.alert = nil
			if err != nil {
				return rd.recordError(err, "alert %d", i)
			}
			a.issues.invalid = problems
			a.validate()
		} else {
			if err := dec.SkipValue(); err != nil {
				return rd.recordError(err, "alert %d", i)
			}
			a.issues.skip = (&notObjectError{kind: kindName(k), noun: "alert"}).Error()
		}
		if !handle(&a) {
			return errHandlerStopped
		}
	}
}
