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

	"github.com/sectelemetry/telegraf-defender/plugins/inputs/microsoft_defender/jsonstream"
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

// graphAlertFields maps every key of graphAlert's json tags to its field.
var graphAlertFields = newObjectFields("alert", map[string]objectField[graphAlert]{
	"id":                    {str: func(a *graphAlert) *string { return &a.ID }},
	"providerAlertId":       {str: func(a *graphAlert) *string { return &a.ProviderAlertID }},
	"incidentId":            {str: func(a *graphAlert) *string { return &a.IncidentID }},
	"tenantId":              {str: func(a *graphAlert) *string { return &a.TenantID }},
	"status":                {str: func(a *graphAlert) *string { return &a.Status }},
	"severity":              {str: func(a *graphAlert) *string { return &a.Severity }},
	"classification":        {str: func(a *graphAlert) *string { return &a.Classification }},
	"determination":         {str: func(a *graphAlert) *string { return &a.Determination }},
	"serviceSource":         {str: func(a *graphAlert) *string { return &a.ServiceSource }},
	"detectionSource":       {str: func(a *graphAlert) *string { return &a.DetectionSource }},
	"detectorId":            {str: func(a *graphAlert) *string { return &a.DetectorID }},
	"category":              {str: func(a *graphAlert) *string { return &a.Category }},
	"title":                 {str: func(a *graphAlert) *string { return &a.Title }},
	"description":           {str: func(a *graphAlert) *string { return &a.Description }},
	"recommendedActions":    {str: func(a *graphAlert) *string { return &a.RecommendedActions }},
	"alertWebUrl":           {str: func(a *graphAlert) *string { return &a.AlertWebURL }},
	"incidentWebUrl":        {str: func(a *graphAlert) *string { return &a.IncidentWebURL }},
	"actorDisplayName":      {str: func(a *graphAlert) *string { return &a.ActorDisplayName }},
	"threatDisplayName":     {str: func(a *graphAlert) *string { return &a.ThreatDisplayName }},
	"threatFamilyName":      {str: func(a *graphAlert) *string { return &a.ThreatFamilyName }},
	"mitreTechniques":       {raw: (*graphAlert).setMitreTechniques},
	"assignedTo":            {str: func(a *graphAlert) *string { return &a.AssignedTo }},
	"createdDateTime":       {str: func(a *graphAlert) *string { return &a.CreatedDateTime }},
	"lastUpdateDateTime":    {str: func(a *graphAlert) *string { return &a.LastUpdateDateTime }},
	"resolvedDateTime":      {str: func(a *graphAlert) *string { return &a.ResolvedDateTime }},
	"firstActivityDateTime": {str: func(a *graphAlert) *string { return &a.FirstActivityDateTime }},
	"lastActivityDateTime":  {str: func(a *graphAlert) *string { return &a.LastActivityDateTime }},
	"evidence":              {stream: (*graphAlert).readEvidence},
})

// deviceEvidenceFields maps every key of deviceEvidence's json tags to its
// field.
var deviceEvidenceFields = newObjectFields("evidence", map[string]objectField[deviceEvidence]{
	"@odata.type":   {str: func(e *deviceEvidence) *string { return &e.Type }},
	"deviceDnsName": {str: func(e *deviceEvidence) *string { return &e.DeviceDNSName }},
	"mdeDeviceId":   {str: func(e *deviceEvidence) *string { return &e.MdeDeviceID }},
	"rbacGroupName": {str: func(e *deviceEvidence) *string { return &e.RbacGroupName }},
})

