package sim

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Audiences the SIEM API accepts tokens for: the resource of the app that
// "Enable SIEM integration" creates, and the one older documents give.
var siemAudiences = map[string]bool{
	"https://graph.windows.net":                        true,
	"https://wdatpalertexport.seville.onmicrosoft.com": true,
}

// SignInBehaviour is how the token endpoints, Azure AD's and the managed
// identity one, answer when they misbehave. The zero value behaves.
type SignInBehaviour struct {
	// Endless answers every token request 200 with a body that never ends.
	Endless bool
	// TokenBytes pads the access tokens issued to this many bytes.
	TokenBytes int
	// AccessToken is issued instead of a random token: "evil\r\ntoken",
	// "evil token" or "x", say. The API accepts it.
	AccessToken string
	// TokenEndpoint is the token_endpoint the openid-configuration
	// documents name, e.g. a plain-http listener elsewhere; empty: this
	// host's.
	TokenEndpoint string
}

// serveEndless answers 200 with a token answer that never ends, until the
// client goes.
func serveEndless(w http.ResponseWriter) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	chunk := []byte(strings.Repeat("A", 32*1024))
	if _, err := w.Write([]byte(`{"token_type":"Bearer","access_token":"`)); err != nil {
		return
	}
	for {
		if _, err := w.Write(chunk); err != nil {
			return
		}
	}
}

// issueToken returns a new access token, as SignInBehaviour says, which
// the APIs accept for audience until expiry.
func (s *Server) issueToken(prefix, audience string, expiry time.Time) string {
	token := prefix + randomHex(24)
	if s.cfg.SignIn.AccessToken != "" {
		token = s.cfg.SignIn.AccessToken
	}
	if pad := s.cfg.SignIn.TokenBytes - len(token); pad > 0 {
		token += strings.Repeat("A", pad)
	}
	s.mu.Lock()
	s.tokens[token] = issuedToken{expiry: expiry, audience: audience}
	s.mu.Unlock()
	return token
}

type issuedToken struct {
	expiry   time.Time
	audience string
}

// serveToken implements the Azure AD v1 (resource) and v2 (scope) token
// endpoints for the client_credentials and refresh_token grants.
func (s *Server) serveToken(w http.ResponseWriter, r *http.Request) {
	if s.takeFault(true) == FaultTokenDown {
		w.Header().Set("Content-Type", "text/html")
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprint(w, "<html><body>Service Unavailable</body></html>")
		return
	}
	if s.cfg.SignIn.Endless {
		serveEndless(w)
		return
	}
	v2 := strings.HasSuffix(r.URL.Path, "/v2.0/token")
	if tenant := r.PathValue("tenant"); tenant != s.cfg.TenantID {
		writeAADError(w, http.StatusBadRequest, "invalid_request", 90002,
			fmt.Sprintf("Tenant '%s' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud.", tenant))
		return
	}
	if r.PostForm.Get("client_id") != s.cfg.ClientID {
		writeAADError(w, http.StatusBadRequest, "unauthorized_client", 700016,
			fmt.Sprintf("Application with identifier '%s' was not found in the directory '%s'.", r.PostForm.Get("client_id"), s.cfg.TenantID))
		return
	}
	if r.PostForm.Has("client_assertion") {
		if f := s.checkClientAssertion(r); f != nil {
			writeAADError(w, f.status, f.code, f.aadsts, f.desc)
			return
		}
	} else if r.PostForm.Get("client_secret") != s.cfg.ClientSecret {
		writeAADError(w, http.StatusUnauthorized, "invalid_client", 7000215,
			"Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID.")
		return
	}
	switch grant := r.PostForm.Get("grant_type"); grant {
	case "client_credentials":
	case "refresh_token":
		if s.cfg.RefreshToken == "" || r.PostForm.Get("refresh_token") != s.cfg.RefreshToken {
			writeAADError(w, http.StatusBadRequest, "invalid_grant", 70000,
				"Provided grant is invalid or malformed.")
			return
		}
	default:
		writeAADError(w, http.StatusBadRequest, "unsupported_grant_type", 70003,
			fmt.Sprintf("The app requested an unsupported grant type '%s'.", grant))
		return
	}

	audience, ok := requestedAudience(w, r, v2)
	if !ok {
		return
	}

	lifetime := s.cfg.TokenLifetime
	token := s.issueToken("simtok-", audience, s.now().Add(lifetime))

	expiresIn := int64(lifetime / time.Second)
	body := map[string]any{"token_type": "Bearer", "access_token": token}
	if v2 {
		// The v2 endpoint sends numbers.
		body["expires_in"] = expiresIn
		body["ext_expires_in"] = expiresIn
	} else {
		// The v1 endpoint sends every number as a string.
		body["expires_in"] = strconv.FormatInt(expiresIn, 10)
		body["ext_expires_in"] = "0"
		body["expires_on"] = strconv.FormatInt(s.now().Add(lifetime).Unix(), 10)
		body["not_before"] = strconv.FormatInt(s.now().Unix(), 10)
		body["resource"] = audience
	}
	if r.PostForm.Get("grant_type") == "refresh_token" {
		body["refresh_token"] = s.cfg.RefreshToken
	}
	writeJSON(w, http.StatusOK, body)
}

