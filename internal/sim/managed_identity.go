package sim

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// ManagedIdentityPath is where the simulator serves the managed identity
// endpoint of the App Service form; a client finds it, as on Azure, in
// IDENTITY_ENDPOINT, with the secret header value in IDENTITY_HEADER.
const ManagedIdentityPath = "/msi/token"

// ManagedIdentity describes the identities assigned to the simulated host.
type ManagedIdentity struct {
	// Header is the value the endpoint expects in X-IDENTITY-HEADER.
	Header string
	// SystemAssigned: the host has a system-assigned identity.
	SystemAssigned bool
	// UserAssigned are the user-assigned identities of the host.
	UserAssigned []UserAssignedIdentity
}

// UserAssignedIdentity is a user-assigned identity, found by its client id
// or its Azure resource id.
type UserAssignedIdentity struct {
	ClientID   string
	ResourceID string
}

// FailManagedIdentity makes the next n managed identity requests answer
// with status (400, 404, 500, ...) as App Service does.
func (s *Server) FailManagedIdentity(status, n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for range n {
		s.miFailures = append(s.miFailures, status)
	}
}

// serveManagedIdentity implements the App Service managed identity
// endpoint (api-version 2019-08-01).
func (s *Server) serveManagedIdentity(w http.ResponseWriter, r *http.Request) {
	mi := s.cfg.ManagedIdentity
	s.mu.Lock()
	failure := 0
	if len(s.miFailures) > 0 {
		failure, s.miFailures = s.miFailures[0], s.miFailures[1:]
	}
	s.mu.Unlock()
	switch {
	case mi != nil && s.cfg.SignIn.Endless:
		serveEndless(w)
		return
	case mi == nil:
		writeMIError(w, http.StatusNotFound, "No managed identity endpoint on this host.")
		return
	case failure == http.StatusBadRequest:
		writeMIError(w, failure, "Unable to load the proper Managed Identity.")
		return
	case failure == http.StatusNotFound:
		writeMIError(w, failure, "The managed identity service is not available at this address.")
		return
	case failure != 0:
		writeMIError(w, failure, "An unexpected error occurred while fetching the AAD Token.")
		return
	case r.Header.Get("X-IDENTITY-HEADER") != mi.Header:
		writeMIError(w, http.StatusBadRequest, "The X-IDENTITY-HEADER header is missing or wrong.")
		return
	case r.URL.Query().Get("api-version") != "2019-08-01":
		writeMIError(w, http.StatusBadRequest, fmt.Sprintf("api-version %q is not supported: use 2019-08-01.", r.URL.Query().Get("api-version")))
		return
	}
	q := r.URL.Query()
	resource := q.Get("resource")
	if resource == "" {
		writeMIError(w, http.StatusBadRequest, "The resource parameter is missing.")
		return
	}
	clientID, ok := mi.identity(q.Get("client_id"), q.Get("mi_res_id"))
	if !ok {
		writeMIError(w, http.StatusBadRequest, "Unable to load the proper Managed Identity.")
		return
	}

	audience := strings.ToLower(strings.TrimSuffix(resource, "/"))
	expiry := s.now().Add(s.cfg.TokenLifetime)
	token := s.issueToken("simtok-mi-", audience, expiry)
	// App Service sends expires_on as a string of Unix seconds.
	writeJSON(w, http.StatusOK, map[string]any{
		"access_token": token,
		"expires_on":   strconv.FormatInt(expiry.Unix(), 10),
		"resource":     resource,
		"token_type":   "Bearer",
		"client_id":    clientID,
	})
}

// identity finds the identity a request names: none for the
// system-assigned one.
func (mi *ManagedIdentity) identity(clientID, resourceID string) (string, bool) {
	if clientID == "" && resourceID == "" {
		return "system-assigned", mi.SystemAssigned
	}
	for _, u := range mi.UserAssigned {
		if clientID != "" && strings.EqualFold(clientID, u.ClientID) || resourceID != "" && strings.EqualFold(resourceID, u.ResourceID) {
			return u.ClientID, true
		}
	}
	return "", false
}

func writeMIError(w http.ResponseWriter, status int, message string) {
	writeJSON(w, status, map[string]any{
		"statusCode":    status,
		"message":       message,
		"correlationId": randomUUID(),
		"timestamp":     time.Now().UTC().Format(time.RFC3339),
	})
}