// setMitreTechniques decodes the raw mitreTechniques as encoding/json
// decodes into a []string: null keeps what is there, and the elements of a
// repeated key reuse the slice.
func (a *graphAlert) setMitreTechniques(raw []byte) error {
	r := jsonstream.NewBytesReader(raw)
	c, err := r.NextByte()
	if err != nil || c == 'n' {
		return err
	}
	if c != '[' {
		return fmt.Errorf("a JSON %s where an array of strings was expected", jsonstream.Kind(c))
	}
	// A copy, so that a value left out leaves the field as it was; null
	// elements keep what an earlier array had there, as in encoding/json.
	techniques := append([]string(nil), a.MitreTechniques...)[:0]
	var typeErr error
	err = readArray(r, func(i int, c byte) error {
		if i < cap(techniques) {
			techniques = techniques[:i+1]
		} else {
			techniques = append(techniques, "")
		}
		switch c {
		case '"':
			s, err := r.AppendString(nil)
			techniques[i] = string(s)
			return err
		case 'n':
			return r.Skip(c, 0)
		}
		if typeErr == nil {
			typeErr = fmt.Errorf("element %d: JSON %s where a string was expected", i, jsonstream.Kind(c))
		}
		return r.Skip(c, 0)
	})
	if err != nil || typeErr != nil {
		return errors.Join(err, typeErr)
	}
	if len(techniques) == 0 {
		techniques = make([]string, 0)
	}
	a.MitreTechniques = techniques
	return nil
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

// maxEvidenceTee bounds the evidence kept as it came, whitespace included,
// for the evidence field: compacted, at most maxFieldBytes are emitted
// (graphAlert.metric).
const maxEvidenceTee = 4 * maxFieldBytes

// readEvidence reads the evidence array from the stream: it counts the
// evidence, keeps the first device evidence, and keeps the array itself
// only while it is short enough to be emitted, so that an alert with
// megabytes of evidence costs no more memory than one without. Evidence
// that does not decode leaves the alert's evidence as it was.
func (a *graphAlert) readEvidence(r *jsonstream.Reader, c byte) (problem, err error) {
	if c == 'n' {
		return nil, r.Skip(c, 1)
	}
	if c != '[' {
		if err := r.Skip(c, 1); err != nil {
			return nil, err
		}
		return fmt.Errorf("a JSON %s where an array was expected", jsonstream.Kind(c)), nil
	}
	r.StartTee(nil, maxEvidenceTee)
	objects := objectDecoder{r: r}
	var device deviceEvidence
	found := false
	count := 0
	err = readArray(r, func(i int, c byte) error {
		count++
		if found {
			// Only the first device evidence is used: the rest is counted,
			// not held.
			return r.Skip(c, 1)
		}
		var e deviceEvidence
		if err := decodeObject(&objects, c, &e, deviceEvidenceFields); err != nil {
			var notObject *notObjectError
			if !errors.As(err, &notObject) {
				return err
			}
			if problem == nil {
				problem = fmt.Errorf("evidence %d: %w", i, err)
			}
			return nil
		}
		if len(objects.problems) > 0 && problem == nil {
			problem = fmt.Errorf("evidence %d: field %s", i, objects.problems[0])
		}
		if !found && e.Type == "#microsoft.graph.security.deviceEvidence" {
			device, found = e, true
		}
		return nil
	})
	raw, whole := r.StopTee()
	if err != nil || problem != nil {
		return problem, err
	}
	// Kept as it came: it is compacted only if it is emitted (metric).
	a.evidenceCount, a.device, a.evidenceLeftOut = count, device, !whole
	a.Evidence = nil
	if whole {
		a.Evidence = raw
	}
	return nil, nil
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
	r := jsonstream.NewReader(body, readBufferSize)
	c, err := r.NextByte()
	if err != nil {
		return graphPageMeta{}, fmt.Errorf("response is not a JSON object: %w", explainRead(err, r))
	}
	if c != '{' {
		start, err := describeStart(r, c)
		if err != nil {
			return graphPageMeta{}, fmt.Errorf("response is not a JSON object: %w", explainRead(err, r))
		}
		return graphPageMeta{}, fmt.Errorf("response is not a JSON object with a value array: it starts with %s", start)
	}
	var meta graphPageMeta
	var key []byte
	err = readObject(r, &key, func(c byte) error {
		switch string(key) {
		case "value":
			return decodeGraphAlerts(r, c, handle)
		case "@odata.nextLink":
			switch c {
			case '"':
				link, err := r.AppendString(nil)
				meta.next = string(link)
				return err
			case 'n':
				return r.Skip(c, 1)
			}
			if err := r.Skip(c, 1); err != nil {
				return err
			}
			return fmt.Errorf("@odata.nextLink: JSON %s where a string was expected", jsonstream.Kind(c))
		case "@odata.count":
			return decodeODataCount(r, c, &meta)
		}
		return r.Skip(c, 1)
	})
	if errors.Is(err, errHandlerStopped) {
		return graphPageMeta{}, nil // the rest of the page is left unread
	}
	if err == nil {
		err = r.ExpectEnd()
	}
	if err != nil {
		return graphPageMeta{}, explainRead(err, r)
	}
	return meta, nil
}

// decodeODataCount reads @odata.count, whose first byte is c. Anything but
// a non-negative integer counts as no count: the count only tells whether
// a chain of pages may be trusted, and without one the plugin reads in
// parts that need no trust.
func decodeODataCount(r *jsonstream.Reader, c byte, meta *graphPageMeta) error {
	raw, err := r.AppendRaw(nil, c, 1)
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

// decodeGraphAlerts streams the value array, whose first byte is c. It
// returns errHandlerStopped when handle returns false.
func decodeGraphAlerts(r *jsonstream.Reader, c byte, handle func(*graphAlert) bool) error {
	if c != '[' {
		if err := r.Skip(c, 1); err != nil {
			return fmt.Errorf("value: %w", explainRead(err, r))
		}
		return fmt.Errorf("value is not an array: it is a JSON %s", jsonstream.Kind(c))
	}
	objects := objectDecoder{r: r}
	return readArray(r, func(i int, c byte) error {
		var a graphAlert
		a.issues.noun, a.issues.index, a.issues.offset = "alert", i, r.Offset()-1
		var notObject *notObjectError
		err := decodeObject(&objects, c, &a, graphAlertFields)
		switch {
		case errors.As(err, &notObject):
			a.issues.skip = notObject.Error()
		case err != nil:
			return recordError(fmt.Errorf("alert %d: %w", i, explainRead(err, r)), err)
		default:
			if len(objects.problems) > 0 {
				a.issues.invalid = append([]fieldProblem(nil), objects.problems...)
			}
			a.validate()
		}
		if !handle(&a) {
			return errHandlerStopped
		}
		return nil
	})
}
