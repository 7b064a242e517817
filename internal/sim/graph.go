package sim

import (
	"cmp"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"net/http"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
)

const (
	// GraphMaxTop is the largest $top Microsoft's security error-code page
	// admits.
	GraphMaxTop = 1000
	// GraphIncidentsMaxTop is the largest $top security/incidents takes.
	GraphIncidentsMaxTop = 50
	graphAudience        = "https://graph.microsoft.com"
)

// GraphBehaviour is how the simulated alerts_v2 treats the query options
// Microsoft does not document precisely: each choice is one way the real
// service may behave. The zero value honours everything without limits.
type GraphBehaviour struct {
	// Order is what $orderby=lastUpdateDateTime asc does: "asc" (or "")
	// honours it, "ignored" answers newest first whatever was asked,
	// "rejected" answers 400, "unordered" answers in no order of time,
	// asked or not (one fixed order, by a hash of each version). Without
	// $orderby the answer is newest first, as the documentation says.
	Order string
	// NextLink is the form of @odata.nextLink: "skip" (or "") carries
	// $skip, "skiptoken" an opaque $skiptoken, "none" never comes although
	// more alerts match.
	NextLink string
	// Count is what $count=true does: "returned" (or "") adds
	// @odata.count, "ignored" does not, "rejected" answers 400; "always"
	// adds it to every page, asked or not.
	Count string
	// CountOffset is added to every @odata.count sent, which stays at
	// least 0: -150 a count too low, 1e9 an inflated one, -1e9 always 0.
	CountOffset int
	// MaxSkip answers 400 to a page that starts deeper than this many
	// alerts (Microsoft's error-code page says 500); 0 means no limit.
	MaxSkip int
	// ChainEnd ends a chain of pages silently: a page reaching this many
	// alerts carries no next link although more match; 0 means never.
	ChainEnd int
	// MaxTop clamps $top silently to this; 0 means $top is honoured up to
	// GraphMaxTop, above which it is refused. A next link repeats the $top
	// asked for.
	MaxTop int
	// ShortPages: the first this many pages that would hold more than one
	// alert hold one, with a next link to the rest.
	ShortPages int
	// TrailingLink puts a next link on every page that holds alerts, the
	// last one's leading to an empty page, as some Graph APIs do.
	TrailingLink bool
	// LateInChain: once, when alerts_v2 first serves a page with a next
	// link, this many new versions become visible, last updated a second
	// apart from one second after the lower time bound of that page's
	// $filter: older than the chain's first page, so newest first they
	// come at its end.
	LateInChain int
	// ExpandFailsAbove answers 500 to a page of incidents with
	// $expand=alerts that would hold more than this many, as a peer saw on a
	// large tenant; 0 means never.
	ExpandFailsAbove int
}

// The values of the GraphBehaviour fields.
const (
	GraphOrderAsc      = "asc"
	GraphOrderIgnored  = "ignored"
	GraphOrderRejected = "rejected"
	GraphOrderNone     = "unordered"
	GraphLinkSkip      = "skip"
	GraphLinkSkipToken = "skiptoken"
	GraphLinkNone      = "none"
	GraphCountReturned = "returned"
	GraphCountIgnored  = "ignored"
	GraphCountRejected = "rejected"
	GraphCountAlways   = "always"
)

// Check reports a field holding a value the simulator does not know.
func (g *GraphBehaviour) Check() error {
	for _, f := range []struct {
		name, value string
		allowed     []string
	}{
		{"order", g.Order, []string{GraphOrderAsc, GraphOrderIgnored, GraphOrderRejected, GraphOrderNone}},
		{"next link", g.NextLink, []string{GraphLinkSkip, GraphLinkSkipToken, GraphLinkNone}},
		{"count", g.Count, []string{GraphCountReturned, GraphCountIgnored, GraphCountRejected, GraphCountAlways}},
	} {
		if f.value != "" && !slices.Contains(f.allowed, f.value) {
			return fmt.Errorf("graph %s %q is none of %s", f.name, f.value, strings.Join(f.allowed, ", "))
		}
	}
	if g.MaxSkip < 0 || g.ChainEnd < 0 || g.MaxTop < 0 || g.ShortPages < 0 || g.LateInChain < 0 {
		return errors.New("graph max skip, chain end, max top, short pages and late in chain must not be negative")
	}
	if g.ExpandFailsAbove < 0 {
		return errors.New("graph expand fails above must not be negative")
	}
	return nil
}

