package microsoft_defender

import (
	"bytes"
	"cmp"
	"context"
	"crypto"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/cloud"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"
	"software.sslmate.com/src/go-pkcs12"

	"github.com/influxdata/telegraf/config"
)

const (
	// The values of auth_method.
	methodClientSecret      = "client_secret"
	methodClientCertificate = "client_certificate"
	methodManagedIdentity   = "managed_identity"
	methodWorkloadIdentity  = "workload_identity"
	methodRefreshToken      = "refresh_token"
	methodAccessToken       = "access_token"
	// The environment AKS workload identity projects into a pod.
	envFederatedTokenFile = "AZURE_FEDERATED_TOKEN_FILE"
	envClientID           = "AZURE_CLIENT_ID"
	envTenantID           = "AZURE_TENANT_ID"
	envAuthorityHost      = "AZURE_AUTHORITY_HOST"
	// Size caps: a sign-in answer is a few KiB, a projected service account token about 1 KiB.
	maxSignInAnswer    = 1 << 20
	maxFederatedToken  = 64 << 10
	maxCertificateFile = 1 << 20
	// bypassMSALCache, as claims, skips MSAL's process-wide managed identity cache, which would hand back a refused token.
	bypassMSALCache  = `{"access_token":{}}`
	tokenRenewBefore = 2 * time.Minute // so that a token cannot expire in use
)

var authMethods = []string{methodClientSecret, methodClientCertificate, methodManagedIdentity, methodWorkloadIdentity,
	methodRefreshToken, methodAccessToken}

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
	region := "https://" + cmp.Or(apiSites[m.API].regions[m.Region].loginHost, "login.microsoftonline.com")
	authorityHost := map[bool]string{true: os.Getenv(envAuthorityHost)}[m.AuthMethod == methodWorkloadIdentity]
	return parseEndpoint("login_endpoint", cmp.Or(m.LoginEndpoint, authorityHost, region))
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

// signInFunc gets a token through t, a new signInTransport.
type signInFunc func(ctx context.Context, t *signInTransport) (token string, expiry time.Time, err error)

// signIn is a cached token source that gets each token with get from login (nil for a managed identity).
func (m *MicrosoftDefender) signIn(client *http.Client, login *url.URL, get signInFunc) tokenSource {
	method, tenant, now := strings.ReplaceAll(m.AuthMethod, "_", " "), m.TenantID, m.now
	if m.AuthMethod == methodClientSecret || m.AuthMethod == methodRefreshToken {
		method = "" // the methods signing in with a client secret are not named in errors
	}
	return &cachedToken{fetch: func(ctx context.Context) (string, time.Time, error) {
		t := &signInTransport{client: client, login: login, tenant: tenant, now: now}
		tok, expiry, err := get(ctx, t)
		e := &t.last
		switch {
		case err == nil && checkBearerToken(tok) == nil:
			return tok, expiry, nil
		case err == nil:
			e.msg = "the access_token it answered cannot be sent: " + checkBearerToken(tok).Error()
		case e.host == "" && e.msg == "":
			// Nothing was sent: the text is not an answer's, which may echo secrets.
			line, _, _ := strings.Cut(strings.TrimSpace(err.Error()), "\n")
			e.msg = sanitize(line, maxBodySnippet)
		}
		e.method = method
		return "", time.Time{}, e
	}}
}

