package microsoft_defender

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strings"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"

	"github.com/influxdata/telegraf/config"
)

// The values of auth_method.
const (
	methodClientSecret      = "client_secret"
	methodClientCertificate = "client_certificate"
	methodManagedIdentity   = "managed_identity"
	methodWorkloadIdentity  = "workload_identity"
	methodRefreshToken      = "refresh_token"
	methodAccessToken       = "access_token"
)

var authMethods = []string{methodClientSecret, methodClientCertificate, methodManagedIdentity, methodWorkloadIdentity,
	methodRefreshToken, methodAccessToken}

// The environment AKS workload identity projects into a pod.
const (
	envFederatedTokenFile = "AZURE_FEDERATED_TOKEN_FILE"
	envClientID           = "AZURE_CLIENT_ID"
	envTenantID           = "AZURE_TENANT_ID"
	envAuthorityHost      = "AZURE_AUTHORITY_HOST"
)

// tokenRenewBefore: a token is replaced this long before it expires, so it cannot expire in use.
const tokenRenewBefore = 2 * time.Minute

// checkAuthKeys refuses keys of other methods, naming theirs, and names the keys auth_method misses.
func (m *MicrosoftDefender) checkAuthKeys() error {
	if !slices.Contains(authMethods, m.AuthMethod) {
		return fmt.Errorf("auth_method %q is not supported: use %s", m.AuthMethod, quoteList(authMethods))
	}
	if m.AuthMethod == methodWorkloadIdentity { // as azidentity's WorkloadIdentityCredential
		m.TenantID, m.ClientID = cmp.Or(m.TenantID, os.Getenv(envTenantID)), cmp.Or(m.ClientID, os.Getenv(envClientID))
		m.FederatedTokenFile = cmp.Or(m.FederatedTokenFile, os.Getenv(envFederatedTokenFile))
	}
	aad := []string{methodClientSecret, methodClientCertificate, methodWorkloadIdentity, methodRefreshToken}
	secret, cert := []string{methodClientSecret, methodRefreshToken}, []string{methodClientCertificate}
	only := func(method string) []string { return []string{method} }
	var foreign, missing []string
	for _, k := range []struct {
		name          string
		set           bool
		usedBy, needs []string // the methods using and needing the key
	}{
		{"tenant_id", m.TenantID != "", aad, aad},
		{"client_id", m.ClientID != "", append(slices.Clone(aad), methodManagedIdentity), aad},
		{"client_secret", !m.ClientSecret.Empty(), secret, secret},
		{"refresh_token", !m.RefreshToken.Empty(), only(methodRefreshToken), only(methodRefreshToken)},
		{"access_token", !m.AccessToken.Empty(), only(methodAccessToken), only(methodAccessToken)},
		{"login_endpoint", m.LoginEndpoint != "", aad, nil},
		{"scopes", len(m.Scopes) > 0, authMethods[:5], nil},
		{"client_certificate", m.ClientCertificate != "", cert, cert},
		{"client_certificate_password", !m.ClientCertificatePassword.Empty(), cert, nil},
		{"send_certificate_chain", m.SendCertificateChain, cert, nil},
		{"managed_identity_resource_id", m.ManagedIdentityResourceID != "", only(methodManagedIdentity), nil},
		{"federated_token_file", m.FederatedTokenFile != "", only(methodWorkloadIdentity), only(methodWorkloadIdentity)},
	} {
		switch {
		case k.set && !slices.Contains(k.usedBy, m.AuthMethod):
			foreign = append(foreign, fmt.Sprintf("%s: only used with auth_method = %s", k.name, quoteList(k.usedBy)))
		case !k.set && slices.Contains(k.needs, m.AuthMethod):
			missing = append(missing, k.name)
		}
	}
	switch {
	case len(foreign) > 0:
		return errors.New(strings.Join(foreign, "; "))
	case len(missing) > 0 && m.AuthMethod == methodWorkloadIdentity:
		return fmt.Errorf("auth_method = %q needs %s (or %s, %s, %s)", m.AuthMethod, strings.Join(missing, ", "),
			envTenantID, envClientID, envFederatedTokenFile)
	case len(missing) > 0:
		return fmt.Errorf("auth_method = %q needs %s", m.AuthMethod, strings.Join(missing, ", "))
	}
	return nil
}

// quoteList is `"a", "b" or "c"`.
func quoteList(values []string) string {
	s := `"` + strings.Join(values, `", "`) + `"`
	if i := strings.LastIndex(s, ", "); i >= 0 {
		s = s[:i] + " or" + s[i+1:]
	}
	return s
}