// GraphAlert is one version of a Microsoft Graph security alert (alerts_v2).
type GraphAlert struct {
	ID                    string            `json:"id"`
	ProviderAlertID       string            `json:"providerAlertId"`
	IncidentID            string            `json:"incidentId"`
	TenantID              string            `json:"tenantId"`
	Status                string            `json:"status"`
	Severity              string            `json:"severity"`
	Classification        *string           `json:"classification"`
	Determination         *string           `json:"determination"`
	ServiceSource         string            `json:"serviceSource"`
	DetectionSource       string            `json:"detectionSource"`
	DetectorID            string            `json:"detectorId"`
	Category              string            `json:"category"`
	Title                 string            `json:"title"`
	Description           string            `json:"description"`
	RecommendedActions    string            `json:"recommendedActions"`
	AlertWebURL           string            `json:"alertWebUrl"`
	IncidentWebURL        string            `json:"incidentWebUrl"`
	ActorDisplayName      *string           `json:"actorDisplayName"`
	ThreatDisplayName     *string           `json:"threatDisplayName"`
	ThreatFamilyName      *string           `json:"threatFamilyName"`
	MitreTechniques       []string          `json:"mitreTechniques"`
	AssignedTo            *string           `json:"assignedTo"`
	CreatedDateTime       string            `json:"createdDateTime"`
	LastUpdateDateTime    string            `json:"lastUpdateDateTime"`
	ResolvedDateTime      *string           `json:"resolvedDateTime"`
	FirstActivityDateTime string            `json:"firstActivityDateTime"`
	LastActivityDateTime  string            `json:"lastActivityDateTime"`
	Evidence              []json.RawMessage `json:"evidence"`

	// VisibleAt is when the API starts returning this version; zero means
	// at its lastUpdateDateTime.
	VisibleAt time.Time `json:"-"`
}

type graphVersion struct {
	GraphAlert
	lastUpdate time.Time
	visibleAt  time.Time
}

// AddGraph stores alert versions; versions of one alert share its id.
func (s *Server) AddGraph(versions ...GraphAlert) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := range versions {
		if err := s.addGraphLocked(&versions[i]); err != nil {
			return err
		}
	}
	return nil
}

func (s *Server) addGraphLocked(a *GraphAlert) error {
	t, err := time.Parse(time.RFC3339Nano, a.LastUpdateDateTime)
	if err != nil {
		return fmt.Errorf("alert %q: lastUpdateDateTime: %w", a.ID, err)
	}
	visible := a.VisibleAt
	if visible.IsZero() {
		visible = t
	}
	if s.graph == nil {
		s.graph = make(map[string][]graphVersion)
	}
	versions := append(s.graph[a.ID], graphVersion{GraphAlert: *a, lastUpdate: t.UTC(), visibleAt: visible.UTC()})
	sort.SliceStable(versions, func(i, j int) bool { return versions[i].lastUpdate.Before(versions[j].lastUpdate) })
	s.graph[a.ID] = versions
	return nil
}

// AllGraph returns every alert version that has been the current one up to
// now, oldest first: the ground truth of a Graph poller.
func (s *Server) AllGraph() []GraphAlert {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	s.generateLocked(now)
	var out []*graphVersion
	for _, versions := range s.graph {
		for i := range versions {
			if !versions[i].lastUpdate.After(now) {
				out = append(out, &versions[i])
			}
		}
	}
	slices.SortFunc(out, compareVersions)
	alerts := make([]GraphAlert, 0, len(out))
	for _, v := range out {
		alerts = append(alerts, v.GraphAlert)
	}
	return alerts
}

// compareVersions orders versions by lastUpdateDateTime, then by id.
func compareVersions(a, b *graphVersion) int {
	if c := a.lastUpdate.Compare(b.lastUpdate); c != 0 {
		return c
	}
	return strings.Compare(a.ID, b.ID)
}