// azureCredential signs in with azidentity, a new credential per token: MSAL's cache would hand back a refused one.
func (m *MicrosoftDefender) azureCredential(client *http.Client, login *url.URL) (tokenSource, error) {
	method, tenant, clientID, secret, file := m.AuthMethod, m.TenantID, m.ClientID, &m.ClientSecret, m.FederatedTokenFile
	certFile, certPassword := m.ClientCertificate, &m.ClientCertificatePassword
	var id azidentity.ManagedIDKind
	switch {
	case method == methodClientCertificate:
		certs, _, err := loadCertificate(certFile, certPassword) // checked at start; read again at each sign-in
		if err != nil {
			return nil, err
		}
		if m.now().After(certs[0].NotAfter) {
			m.Log.Warnf("The certificate in client_certificate expired on %s: Azure AD refuses it until a new one is registered and configured",
				certs[0].NotAfter.UTC().Format(time.RFC3339))
		}
	case method != methodManagedIdentity:
	case m.ClientID != "" && m.ManagedIdentityResourceID != "":
		return nil, errors.New("client_id and managed_identity_resource_id cannot both be set: each names one user-assigned identity")
	case m.ClientID != "":
		id = azidentity.ClientID(m.ClientID)
	case m.ManagedIdentityResourceID != "":
		id = azidentity.ResourceID(m.ManagedIdentityResourceID)
	}
	authority := ""
	if login != nil {
		// azidentity takes https authorities only: plain http on loopback goes through the token endpoint signInTransport names.
		authority = "https://" + login.Host + strings.TrimSuffix(login.Path, "/") + "/"
	}
	scopes, chain := m.Scopes, m.SendCertificateChain
	return m.signIn(client, login, func(ctx context.Context, t *signInTransport) (string, time.Time, error) {
		opts := azcore.ClientOptions{Cloud: cloud.Configuration{ActiveDirectoryAuthorityHost: authority}, Transport: t,
			Retry: policy.RetryOptions{MaxRetries: -1}} // the poll retries, within its deadline
		var cred azcore.TokenCredential
		var err error
		claims := ""
		// DisableInstanceDiscovery: no request goes to another host.
		switch method {
		case methodClientSecret:
			var s string
			if s, err = readSecret("client_secret", secret); err == nil {
				cred, err = azidentity.NewClientSecretCredential(tenant, clientID, s,
					&azidentity.ClientSecretCredentialOptions{ClientOptions: opts, DisableInstanceDiscovery: true})
			}
		case methodClientCertificate: // read at each sign-in, as the federated token is: a renewed one needs no restart
			var certs []*x509.Certificate
			var key *rsa.PrivateKey
			if certs, key, err = loadCertificate(certFile, certPassword); err == nil {
				cred, err = azidentity.NewClientCertificateCredential(tenant, clientID, certs, key,
					&azidentity.ClientCertificateCredentialOptions{ClientOptions: opts, DisableInstanceDiscovery: true, SendCertificateChain: chain})
			}
		case methodWorkloadIdentity:
			// Not WorkloadIdentityCredential, which keeps the file's token ten minutes: the kubelet's rotated one is used at once.
			read := func(context.Context) (string, error) {
				data, err := readSmallFile(file, maxFederatedToken)
				if err != nil { // kept whole: azidentity would prefix its name
					t.last.msg = fmt.Sprintf("reading federated_token_file %q: %v", file, err)
					return "", errors.New(t.last.msg)
				}
				return string(bytes.TrimSpace(data)), nil
			}
			cred, err = azidentity.NewClientAssertionCredential(tenant, clientID, read,
				&azidentity.ClientAssertionCredentialOptions{ClientOptions: opts, DisableInstanceDiscovery: true})
		default:
			claims = bypassMSALCache
			cred, err = azidentity.NewManagedIdentityCredential(&azidentity.ManagedIdentityCredentialOptions{ClientOptions: opts, ID: id})
		}
		if err != nil {
			return "", time.Time{}, err
		}
		tok, err := cred.GetToken(ctx, policy.TokenRequestOptions{Scopes: scopes, Claims: claims})
		return tok.Token, tok.ExpiresOn, err
	}), nil
}