// tokenSource returns the token source of auth_method.
func (m *MicrosoftDefender) tokenSource(client *http.Client) (tokenSource, error) {
	if err := m.checkAuthKeys(); err != nil {
		return nil, err
	}
	if m.AuthMethod == methodAccessToken {
		// A secret store not readable yet is read again at the poll.
		if tok, err := readSecret("access_token", &m.AccessToken); err == nil && checkBearerToken(tok) != nil {
			return nil, fmt.Errorf("access_token cannot be sent: %w", checkBearerToken(tok))
		}
		return &staticToken{secret: &m.AccessToken}, nil
	}
	if len(m.Scopes) == 0 {
		m.Scopes = []string{defaultSIEMResource + "/.default"}
	}
	if len(m.Scopes) != 1 && (m.AuthMethod == methodManagedIdentity || m.AuthMethod == methodRefreshToken) {
		return nil, fmt.Errorf("auth_method = %q takes one scope, got %d", m.AuthMethod, len(m.Scopes))
	}
	if m.AuthMethod == methodManagedIdentity {
		return m.azureCredential(client, nil)
	}
	if !validTenantID.MatchString(m.TenantID) {
		return nil, fmt.Errorf("tenant_id %q is not a tenant id or domain name", m.TenantID)
	}
	login, err := m.loginEndpoint()
	if err != nil {
		return nil, err
	}
	what := map[string]string{methodClientSecret: "client secret", methodRefreshToken: "client secret and refresh token",
		methodClientCertificate: "client assertion", methodWorkloadIdentity: "federated token"}[m.AuthMethod]
	if err := m.refuseProxyInClear("login_endpoint", login, what); err != nil {
		return nil, err
	}
	if m.AuthMethod == methodRefreshToken {
		return m.signIn(client, login, m.refreshGrant(login.JoinPath(m.TenantID, "oauth2/token").String())), nil
	}
	return m.azureCredential(client, login)
}

// loginEndpoint is login_endpoint, else (workload identity) AZURE_AUTHORITY_HOST, else the region's Azure AD host.
func (m *MicrosoftDefender) loginEndpoint() (*url.URL, error) {
	login := m.LoginEndpoint
	if login == "" && m.AuthMethod == methodWorkloadIdentity {
		login = os.Getenv(envAuthorityHost)
	}
	if login == "" {
		login = defaultLoginEndpoint
		if cloud, known := graphRegions[m.Region]; known && m.API != "siem" {
			login = "https://" + cloud.loginHost
		} else if m.Region == "gcc-high" {
			login = defaultLoginEndpointGovt
		}
	}
	return parseEndpoint("login_endpoint", login)
}

// tokenSource hands out bearer tokens for the API; invalidate forgets a refused one.
type tokenSource interface {
	token(ctx context.Context) (string, error)
	invalidate(token string)
}

// staticToken hands out access_token, read at every use so rotation works.
type staticToken struct{ secret *config.Secret }

func (s *staticToken) token(context.Context) (string, error) {
	tok, err := readSecret("access_token", s.secret)
	if err == nil && checkBearerToken(tok) != nil {
		return "", fmt.Errorf("access_token cannot be sent: %w", checkBearerToken(tok))
	}
	return tok, err
}

func (*staticToken) invalidate(string) {}

// cachedToken reuses a token until shortly before expiry or until refused.
type cachedToken struct {
	fetch   func(ctx context.Context) (string, time.Time, error)
	current string
	expiry  time.Time
}

func (c *cachedToken) token(ctx context.Context) (string, error) {
	if c.current != "" && (c.expiry.IsZero() || time.Until(c.expiry) > tokenRenewBefore) {
		return c.current, nil
	}
	tok, expiry, err := c.fetch(ctx)
	if err != nil {
		return "", err
	}
	c.current, c.expiry = tok, expiry
	return tok, nil
}

func (c *cachedToken) invalidate(token string) {
	if c.current == token {
		c.current = ""
	}
}