var (
	filterTime   = regexp.MustCompile(`lastUpdateDateTime (ge|gt|le|lt) (\S+)`)
	filterSource = regexp.MustCompile(`serviceSource eq '([^']*)'`)
	filterSev    = regexp.MustCompile(`severity eq '([^']*)'`)
)

// graphListed is a version a Graph list may serve: what the list's filter,
// order and paging read, and its value for the answer.
type graphListed struct {
	id, updated, severity, source string
	lastUpdate                    time.Time
	value                         func(expand bool) any // called under the lock, for the page only
}

// serveGraphAlerts implements GET /v1.0/security/alerts_v2: the current
// version of each alert, filtered on lastUpdateDateTime, serviceSource and
// severity, in pages of $top, ordered and linked as Config.Graph says.
func (s *Server) serveGraphAlerts(w http.ResponseWriter, r *http.Request) {
	s.serveGraphList(w, r, "alerts_v2", func(now time.Time, match func(*graphListed) bool) []*graphListed {
		var current []*graphListed
		for _, versions := range s.graph {
			// The current version: the last one visible by now.
			for i := len(versions) - 1; i >= 0; i-- {
				if v := &versions[i]; !v.visibleAt.After(now) && !v.lastUpdate.After(now) {
					l := &graphListed{id: v.ID, updated: v.LastUpdateDateTime, severity: v.Severity, source: v.ServiceSource,
						lastUpdate: v.lastUpdate, value: func(bool) any { return v.GraphAlert }}
					if match(l) {
						current = append(current, l)
					}
					break
				}
			}
		}
		return current
	})
}