// refreshGrant redeems the portal's refresh token at Azure AD's v1 endpoint; azidentity has no refresh token credential.
func (m *MicrosoftDefender) refreshGrant(tokenURL string) signInFunc {
	clientID, clientSecret, refreshToken, resource := m.ClientID, &m.ClientSecret, &m.RefreshToken, strings.TrimSuffix(m.Scopes[0], "/.default")
	return func(ctx context.Context, t *signInTransport) (string, time.Time, error) {
		secret, secretErr := readSecret("client_secret", clientSecret)
		refresh, refreshErr := readSecret("refresh_token", refreshToken)
		if err := cmp.Or(secretErr, refreshErr); err != nil {
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

// signInTransport carries one token's sign-in requests only to login's origin (answering tenant discovery itself),
// caps answers and keeps what the last request came to: azidentity keeps only text, which may quote the answer.
type signInTransport struct {
	client *http.Client
	login  *url.URL
	tenant string
	now    func() time.Time
	last   tokenError
}

// RoundTrip implements http.RoundTripper, for x/oauth2.
func (t *signInTransport) RoundTrip(req *http.Request) (*http.Response, error) { return t.Do(req) }

// Do implements azcore's policy.Transporter, for azidentity.
func (t *signInTransport) Do(req *http.Request) (*http.Response, error) {
	if t.login != nil && strings.HasSuffix(req.URL.Path, "/v2.0/.well-known/openid-configuration") {
		base := t.login.JoinPath(t.tenant)
		// MSAL checks that the issuer is the authority it was given.
		body := fmt.Sprintf(`{"token_endpoint":%q,"authorization_endpoint":%q,"issuer":%q}`, base.JoinPath("oauth2/v2.0/token"),
			base.JoinPath("oauth2/v2.0/authorize"), "https://"+req.URL.Host+"/"+t.tenant+"/v2.0")
		return &http.Response{StatusCode: http.StatusOK, Status: "200 OK", Header: http.Header{"Content-Type": {"application/json"}},
			Body: io.NopCloser(strings.NewReader(body)), Request: req}, nil
	}
	t.last = tokenError{host: req.URL.Host}
	if t.login != nil && origin(req.URL) != origin(t.login) {
		t.last.msg = "refused: sign-in credentials go only to " + origin(t.login)
		return nil, errors.New(t.last.msg)
	}
	resp, err := t.client.Do(req)
	var body []byte
	if err == nil {
		defer resp.Body.Close()
		body, err = io.ReadAll(io.LimitReader(resp.Body, maxSignInAnswer+1))
		resp.Body = io.NopCloser(bytes.NewReader(body))
	}
	switch {
	case err != nil:
		t.last.err = bare(err)
		return nil, err
	case len(body) > maxSignInAnswer:
		t.last.msg = fmt.Sprintf("its answer is larger than %d MiB", maxSignInAnswer>>20)
		return nil, errors.New(t.last.msg)
	case resp.StatusCode >= 400:
		t.last = *describeAnswer(req.URL.Host, resp, body, t.now())
	default:
		t.last.msg = fmt.Sprintf("its answer (HTTP %d) is not a token that could be read", resp.StatusCode)
	}
	return resp, nil
}

// tokenError is a failed sign-in. Its message names the method, host, status, OAuth code and AADSTS number, and a known fix.
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
	msg = strings.TrimPrefix(e.method+": "+msg, ": ")
	fix := cmp.Or(aadstsAdvice[e.aadsts+"/"+e.method], aadstsAdvice[e.aadsts])
	switch mi := e.method == "managed identity"; {
	case mi && e.err != nil:
		fix = "No managed identity endpoint answered: the plugin runs outside Azure, or a firewall or proxy blocks IMDS " +
			"(169.254.169.254: add it to NO_PROXY); on App Service, Functions or Arc IDENTITY_ENDPOINT must be set"
	case mi && e.status == http.StatusBadRequest:
		fix = "The managed identity is not assigned to this resource: enable the system-assigned one, or assign the user-assigned one"
	}
	if fix != "" {
		msg += ". " + fix // what fixes it, in the message Telegraf logs at start-up (probe) and at each poll
	}
	return msg
}

func (e *tokenError) Unwrap() error { return e.err }

// aadstsAdvice is the fix per AADSTS number (qualified by the method where it means more than one thing), for the
// common failures.
var aadstsAdvice = map[string]string{
	"7000215": "The client secret is wrong, or is the secret's ID rather than its value: create a new client secret for the app " +
		"and set its value as client_secret",
	"7000222": "The client secret has expired: create a new client secret for the app and set its value as client_secret",
	"700016":  "No app with this client_id exists in the tenant: check client_id, and that tenant_id is the app's tenant",
	"90002":   "The tenant does not exist: check tenant_id, and that login_endpoint (or region) is the tenant's cloud",
	"700027": "Azure AD refused the certificate: register the one in client_certificate on the app (Certificates & secrets), " +
		"a new one if it expired, or set send_certificate_chain = true for subject name/issuer authentication",
	"70021": "No federated credential of the app matches the token: add one with the cluster's OIDC issuer, the subject " +
		"system:serviceaccount:NAMESPACE:NAME and the audience api://AzureADTokenExchange",
	"700024/workload identity": "The federated token has expired: federated_token_file must be the token the kubelet rotates",
}

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
	e := &tokenError{host: host, status: resp.StatusCode, msg: "HTTP " + statusText(resp.StatusCode)}
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
	i := strings.IndexFunc(tok[:end], func(c rune) bool {
		return !strings.ContainsRune("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~+/", c)
	})
	switch {
	case end == 0:
		return errors.New("it is empty")
	case i < 0:
		return nil
	case tok[i] == '=':
		return fmt.Errorf("byte %d is '=', allowed only as padding at the end of a bearer token (RFC 6750)", i)
	}
	return fmt.Errorf("byte %d is 0x%02x, not allowed in a bearer token (RFC 6750)", i, tok[i])
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

// readSmallFile reads a regular file, not empty, of at most limit bytes; opened non-blocking, a FIFO cannot hang.
func readSmallFile(path string, limit int64) ([]byte, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, bare(err)
	}
	defer f.Close()
	info, err := f.Stat()
	var data []byte
	if err == nil && info.Mode().IsRegular() {
		data, err = io.ReadAll(io.LimitReader(f, limit+1))
	}
	switch {
	case err != nil:
		return nil, bare(err)
	case !info.Mode().IsRegular():
		return nil, errors.New(describeFileMode(info.Mode()) + ", not a regular file")
	case int64(len(data)) > limit:
		return nil, fmt.Errorf("the file is larger than %d KiB", limit>>10)
	case len(bytes.TrimSpace(data)) == 0:
		return nil, errors.New("the file is empty")
	}
	return data, nil
}

// loadCertificate reads client_certificate (PEM with an unencrypted key, or PKCS#12), the key's certificate first.
func loadCertificate(path string, password *config.Secret) (certs []*x509.Certificate, rsaKey *rsa.PrivateKey, err error) {
	defer func() {
		if err != nil {
			err = fmt.Errorf("client_certificate %q: %w", path, err)
		}
	}()
	data, err := readSmallFile(path, maxCertificateFile)
	pass, passErr := readSecret("client_certificate_password", password)
	var key crypto.PrivateKey
	var cert *x509.Certificate
	switch isPEM := bytes.Contains(data, []byte("-----BEGIN")); {
	case err != nil || passErr != nil:
		return nil, nil, cmp.Or(err, passErr)
	case isPEM && (pass != "" || bytes.Contains(data, []byte("ENCRYPTED"))):
		return nil, nil, errors.New("the key of a PEM file must not be encrypted (client_certificate_password is for " +
			"PKCS#12 files): use an unencrypted key, or a PKCS#12 file with client_certificate_password")
	case isPEM:
		if certs, key, err = azidentity.ParseCertificates(data, nil); err != nil {
			return nil, nil, fmt.Errorf("not a PEM file with a certificate and an unencrypted RSA key: %w", err)
		}
	default: // go-pkcs12, unlike azidentity.ParseCertificates, reads OpenSSL 3's AES/PBKDF2 files
		if key, cert, certs, err = pkcs12.DecodeChain(data, pass); errors.Is(err, pkcs12.ErrIncorrectPassword) {
			return nil, nil, errors.New("the PKCS#12 file's password is wrong or missing: check client_certificate_password")
		} else if err != nil {
			return nil, nil, fmt.Errorf("not a PKCS#12 file with one key and its certificate: %w", err)
		}
		certs = append([]*x509.Certificate{cert}, certs...)
	}
	rsaKey, _ = key.(*rsa.PrivateKey)
	for i, c := range certs {
		if rsaKey != nil && rsaKey.PublicKey.Equal(c.PublicKey) {
			certs[0], certs[i] = certs[i], certs[0]
			return certs, rsaKey, nil
		}
	}
	return nil, nil, errors.New("the private key does not match the certificate, or is not the RSA key Azure AD's client assertions need")
}
