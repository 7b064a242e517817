package sim

import (
	"fmt"
	"math/rand/v2"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
)

// GraphIncident is one version of a Microsoft Graph security incident.
type GraphIncident struct {
	ID                 string              `json:"id"`
	TenantID           string              `json:"tenantId"`
	Status             string              `json:"status"`
	Severity           string              `json:"severity"`
	Classification     string              `json:"classification"`
	Determination      string              `json:"determination"`
	DisplayName        string              `json:"displayName"`
	Description        string              `json:"description"`
	AssignedTo         *string             `json:"assignedTo"`
	IncidentWebURL     string              `json:"incidentWebUrl"`
	RedirectIncidentID *string             `json:"redirectIncidentId"`
	CreatedDateTime    string              `json:"createdDateTime"`
	LastUpdateDateTime string              `json:"lastUpdateDateTime"`
	CustomTags         []string            `json:"customTags"`
	SystemTags         []string            `json:"systemTags"`
	Comments           []map[string]string `json:"comments"`

	// AlertIDs are the incident's alerts, whose current versions
	// $expand=alerts serves.
	AlertIDs []string `json:"-"`
	// VisibleAt is when the API starts returning this version; zero means
	// at its lastUpdateDateTime.
	VisibleAt time.Time `json:"-"`
}

type incidentVersion struct {
	GraphIncident
	lastUpdate, visibleAt time.Time
}

// AddIncidents stores incident versions; versions of one incident share
// its id.
func (s *Server) AddIncidents(versions ...GraphIncident) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := range versions {
		if err := s.addIncidentLocked(&versions[i]); err != nil {
			return err
		}
	}
	return nil
}

func (s *Server) addIncidentLocked(in *GraphIncident) error {
	t, err := time.Parse(time.RFC3339Nano, in.LastUpdateDateTime)
	if err != nil {
		return fmt.Errorf("incident %q: lastUpdateDateTime: %w", in.ID, err)
	}
	visible := in.VisibleAt
	if visible.IsZero() {
		visible = t
	}
	if s.incidents == nil {
		s.incidents = make(map[string][]incidentVersion)
	}
	versions := append(s.incidents[in.ID], incidentVersion{GraphIncident: *in, lastUpdate: t.UTC(), visibleAt: visible.UTC()})
	sort.SliceStable(versions, func(i, j int) bool { return versions[i].lastUpdate.Before(versions[j].lastUpdate) })
	s.incidents[in.ID] = versions
	return nil
}