// refreshGrant redeems the portal's refresh token at Azure AD's v1 token endpoint (resource, not scope);
// azidentity has no refresh token credential.
func (m *MicrosoftDefender) refreshGrant(tokenURL string) signInFunc {
	clientID, clientSecret, refreshToken, resource := m.ClientID, &m.ClientSecret, &m.RefreshToken, strings.TrimSuffix(m.Scopes[0], "/.default")
	return func(ctx context.Context, t *signInTransport) (string, time.Time, error) {
		secret, err := readSecret("client_secret", clientSecret)
		refresh, refreshErr := readSecret("refresh_token", refreshToken)
		if err = cmp.Or(err, refreshErr); err != nil {
			return "", time.Time{}, err
		}
		// The refresh grant's form is clientcredentials' with another grant_type.
		cfg := clientcredentials.Config{ClientID: clientID, ClientSecret: secret, TokenURL: tokenURL, AuthStyle: oauth2.AuthStyleInParams,
			EndpointParams: url.Values{"grant_type": {"refresh_token"}, "refresh_token": {refresh}, "resource": {resource}}}
		tok, err := cfg.Token(context.WithValue(ctx, oauth2.HTTPClient, &http.Client{Transport: t}))
		if err != nil {
			return "", time.Time{}, err
		}
		if tok.RefreshToken != "" {
			rotated := config.NewSecret([]byte(tok.RefreshToken)) // the latest one Azure AD handed out
			refreshToken = &rotated
		}
		return tok.AccessToken, tok.Expiry, nil
	}
}

// readSecret is the value of the secret key.
func readSecret(key string, secret *config.Secret) (string, error) {
	buf, err := secret.Get()
	if err != nil {
		return "", fmt.Errorf("reading %s: %w", key, err)
	}
	defer buf.Destroy()
	return buf.String(), nil
}

// tokenError is a failed sign-in. Its message names the method, host, status, OAuth code and AADSTS number,
// nothing else: answers may echo secrets.
type tokenError struct {
	method     string // e.g. "managed identity"; empty for the methods signing in with a client secret
	host       string // empty when no request was sent
	status     int    // 0 when no answer came, or an answer that is not an error
	aadsts     string // Azure AD's error number, e.g. 7000215
	msg        string // the status and codes of an error answer, why no request was sent, or why an answer was refused
	retryAfter time.Duration
	capped     error // Retry-After asked for more than maxRetryAfter
	err        error // the transport's error when no answer came
}

func (e *tokenError) Error() string {
	msg := e.msg
	if e.err != nil {
		msg = e.err.Error()
	}
	if e.host != "" {
		msg = "token request to " + e.host + " failed: " + msg
	}
	return strings.TrimPrefix(e.method+": "+msg, ": ")
}

func (e *tokenError) Unwrap() error { return e.err }

// oauthErrorCodes (RFC 6749's, Azure AD's, IMDS's) are the only codes quoted: an echoed secret in their place is not.
var oauthErrorCodes = []string{"invalid_request", "invalid_client", "invalid_grant", "unauthorized_client",
	"unsupported_grant_type", "invalid_scope", "access_denied", "server_error", "temporarily_unavailable",
	"interaction_required", "invalid_resource", "invalid_tenant", "unknown_error"}

var aadstsNumber = regexp.MustCompile(`^AADSTS(\d{1,9})\b`)

// describeAnswer makes a tokenError of an error answer, Azure AD's {error, error_description} or another.
func describeAnswer(host string, resp *http.Response, body []byte, now time.Time) *tokenError {
	var answer struct {
		Error       string `json:"error"`
		Description string `json:"error_description"`
	}
	json.Unmarshal(body, &answer) //nolint:errcheck // an answer that is not JSON has no code to name
	e := &tokenError{host: host, status: resp.StatusCode, msg: "HTTP " + resp.Status}
	e.retryAfter, e.capped = parseRetryAfter(resp.Header.Get("Retry-After"), now, "token endpoint "+host)
	if slices.Contains(oauthErrorCodes, answer.Error) {
		e.msg += ": " + answer.Error
	}
	if m := aadstsNumber.FindStringSubmatch(answer.Description); m != nil {
		e.aadsts, e.msg = m[1], e.msg+" (AADSTS"+m[1]+")"
	}
	return e
}

// checkBearerToken refuses, without quoting it, a token RFC 6750's b64token does not allow (a line break adds headers).
func checkBearerToken(tok string) error {
	end := len(strings.TrimRight(tok, "="))
	if end == 0 {
		return errors.New("it is empty")
	}
	for i := range end {
		switch c := tok[i]; {
		case '0' <= c && c <= '9', 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', strings.IndexByte("-._~+/", c) >= 0:
		case c == '=':
			return fmt.Errorf("byte %d is '=', allowed only as padding at the end of a bearer token (RFC 6750)", i)
		default:
			return fmt.Errorf("byte %d is 0x%02x, not allowed in a bearer token (RFC 6750)", i, c)
		}
	}
	return nil
}
