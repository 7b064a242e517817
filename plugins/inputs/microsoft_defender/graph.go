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
	r := newRecordReader(body, graphAlertNames)
	if err := r.open('{', "with a value array"); err != nil {
		return graphPageMeta{}, err
	}
	meta, err := decodeGraphMembers(r, handle)
	if errors.Is(err, errHandlerStopped) {
		return graphPageMeta{}, nil // the rest of the page is left unread
	}
	if err == nil {
		err = r.expectEnd()
	}
	if err != nil {
		return graphPageMeta{}, err
	}
	return meta, nil
}

// decodeGraphMembers reads the members of the page object, after its
// opening brace.
func decodeGraphMembers(r *recordReader, handle func(*graphAlert) bool) (graphPageMeta, error) {
	dec := r.dec
	var meta graphPageMeta
	for dec.PeekKind() != '}' {
		name, err := dec.ReadToken()
		if err != nil {
			return meta, r.explain(err)
		}
		switch name.String() {
		case "value":
			if err := decodeGraphAlerts(r, handle); err != nil {
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
					return meta, r.explain(err)
				}
				return meta, fmt.Errorf("@odata.nextLink: JSON %s where a string was expected", kindName(k))
			}
		case "@odata.count":
			// Anything but a non-negative integer counts as no count: it
			// only tells whether a chain of pages may be trusted, and
			// without one the plugin reads in parts that need no trust.
			var raw jsontext.Value
			raw, err = dec.ReadValue()
			if n, err := strconv.ParseInt(string(raw), 10, 64); err == nil && n >= 0 {
				meta.count, meta.hasCount = n, true
			}
		default:
			err = dec.SkipValue()
		}
		if err != nil {
			return meta, r.explain(err)
		}
	}
	if _, err := dec.ReadToken(); err != nil {
		return meta, r.explain(err)
	}
	return meta, nil
}

// errHandlerStopped ends the decoding of a page whose handler returned
// false.
var errHandlerStopped = errors.New("the handler stopped")

// decodeGraphAlerts streams the value array. It returns errHandlerStopped
// when handle returns false, and errors that say what went wrong and where
// otherwise.
func decodeGraphAlerts(r *recordReader, handle func(*graphAlert) bool) error {
	dec := r.dec
	if k := dec.PeekKind(); k != '[' {
		if err := dec.SkipValue(); err != nil {
			return fmt.Errorf("value: %w", r.explain(err))
		}
		return fmt.Errorf("value is not an array: it is a JSON %s", kindName(k))
	}
	if _, err := dec.ReadToken(); err != nil {
		return r.explain(err)
	}
	for i := 0; ; i++ {
		a := &graphAlert{}
		r.alert = a
		if err := r.next(a, &a.issues, "alert", i); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		if !handle(a) {
			return errHandlerStopped
		}
	}
}
