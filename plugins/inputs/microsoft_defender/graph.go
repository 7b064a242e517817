package microsoft_defender

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/go-json-experiment/json/jsontext"
)

// graphCloud is one national cloud of Microsoft Graph: where its API and
// its sign-in are.
type graphCloud struct {
	graphHost string
	loginHost string
}

// graphRegions are the clouds `region` selects for api = "graph".
var graphRegions = map[string]graphCloud{
	"global":   {"graph.microsoft.com", "login.microsoftonline.com"},
	"gcc":      {"graph.microsoft.com", "login.microsoftonline.com"},
	"gcc-high": {"graph.microsoft.us", "login.microsoftonline.us"},
	"dod":      {"dod-graph.microsoft.us", "login.microsoftonline.us"},
	"china":    {"microsoftgraph.chinacloudapi.cn", "login.partner.microsoftonline.cn"},
}

const graphAlertsPath = "/v1.0/security/alerts_v2"

// graphBackend pulls alerts from Microsoft Graph security alerts_v2.
type graphBackend struct {
	endpointURL     *url.URL
	pageSize        int
	serviceSources  []string
	severities      []string
	machineGroups   map[string]bool
	includeEvidence bool
	// maxAlertsPerGather bounds a part: a poll that stops inside one reads
	// it again from its start.
	maxAlertsPerGather int
	// learned is what the service showed of its paging, for the life of
	// the process.
	learned graphLearned
}

// graphOptions are the settings of the plugin that shape Graph's requests.
type graphOptions struct {
	pageSize           int
	serviceSources     []string
	severities         []string
	machineGroups      []string
	includeEvidence    bool
	maxAlertsPerGather int
}

// newGraphBackend reads Graph's alerts_v2 at endpoint; the poll sends its
// requests through client, which it names for messages.
func newGraphBackend(endpoint *url.URL, client *apiClient, opts graphOptions) *graphBackend {
	client.name = "Graph API"
	client.statusMeaning = graphStatusMeaning
	client.header = http.Header{"Prefer": {"include-unknown-enum-members"}}
	groups := make(map[string]bool, len(opts.machineGroups))
	for _, g := range opts.machineGroups {
		groups[g] = true
	}
	return &graphBackend{
		endpointURL:        endpoint,
		pageSize:           opts.pageSize,
		serviceSources:     opts.serviceSources,
		severities:         opts.severities,
		machineGroups:      groups,
		includeEvidence:    opts.includeEvidence,
		maxAlertsPerGather: opts.maxAlertsPerGather,
	}
}

func (b *graphBackend) endpoint() string {
	return b.endpointURL.String()
}

// firstPage is the query for the alerts last updated in [from, to), top to
// a page, oldest first and with @odata.count unless the service refused
// these options.
func (b *graphBackend) firstPage(from, to time.Time, top int) *url.URL {
	filter := fmt.Sprintf("lastUpdateDateTime ge %s and lastUpdateDateTime lt %s",
		from.UTC().Format(siemTimeLayout), to.UTC().Format(siemTimeLayout))
	filter += odataAnyOf("serviceSource", b.serviceSources) + odataAnyOf("severity", b.severities)
	q := b.endpointURL.Query()
	q.Set("$filter", filter)
	if !b.learned.noOrderBy {
		q.Set("$orderby", "lastUpdateDateTime asc")
	}
	if !b.learned.noCount {
		q.Set("$count", "true")
	}
	q.Set("$top", strconv.Itoa(top))
	u := *b.endpointURL
	u.RawQuery = q.Encode()
	return &u
}

// odataAnyOf is the filter clause "and (field eq 'a' or field eq 'b')".
func odataAnyOf(field string, values []string) string {
	if len(values) == 0 {
		return ""
	}
	terms := make([]string, 0, len(values))
	for _, v := range values {
		terms = append(terms, fmt.Sprintf("%s eq '%s'", field, strings.ReplaceAll(v, "'", "''")))
	}
	return " and (" + strings.Join(terms, " or ") + ")"
}

// checkNextLink accepts a next page only on the API's own scheme and host:
// the request carries the bearer token.
func (b *graphBackend) checkNextLink(next string) (*url.URL, error) {
	u, err := url.Parse(next)
	if err != nil || u.Scheme != b.endpointURL.Scheme || u.Host != b.endpointURL.Host {
		return nil, fmt.Errorf("the Graph API at %s sent an @odata.nextLink to another place, not followed: %q",
			b.endpointURL.Host, sanitize(truncate(next, 256), maxBodySnippet))
	}
	return u, nil
}

// decode streams the alerts of one page of the part [from, to) and
// describes the page in the part's page. Alerts outside the part, which the
// service should not have sent, are counted and left out: their times must
// not steer the cursor, and the part that covers their time reads them if
// they are real. Alerts without a time that parses cannot be placed and
// are handed on as they are.
func (b *graphBackend) decode(req *request, body io.Reader, emit func(alert) bool) error {
	part := req.ask.(*graphPart)
	from, to, page := part.from, part.to, &part.page
	page.reset()
	meta, err := decodeGraphPage(body, func(a *graphAlert) bool {
		page.items++
		if a.issues.skip != "" || a.lastUpdate.IsZero() {
			// Not to be placed by time: skipped, or emitted once without
			// steering the cursor (poll.attempt).
			return emit(a)
		}
		if a.lastUpdate.Before(from) || !a.lastUpdate.Before(to) {
			page.outside++
			if page.outside == 1 {
				page.firstOutside = a.identity()
			}
			return true
		}
		page.noteInside(a)
		if len(b.machineGroups) > 0 && !b.machineGroups[a.device.RbacGroupName] {
			return true
		}
		a.includeEvidence = b.includeEvidence
		return emit(a)
	})
	if err != nil {
		return err
	}
	page.next, page.count, page.hasCount = meta.next, meta.count, meta.hasCount
	return nil
}

func graphStatusMeaning(status int) string {
	switch status {
	case http.StatusBadRequest:
		return "the query was refused: check service_sources and severities"
	case http.StatusUnauthorized:
		return "the token is invalid or expired, or was issued for another audience: check scopes and region"
	case http.StatusForbidden:
		return "the app lacks the SecurityAlert.Read.All application permission, or admin consent for it"
	case http.StatusNotFound:
		return "no alerts_v2 at this address: check region or endpoint_url"
	default:
		return commonStatusMeaning(status)
	}
}

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