// serveGraphList serves a Graph list (name, as in its @odata.context) of
// the versions current returns, in pages of $top, ordered and linked as
// Config.Graph says. Each page is cut from the versions current when it is
// asked for, so that an update between two pages shifts the later ones, as
// offsets do.
func (s *Server) serveGraphList(w http.ResponseWriter, r *http.Request, name string,
	current func(now time.Time, match func(*graphListed) bool) []*graphListed) {
	fault := s.takeFault(false)
	if fault == FaultThrottle && s.serveFault(w, r, fault, nil) {
		return
	}
	if !s.checkBearer(w, r, map[string]bool{graphAudience: true}) {
		return
	}
	g := s.cfg.Graph
	q := r.URL.Query()
	top, skip := 100, 0
	var err error
	if v := q.Get("$top"); v != "" {
		if top, err = strconv.Atoi(v); err != nil || top < 1 || (g.MaxTop == 0 && top > GraphMaxTop) {
			badGraphRequest(w, fmt.Sprintf("Invalid $top value %q: it must be between 1 and %d.", v, GraphMaxTop))
			return
		}
	}
	incidents := name == "incidents"
	if incidents && top > GraphIncidentsMaxTop {
		badGraphRequest(w, fmt.Sprintf("The limit of '%d' for Top query has been exceeded. The value from the incoming request is '%d'.",
			GraphIncidentsMaxTop, top))
		return
	}
	expand := q.Get("$expand")
	if expand != "" && (!incidents || expand != "alerts") {
		badGraphRequest(w, fmt.Sprintf("Invalid $expand value %q.", expand))
		return
	}
	if g.MaxTop > 0 {
		top = min(top, g.MaxTop)
	}
	if v := q.Get("$skip"); v != "" {
		if skip, err = strconv.Atoi(v); err != nil || skip < 0 {
			badGraphRequest(w, fmt.Sprintf("Invalid $skip value %q.", v))
			return
		}
	}
	if v := q.Get("$skiptoken"); v != "" {
		if skip, err = decodeSkipToken(v); err != nil {
			badGraphRequest(w, "Invalid $skiptoken.")
			return
		}
	}
	if g.MaxSkip > 0 && skip > g.MaxSkip {
		badGraphRequest(w, fmt.Sprintf("The $skip value %d exceeds the maximum of %d.", skip, g.MaxSkip))
		return
	}
	ascending := false
	if ob := q.Get("$orderby"); ob != "" {
		switch g.Order {
		case GraphOrderRejected:
			badGraphRequest(w, "Invalid OrderBy clause: OrderBy is not supported on this resource.")
			return
		case GraphOrderIgnored, GraphOrderNone:
		default:
			if ob != "lastUpdateDateTime asc" {
				badGraphRequest(w, "Only $orderby=lastUpdateDateTime asc is simulated.")
				return
			}
			ascending = true
		}
	}
	withCount := false
	if c := q.Get("$count"); c != "" {
		if g.Count == GraphCountRejected {
			badGraphRequest(w, "Query option '$count' is not allowed.")
			return
		}
		withCount = c == "true" && g.Count != GraphCountIgnored
	}
	withCount = withCount || g.Count == GraphCountAlways
	match, err := parseGraphFilter(q.Get("$filter"))
	if err != nil {
		badGraphRequest(w, err.Error())
		return
	}

	now := s.now()
	s.mu.Lock()
	s.generateLocked(now)
	// Sorted under the lock: the versions do not move while they are.
	all := current(now, match)
	slices.SortFunc(all, func(a, b *graphListed) int {
		switch {
		case g.Order == GraphOrderNone:
			return cmp.Compare(versionHash(a.id, a.updated), versionHash(b.id, b.updated))
		case !ascending:
			a, b = b, a
		}
		return cmp.Or(a.lastUpdate.Compare(b.lastUpdate), strings.Compare(a.id, b.id))
	})
	var page []*graphListed
	if skip < len(all) {
		page = all[skip:min(skip+top, len(all))]
	}
	if len(page) > 1 && s.graphShort < g.ShortPages {
		s.graphShort++
		page, top = page[:1], 1 // the next link goes on after it
	}
	if expand != "" && g.ExpandFailsAbove > 0 && len(page) > g.ExpandFailsAbove {
		s.mu.Unlock()
		writeJSON(w, http.StatusInternalServerError, map[string]any{"error": map[string]any{
			"code": "InternalServerError", "message": "An error has occurred while processing the request."}})
		return
	}
	values := make([]any, 0, len(page))
	for _, v := range page {
		values = append(values, v.value(expand != ""))
	}
	s.mu.Unlock()
	body := map[string]any{
		"@odata.context": "https://graph.microsoft.com/v1.0/$metadata#security/" + name,
		"value":          values,
	}
	if withCount {
		body["@odata.count"] = max(len(all)+g.CountOffset, 0)
	}
	more := skip+top < len(all)
	if g.ChainEnd > 0 && skip+top >= g.ChainEnd {
		more = false
	}
	if (more || g.TrailingLink && len(page) > 0) && g.NextLink != GraphLinkNone {
		next := *r.URL
		next.Scheme, next.Host = "http", r.Host
		nq := next.Query()
		if g.NextLink == GraphLinkSkipToken {
			nq.Del("$skip")
			nq.Set("$skiptoken", encodeSkipToken(skip+top))
		} else {
			nq.Set("$skip", strconv.Itoa(skip+top))
		}
		next.RawQuery = nq.Encode()
		body["@odata.nextLink"] = next.String()
	}
	if _, linked := body["@odata.nextLink"]; linked && name == "alerts_v2" && g.LateInChain > 0 {
		s.addLateInChain(q.Get("$filter"))
	}
	payload, err := json.Marshal(body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	if s.serveFault(w, r, fault, func() []byte { return payload }) {
		return
	}
	w.Header().Set("Content-Type", "application/json; odata.metadata=minimal")
	w.Write(payload) //nolint:errcheck // the client may have gone
}

// addLateInChain adds the versions of GraphBehaviour.LateInChain, once,
// after the lower bound of filter.
func (s *Server) addLateInChain(filter string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.graphLate {
		return
	}
	var from time.Time
	for _, m := range filterTime.FindAllStringSubmatch(filter, -1) {
		if t, err := time.Parse(time.RFC3339Nano, m[2]); err == nil && (m[1] == "ge" || m[1] == "gt") {
			from = t
		}
	}
	if from.IsZero() {
		return
	}
	s.graphLate = true
	for i := range s.cfg.Graph.LateInChain {
		at := from.Add(time.Duration(i+1) * time.Second).UTC().Format(time.RFC3339Nano)
		s.addGraphLocked(&GraphAlert{ //nolint:errcheck // the time was just formatted
			ID: fmt.Sprintf("late%d", i), TenantID: s.cfg.TenantID, Status: "new", Severity: "high", Category: "Malware",
			ServiceSource: "microsoftDefenderForEndpoint", CreatedDateTime: at, LastUpdateDateTime: at,
		})
	}
}

// versionHash places a version in the order of GraphOrderNone.
func versionHash(id, updated string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(id + "@" + updated))
	return h.Sum64()
}