// AllIncidents returns every incident version that has been the current
// one up to now, oldest first (then by id): the ground truth of a poller.
func (s *Server) AllIncidents() []GraphIncident {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	s.generateLocked(now)
	var out []*incidentVersion
	for _, versions := range s.incidents {
		for i := range versions {
			if !versions[i].lastUpdate.After(now) {
				out = append(out, &versions[i])
			}
		}
	}
	slices.SortFunc(out, func(a, b *incidentVersion) int {
		if c := a.lastUpdate.Compare(b.lastUpdate); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	incidents := make([]GraphIncident, 0, len(out))
	for _, v := range out {
		incidents = append(incidents, v.GraphIncident)
	}
	return incidents
}

// expandedIncident is an incident served with $expand=alerts.
type expandedIncident struct {
	GraphIncident
	Alerts []GraphAlert `json:"alerts"`
}

// serveGraphIncidents implements GET /v1.0/security/incidents as alerts_v2
// is served, filtered on lastUpdateDateTime and severity, with at most 50
// a page and the alerts of each with $expand=alerts.
func (s *Server) serveGraphIncidents(w http.ResponseWriter, r *http.Request) {
	s.serveGraphList(w, r, "incidents", func(now time.Time, match func(*graphListed) bool) []*graphListed {
		var current []*graphListed
		for _, versions := range s.incidents {
			for i := len(versions) - 1; i >= 0; i-- {
				if v := &versions[i]; !v.visibleAt.After(now) && !v.lastUpdate.After(now) {
					l := &graphListed{id: v.ID, updated: v.LastUpdateDateTime, severity: v.Severity, lastUpdate: v.lastUpdate,
						value: func(expand bool) any {
							if !expand {
								return v.GraphIncident
							}
							return expandedIncident{GraphIncident: v.GraphIncident, Alerts: s.currentAlertsLocked(v.AlertIDs, now)}
						}}
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

// currentAlertsLocked returns the versions of the alerts current at now.
func (s *Server) currentAlertsLocked(ids []string, now time.Time) []GraphAlert {
	alerts := make([]GraphAlert, 0, len(ids))
	for _, id := range ids {
		versions := s.graph[id]
		for i := len(versions) - 1; i >= 0; i-- {
			if !versions[i].lastUpdate.After(now) {
				alerts = append(alerts, versions[i].GraphAlert)
				break
			}
		}
	}
	return alerts
}

// generateIncidentLocked stores the incident of generated event n, made of
// its alert (versions): active, then for some taken in hand, assigned and
// resolved, or redirected into the incident of event n-1, which then holds
// both alerts from then on.
func (s *Server) generateIncidentLocked(n uint64, versions []GraphAlert) {
	a := versions[0]
	rng := rand.New(rand.NewPCG(s.cfg.Seed^0x1c, n)) //nolint:gosec // reproducible fake data
	lpt, err := time.Parse(time.RFC3339Nano, a.LastUpdateDateTime)
	if err != nil {
		return
	}
	at := func(from, span int) string {
		return lpt.Add(time.Duration(from+rng.IntN(span)) * time.Minute).Format(TimeLayout)
	}
	base := GraphIncident{
		ID: a.IncidentID, TenantID: a.TenantID, Status: "active", Severity: a.Severity, Classification: "unknown", Determination: "unknown",
		DisplayName: a.Title + " on one endpoint", IncidentWebURL: a.IncidentWebURL, CreatedDateTime: a.CreatedDateTime,
		LastUpdateDateTime: a.LastUpdateDateTime, CustomTags: make([]string, 0), SystemTags: make([]string, 0), Comments: make([]map[string]string, 0),
		AlertIDs: []string{a.ID}, VisibleAt: a.VisibleAt,
	}
	if a.Severity == "high" {
		base.SystemTags = []string{"Defender Experts"}
	}
	incident := []GraphIncident{base}
	target := strconv.FormatUint(1000+(n-1)%100000, 10)
	switch pick := rng.IntN(6); {
	case pick == 0 && s.redirectableLocked(target):
		redirected := base
		redirected.Status, redirected.RedirectIncidentID = "redirected", ptr(target)
		redirected.LastUpdateDateTime, redirected.VisibleAt = at(5, 15), time.Time{}
		if s.mergeLocked(target, a.ID, redirected.LastUpdateDateTime) {
			incident = append(incident, redirected)
		}
	case pick <= 3:
		inProgress := base
		inProgress.Status, inProgress.AssignedTo = "inProgress", ptr("secops@contoso.com")
		inProgress.LastUpdateDateTime, inProgress.VisibleAt = at(10, 30), time.Time{}
		incident = append(incident, inProgress)
		if pick <= 2 {
			resolved := inProgress
			resolved.Status, resolved.Classification, resolved.Determination = "resolved", "truePositive", "malware"
			if pick == 1 {
				resolved.Classification, resolved.Determination = "falsePositive", "notMalicious"
			}
			resolved.LastUpdateDateTime = at(60, 60)
			incident = append(incident, resolved)
		}
	}
	for i := range incident {
		s.addIncidentLocked(&incident[i]) //nolint:errcheck // generated timestamps always parse
	}
}

// redirectableLocked reports whether the incident exists and was never
// redirected itself.
func (s *Server) redirectableLocked(id string) bool {
	versions := s.incidents[id]
	for i := range versions {
		if versions[i].Status == "redirected" {
			return false
		}
	}
	return len(versions) > 0
}

const multiStage = "Multi-stage incident on one endpoint"

// mergeLocked adds the alert to the incident from updated on: a new version
// then, and the alert in every later one. It reports false, changing
// nothing, when the incident has a version at that very time.
func (s *Server) mergeLocked(id, alertID, updated string) bool {
	t, err := time.Parse(time.RFC3339Nano, updated)
	if err != nil {
		return false
	}
	versions := s.incidents[id]
	if len(versions) == 0 || !versions[0].lastUpdate.Before(t) {
		return false
	}
	current := 0
	for i := range versions {
		switch c := versions[i].lastUpdate.Compare(t); {
		case c == 0:
			return false
		case c < 0:
			current = i
		default:
			versions[i].AlertIDs = append(slices.Clone(versions[i].AlertIDs), alertID)
			versions[i].DisplayName = multiStage
		}
	}
	merged := versions[current].GraphIncident
	merged.AlertIDs = append(slices.Clone(merged.AlertIDs), alertID)
	merged.DisplayName = multiStage
	merged.LastUpdateDateTime, merged.VisibleAt = updated, time.Time{}
	return s.addIncidentLocked(&merged) == nil
}
