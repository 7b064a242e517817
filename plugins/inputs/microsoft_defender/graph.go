package microsoft_defender

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/go-json-experiment/json/jsontext"
)

// graphVersion is what a Graph alert and incident version share: an id,
// its times, and what of it could not be decoded.
type graphVersion struct {
	ID                 string `json:"id"`
	CreatedDateTime    string `json:"createdDateTime"`
	LastUpdateDateTime string `json:"lastUpdateDateTime"`

	created, lastUpdate time.Time // parsed by validate
	issues              recordProblems
}

// validate parses the times; a version without an id cannot be told apart
// from others and is skipped.
func (v *graphVersion) validate() {
	if v.ID == "" {
		v.issues.skip = "it has no id"
		return
	}
	v.lastUpdate = v.issues.parseTime("lastUpdateDateTime", v.LastUpdateDateTime)
	v.created = v.issues.parseTime("createdDateTime", v.CreatedDateTime)
}

func (v *graphVersion) identity() string          { return v.ID + "@" + v.lastUpdate.Format(time.RFC3339Nano) }
func (v *graphVersion) cursorTime() time.Time     { return v.lastUpdate }
func (v *graphVersion) inWindow() bool            { return !v.lastUpdate.IsZero() }
func (v *graphVersion) problems() *recordProblems { return &v.issues }

// graphAlert is one version of a Graph security alert.
type graphAlert struct {
	graphVersion
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
	ResolvedDateTime      string          `json:"resolvedDateTime"`
	FirstActivityDateTime string          `json:"firstActivityDateTime"`
	LastActivityDateTime  string          `json:"lastActivityDateTime"`
	Evidence              json.RawMessage `json:"evidence"`

	device          deviceEvidence // derived by unmarshalEvidence, as are the next two
	evidenceCount   int
	evidenceLeftOut bool // the evidence is longer than a field may be
	includeEvidence bool
}

// deviceEvidence is what the mapping takes from the alert's first device evidence.
type deviceEvidence struct {
	Type          string `json:"@odata.type"`
	DeviceDNSName string `json:"deviceDnsName"`
	MdeDeviceID   string `json:"mdeDeviceId"`
	RbacGroupName string `json:"rbacGroupName"`
}

func (a *graphAlert) countKey() countKey {
	return countKey{
		severity:     strings.ToLower(sanitize(a.Severity, maxTagBytes)),
		category:     sanitize(a.Category, maxTagBytes),
		machineGroup: sanitize(a.device.RbacGroupName, maxTagBytes),
	}
}

// decodeGraphPage streams a page's alerts to handle until it returns false, and returns the next link.
func decodeGraphPage(body io.Reader, handle func(*graphAlert) bool) (string, error) {
	r := newRecordReader(body, graphAlertNames)
	return decodeGraphValue(r, "alert", func() *graphAlert {
		a := &graphAlert{}
		r.alert = a
		return a
	}, handle)
}

// decodeGraphValue streams the items of a page, {"value": [...], "@odata.nextLink": ...} in
// any order, each made by newItem, to handle until it returns false, and returns the link.
func decodeGraphValue[T record](r *recordReader, noun string, newItem func() T, handle func(T) bool) (string, error) {
	if err := r.open('{', "with a value array"); err != nil {
		return "", err
	}
	dec, next := r.dec, ""
	for dec.PeekKind() != '}' {
		name, err := dec.ReadToken()
		if err != nil {
			return "", r.explain(err)
		}
		switch key, k := name.String(), dec.PeekKind(); key {
		case "value":
			if k != '[' {
				if err := dec.SkipValue(); err != nil {
					return "", fmt.Errorf("value: %w", r.explain(err))
				}
				return "", fmt.Errorf("value is not an array: it is a JSON %s", kindName(k))
			}
			if _, err := dec.ReadToken(); err != nil {
				return "", r.explain(err)
			}
			// r.next explains its errors, and ends the array with io.EOF.
			for i := 0; err == nil; i++ {
				item := newItem()
				if err = r.next(item, noun, i); err == nil && !handle(item) {
					return "", nil // the rest of the page is left unread
				}
			}
			if !errors.Is(err, io.EOF) {
				return "", err
			}
			continue
		case "@odata.nextLink":
			if k != '"' && k != 'n' && k != 0 {
				return "", fmt.Errorf("@odata.nextLink: JSON %s where a string was expected", kindName(k))
			}
			var link jsontext.Token
			if link, err = dec.ReadToken(); link.Kind() == '"' {
				next = link.String()
			}
		default:
			err = dec.SkipValue()
		}
		if err != nil {
			return "", r.explain(err)
		}
	}
	if _, err := dec.ReadToken(); err != nil {
		return "", r.explain(err)
	}
	return next, r.expectEnd()
}