// encodeSkipToken hides the offset of the next page, as a service's opaque
// token would.
func encodeSkipToken(offset int) string {
	return base64.RawURLEncoding.EncodeToString([]byte("sim-offset:" + strconv.Itoa(offset)))
}

func decodeSkipToken(token string) (int, error) {
	raw, err := base64.RawURLEncoding.DecodeString(token)
	if err != nil {
		return 0, err
	}
	offset, ok := strings.CutPrefix(string(raw), "sim-offset:")
	if !ok {
		return 0, errors.New("not a simulator token")
	}
	n, err := strconv.Atoi(offset)
	if err != nil || n < 0 {
		return 0, errors.New("bad offset")
	}
	return n, nil
}

// parseGraphFilter understands the filters the plugin sends: bounds on
// lastUpdateDateTime, and alternatives of serviceSource and severity.
func parseGraphFilter(filter string) (func(*graphListed) bool, error) {
	type bound struct {
		op string
		t  time.Time
	}
	bounds := make([]bound, 0, 2)
	for _, m := range filterTime.FindAllStringSubmatch(filter, -1) {
		t, err := time.Parse(time.RFC3339Nano, m[2])
		if err != nil {
			return nil, fmt.Errorf("invalid lastUpdateDateTime %q in $filter", m[2])
		}
		bounds = append(bounds, bound{m[1], t})
	}
	sources := make(map[string]bool)
	for _, m := range filterSource.FindAllStringSubmatch(filter, -1) {
		sources[m[1]] = true
	}
	severities := make(map[string]bool)
	for _, m := range filterSev.FindAllStringSubmatch(filter, -1) {
		severities[m[1]] = true
	}
	return func(v *graphListed) bool {
		for _, b := range bounds {
			switch {
			case b.op == "ge" && v.lastUpdate.Before(b.t),
				b.op == "gt" && !v.lastUpdate.After(b.t),
				b.op == "lt" && !v.lastUpdate.Before(b.t),
				b.op == "le" && v.lastUpdate.After(b.t):
				return false
			}
		}
		return (len(sources) == 0 || sources[v.source]) && (len(severities) == 0 || severities[v.severity])
	}, nil
}

// badGraphRequest answers 400 in Graph's error format.
func badGraphRequest(w http.ResponseWriter, message string) {
	writeJSON(w, http.StatusBadRequest, map[string]any{"error": map[string]any{"code": "BadRequest", "message": message}})
}