// requestedAudience returns the audience the token is for: the v1 resource,
// or the host of the v2 scope.
func requestedAudience(w http.ResponseWriter, r *http.Request, v2 bool) (string, bool) {
	if !v2 {
		resource := r.PostForm.Get("resource")
		if resource == "" {
			writeAADError(w, http.StatusBadRequest, "invalid_request", 900144,
				"The request body must contain the following parameter: 'resource'.")
			return "", false
		}
		return strings.ToLower(strings.TrimSuffix(resource, "/")), true
	}
	// MSAL adds the OpenID Connect scopes to every request; Azure AD
	// ignores them in the client credentials grant.
	var scopes []string
	for _, sc := range strings.Fields(r.PostForm.Get("scope")) {
		if sc != "openid" && sc != "offline_access" && sc != "profile" {
			scopes = append(scopes, sc)
		}
	}
	scope := strings.Join(scopes, " ")
	if scope == "" {
		writeAADError(w, http.StatusBadRequest, "invalid_request", 900144,
			"The request body must contain the following parameter: 'scope'.")
		return "", false
	}
	if !strings.HasSuffix(scope, "/.default") || strings.Contains(scope, " ") {
		writeAADError(w, http.StatusBadRequest, "invalid_scope", 1002012,
			fmt.Sprintf("The provided value for scope %s is not valid. Client credential flows must have a scope value "+
				"with /.default suffixed to the resource identifier (application ID URI).", scope))
		return "", false
	}
	return strings.ToLower(strings.TrimSuffix(scope, "/.default")), true
}

// checkBearer reports whether the request carries a live token for one of
// the audiences; it writes the 401 itself when not.
func (s *Server) checkBearer(w http.ResponseWriter, r *http.Request, audiences map[string]bool) bool {
	token, found := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	s.mu.Lock()
	issued, known := s.tokens[token]
	s.mu.Unlock()
	switch {
	case !found || !known:
		http.Error(w, "Authorization has been denied for this request.", http.StatusUnauthorized)
	case !s.now().Before(issued.expiry):
		http.Error(w, "The access token has expired.", http.StatusUnauthorized)
	case !audiences[issued.audience]:
		http.Error(w, fmt.Sprintf("Invalid audience %q.", issued.audience), http.StatusUnauthorized)
	default:
		return true
	}
	return false
}

func writeAADError(w http.ResponseWriter, status int, code string, aadsts int, description string) {
	writeJSON(w, status, map[string]any{
		"error": code,
		"error_description": fmt.Sprintf("AADSTS%d: %s\r\nTrace ID: %s\r\nCorrelation ID: %s\r\nTimestamp: %s",
			aadsts, description, randomUUID(), randomUUID(), time.Now().UTC().Format("2006-01-02 15:04:05Z")),
		"error_codes":    []int{aadsts},
		"trace_id":       randomUUID(),
		"correlation_id": randomUUID(),
		"error_uri":      fmt.Sprintf("https://login.microsoftonline.com/error?code=%d", aadsts),
	})
}

func writeJSON(w http.ResponseWriter, status int, body any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(body) //nolint:errcheck // the client may have gone; nothing to do then
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b) // crypto/rand.Read never fails on supported platforms
	return hex.EncodeToString(b)
}

func randomUUID() string {
	h := randomHex(16)
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}