// graphVersionsOf turns the detections of one generated event into the
// versions of its Graph alert: created, then for some alerts taken in
// hand and later resolved.
func (s *Server) graphVersionsOf(n uint64, detections []Detection) []GraphAlert {
	d := detections[0]
	rng := rand.New(rand.NewPCG(s.cfg.Seed^0x6a, n)) //nolint:gosec // reproducible fake data
	lpt, err := time.Parse(time.RFC3339Nano, d.LastProcessedTimeUtc)
	if err != nil {
		return nil
	}
	severity := strings.ToLower(d.Severity)
	source, detectionSource := "microsoftDefenderForEndpoint", "microsoftDefenderForEndpoint"
	if d.Source == "Antivirus" {
		detectionSource = "antivirus"
	}
	if rng.IntN(5) == 0 {
		source, detectionSource = "microsoftDefenderForOffice365", "microsoftDefenderForOffice365"
	}
	id := "da" + strings.ReplaceAll(d.AlertID, "-", "")
	evidence := graphEvidence(detections)
	base := GraphAlert{
		ID:                    id,
		ProviderAlertID:       id,
		IncidentID:            strconv.FormatUint(1000+n%100000, 10),
		TenantID:              s.cfg.TenantID,
		Status:                "new",
		Severity:              severity,
		ServiceSource:         source,
		DetectionSource:       detectionSource,
		DetectorID:            d.IoaDefinitionID,
		Category:              d.Category,
		Title:                 d.AlertTitle,
		Description:           d.Description,
		RecommendedActions:    "Isolate the device and collect an investigation package.",
		AlertWebURL:           "https://security.microsoft.com/alerts/" + id + "?tid=" + s.cfg.TenantID,
		IncidentWebURL:        fmt.Sprintf("https://security.microsoft.com/incidents/%d?tid=%s", 1000+n%100000, s.cfg.TenantID),
		MitreTechniques:       []string{"T1059.001", "T1105"}[:1+rng.IntN(2)],
		CreatedDateTime:       d.AlertTime,
		LastUpdateDateTime:    d.LastProcessedTimeUtc,
		FirstActivityDateTime: d.AlertTime,
		LastActivityDateTime:  d.AlertTime,
		Evidence:              evidence,
		VisibleAt:             d.VisibleAt,
	}
	if d.ThreatName != "" {
		base.ThreatDisplayName, base.ThreatFamilyName = ptr(d.ThreatName), ptr(d.ThreatFamily)
	}
	versions := []GraphAlert{base}
	if rng.IntN(3) == 0 {
		inProgress := base
		inProgress.Status = "inProgress"
		inProgress.AssignedTo = ptr("secops@contoso.com")
		inProgress.LastUpdateDateTime = lpt.Add(time.Duration(15+rng.IntN(30)) * time.Minute).Format(TimeLayout)
		inProgress.VisibleAt = time.Time{}
		versions = append(versions, inProgress)
		if rng.IntN(2) == 0 {
			resolved := inProgress
			resolved.Status = "resolved"
			resolved.Classification, resolved.Determination = ptr("truePositive"), ptr("malware")
			at := lpt.Add(time.Duration(60+rng.IntN(60)) * time.Minute).Format(TimeLayout)
			resolved.LastUpdateDateTime, resolved.ResolvedDateTime = at, ptr(at)
			versions = append(versions, resolved)
		}
	}
	return versions
}

func ptr(s string) *string { return &s }

// graphEvidence is the polymorphic evidence of an alert: its device, user,
// file and process, and the network indicators.
func graphEvidence(detections []Detection) []json.RawMessage {
	d := detections[0]
	items := []map[string]any{
		{
			"@odata.type": "#microsoft.graph.security.deviceEvidence", "createdDateTime": d.AlertTime,
			"verdict": "suspicious", "remediationStatus": "none", "roles": make([]string, 0),
			"deviceDnsName": d.ComputerDNSName, "mdeDeviceId": d.DeviceID, "rbacGroupName": d.MachineGroup,
			"osPlatform": "Windows10", "healthStatus": "active",
			"tags":          splitNonEmpty(d.DeviceCreatedMachineTags + "," + d.CloudCreatedMachineTags),
			"loggedOnUsers": []map[string]string{{"accountName": d.UserName, "domainName": d.UserDomain}},
		},
		{
			"@odata.type": "#microsoft.graph.security.userEvidence", "createdDateTime": d.AlertTime,
			"verdict": "unknown", "remediationStatus": "none",
			"userAccount": map[string]string{"accountName": d.UserName, "domainName": d.UserDomain},
		},
	}
	for i := range detections {
		part := &detections[i]
		items = append(items, map[string]any{
			"@odata.type": "#microsoft.graph.security.processEvidence", "createdDateTime": part.AlertTime,
			"verdict": "malicious", "remediationStatus": "none", "processCommandLine": part.CommandLine,
			"imageFile": map[string]string{"fileName": part.FileName, "filePath": part.FilePath, "sha1": part.Sha1, "sha256": part.Sha256},
		})
	}
	if d.IPAddress != "" {
		items = append(items, map[string]any{"@odata.type": "#microsoft.graph.security.ipEvidence", "ipAddress": d.IPAddress})
	}
	if d.URL != "" {
		items = append(items, map[string]any{"@odata.type": "#microsoft.graph.security.urlEvidence", "url": d.URL})
	}
	out := make([]json.RawMessage, 0, len(items))
	for _, item := range items {
		b, err := json.Marshal(item)
		if err == nil {
			out = append(out, b)
		}
	}
	return out
}

func splitNonEmpty(list string) []string {
	out := make([]string, 0, 2)
	for _, t := range strings.Split(list, ",") {
		if t = strings.TrimSpace(t); t != "" {
			out = append(out, t)
		}
	}
	return out
}
