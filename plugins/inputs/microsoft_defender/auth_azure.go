package microsoft_defender

import (
	"bytes"
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
	"strings"
	"sync"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/cloud"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	azruntime "github.com/Azure/azure-sdk-for-go/sdk/azcore/runtime"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"software.sslmate.com/src/go-pkcs12"

	"github.com/influxdata/telegraf/config"
)

// bypassMSALCache, as claims, makes MSAL skip its process-wide managed
// identity cache, which would hand back a refused token (MSAL sends no claims).
const bypassMSALCache = `{"access_token":{}}`

// azureCredential is the token source of client secret, client certificate
// and workload identity, through azidentity.
func (m *MicrosoftDefender) azureCredential(client *http.Client, login *url.URL) (tokenSource, error) {
	tenant, clientID := m.TenantID, m.ClientID
	source := &azureSource{client: client, scopes: m.Scopes, now: m.now, login: login, tenant: tenant}
	// azidentity takes https authorities only: plain http on loopback goes
	// through the token endpoint azureTransport names.
	authority := "https://" + login.Host + strings.TrimSuffix(login.Path, "/") + "/"
	options := func(transport policy.Transporter) azcore.ClientOptions {
		return azcore.ClientOptions{
			Cloud:     cloud.Configuration{ActiveDirectoryAuthorityHost: authority},
			Transport: transport,
			// The poll retries, within its deadline.
			Retry: policy.RetryOptions{MaxRetries: -1},
		}
	}
	// DisableInstanceDiscovery: no request goes to another host.
	switch m.AuthMethod {
	case methodClientSecret:
		secret := &m.ClientSecret
		source.newCredential = func(transport policy.Transporter) (azcore.TokenCredential, error) {
			buf, err := secret.Get()
			if err != nil {
				return nil, fmt.Errorf("reading client_secret: %w", err)
			}
			defer buf.Destroy()
			return azidentity.NewClientSecretCredential(tenant, clientID, buf.String(), &azidentity.ClientSecretCredentialOptions{
				ClientOptions: options(transport), DisableInstanceDiscovery: true})
		}
	case methodClientCertificate:
		source.method = "client certificate"
		certs, key, err := loadCertificate(m.ClientCertificate, &m.ClientCertificatePassword)
		if err != nil {
			return nil, err
		}
		switch now := m.now(); {
		case now.After(certs[0].NotAfter):
			m.Log.Warnf("The certificate in client_certificate expired on %s: Azure AD refuses it until a new one is registered and configured",
				certs[0].NotAfter.UTC().Format(time.RFC3339))
		case now.Before(certs[0].NotBefore):
			m.Log.Warnf("The certificate in client_certificate is valid only from %s", certs[0].NotBefore.UTC().Format(time.RFC3339))
		}
		chain := m.SendCertificateChain
		source.newCredential = func(transport policy.Transporter) (azcore.TokenCredential, error) {
			return azidentity.NewClientCertificateCredential(tenant, clientID, certs, key, &azidentity.ClientCertificateCredentialOptions{
				ClientOptions: options(transport), DisableInstanceDiscovery: true, SendCertificateChain: chain})
		}
	default:
		source.method = "workload identity"
		source.federatedTokenFile = m.FederatedTokenFile
		source.newCredential = func(transport policy.Transporter) (azcore.TokenCredential, error) {
			// Not WorkloadIdentityCredential, which keeps the file's token
			// for ten minutes: a rotated token is used at once.
			return azidentity.NewClientAssertionCredential(tenant, clientID, source.readFederatedToken,
				&azidentity.ClientAssertionCredentialOptions{ClientOptions: options(transport), DisableInstanceDiscovery: true})
		}
	}
	return &cachedToken{fetch: source.fetch}, nil
}

func (m *MicrosoftDefender) managedIdentity(client *http.Client) (tokenSource, error) {
	if m.ClientID != "" && m.ManagedIdentityResourceID != "" {
		return nil, errors.New("client_id and managed_identity_resource_id cannot both be set: each names one user-assigned identity")
	}
	var id azidentity.ManagedIDKind
	switch {
	case m.ClientID != "":
		id = azidentity.ClientID(m.ClientID)
	case m.ManagedIdentityResourceID != "":
		id = azidentity.ResourceID(m.ManagedIdentityResourceID)
	}
	source := &azureSource{method: "managed identity", client: client, scopes: m.Scopes, claims: bypassMSALCache, now: m.now}
	source.newCredential = func(transport policy.Transporter) (azcore.TokenCredential, error) {
		return azidentity.NewManagedIdentityCredential(&azidentity.ManagedIdentityCredentialOptions{
			ClientOptions: azcore.ClientOptions{Transport: transport, Retry: policy.RetryOptions{MaxRetries: -1}}, ID: id})
	}
	return &cachedToken{fetch: source.fetch}, nil
}

// azureSource fetches tokens with a new azidentity credential each time, so
// that MSAL's cache never hands back a refused token; cachedToken caches.
type azureSource struct {
	method        string // named in errors; empty for client_secret
	client        *http.Client
	login         *url.URL // the configured sign-in host; nil for managed identity
	tenant        string
	scopes        []string
	claims        string
	newCredential func(policy.Transporter) (azcore.TokenCredential, error)
	now           func() time.Time

	federatedTokenFile string
	// mu guards fileErr, the last failure to read federatedTokenFile.
	mu      sync.Mutex
	fileErr error
}

func (a *azureSource) fetch(ctx context.Context) (string, time.Time, error) {
	a.mu.Lock()
	a.fileErr = nil
	a.mu.Unlock()
	transport := &azureTransport{client: a.client, login: a.login, tenant: a.tenant}
	cred, err := a.newCredential(transport)
	if err != nil {
		return "", time.Time{}, &azureTokenError{method: a.method, msg: firstLine(err)}
	}
	tok, err := cred.GetToken(ctx, policy.TokenRequestOptions{Scopes: a.scopes, Claims: a.claims})
	if err != nil {
		return "", time.Time{}, a.describe(err, transport)
	}
	if err := checkBearerToken(tok.Token); err != nil {
		return "", time.Time{}, &azureTokenError{method: a.method, tok: &tokenError{host: transport.last().host,
			msg: "the access_token it answered cannot be sent: " + err.Error()}}
	}
	return tok.Token, tok.ExpiresOn, nil
}

// readFederatedToken is the workload identity credential's assertion.
func (a *azureSource) readFederatedToken(context.Context) (string, error) {
	data, err := os.ReadFile(a.federatedTokenFile)
	token := string(bytes.TrimSpace(data))
	if err == nil && token == "" {
		err = errors.New("the file is empty")
	}
	if err == nil {
		return token, nil
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.fileErr = fmt.Errorf("%q: %w", a.federatedTokenFile, bare(err))
	return "", a.fileErr
}

// describe turns azidentity's error into an azureTokenError, quoting its text
// only when no answer came: it quotes answers, which may echo secrets.
func (a *azureSource) describe(err error, transport *azureTransport) error {
	a.mu.Lock()
	fileErr := a.fileErr
	a.mu.Unlock()
	last := transport.last()
	var failed *azidentity.AuthenticationFailedError
	switch {
	case fileErr != nil:
		return &azureTokenError{method: a.method, file: true, msg: fileErr.Error()}
	case errors.As(err, &failed) && failed.RawResponse != nil:
		return &azureTokenError{method: a.method, tok: a.describeResponse(failed.RawResponse, last.host)}
	case last.err != nil:
		return &azureTokenError{method: a.method, tok: &tokenError{host: last.host, err: last.err}}
	case last.status != 0:
		return &azureTokenError{method: a.method, tok: &tokenError{host: last.host, status: 0,
			msg: fmt.Sprintf("its answer (HTTP %d) is not a token the Azure SDK could read", last.status)}}
	}
	return &azureTokenError{method: a.method, msg: firstLine(err)}
}

func (a *azureSource) describeResponse(resp *http.Response, host string) *tokenError {
	if resp.Request != nil {
		host = resp.Request.URL.Host
	}
	// Azure AD answers {error, error_description}; App Service {statusCode, message}.
	var answer struct {
		Error       string `json:"error"`
		Description string `json:"error_description"`
	}
	if body, err := azruntime.Payload(resp); err == nil {
		json.Unmarshal(body, &answer) //nolint:errcheck // an answer that is not JSON has no code to name
	}
	return describeAnswer(host, resp, answer.Error, answer.Description, a.now())
}

// firstLine is an Azure SDK message's first line, safe for a log line.
func firstLine(err error) string {
	line, _, _ := strings.Cut(strings.TrimSpace(err.Error()), "\n")
	return sanitize(line, maxBodySnippet)
}

// azureTransport is the plugin's HTTP client for azidentity. It answers tenant
// discovery itself, so the token request is the only request and goes to the
// configured host and scheme, and it keeps the last answer's host, status
// and error, of which azidentity keeps only text.
type azureTransport struct {
	client *http.Client
	login  *url.URL
	tenant string

	mu     sync.Mutex // guards answer
	answer answerSeen
}

type answerSeen struct {
	host   string
	status int
	err    error
}

// Do implements azcore's policy.Transporter.
func (t *azureTransport) Do(req *http.Request) (*http.Response, error) {
	if t.login != nil && strings.HasSuffix(req.URL.Path, "/v2.0/.well-known/openid-configuration") {
		base := t.login.JoinPath(t.tenant)
		body, err := json.Marshal(map[string]string{
			"token_endpoint":         base.JoinPath("oauth2/v2.0/token").String(),
			"authorization_endpoint": base.JoinPath("oauth2/v2.0/authorize").String(),
			// MSAL checks that the issuer is the authority it was given.
			"issuer": "https://" + req.URL.Host + "/" + t.tenant + "/v2.0",
		})
		return &http.Response{StatusCode: http.StatusOK, Status: "200 OK", Header: http.Header{"Content-Type": {"application/json"}},
			Body: io.NopCloser(bytes.NewReader(body)), Request: req}, err
	}
	resp, err := t.client.Do(req)
	seen := answerSeen{host: req.URL.Host, err: bare(err)}
	if resp != nil {
		seen.status = resp.StatusCode
	}
	t.mu.Lock()
	t.answer = seen
	t.mu.Unlock()
	return resp, err
}

func (t *azureTransport) last() answerSeen {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.answer
}

// azureTokenError is a failed azidentity token request: a *tokenError (for
// retries and advice), an unreadable federated token file, or the library's.
type azureTokenError struct {
	method string
	tok    *tokenError
	file   bool // msg says why federated_token_file could not be read
	msg    string
}

func (e *azureTokenError) Error() string {
	prefix := ""
	if e.method != "" {
		prefix = e.method + ": "
	}
	switch {
	case e.tok != nil:
		return prefix + e.tok.Error()
	case e.file:
		return prefix + "reading federated_token_file " + e.msg
	}
	return prefix + e.msg
}

func (e *azureTokenError) Unwrap() error {
	if e.tok == nil {
		return nil
	}
	return e.tok
}

// loadCertificate reads client_certificate: PEM with an unencrypted key, or
// PKCS#12. The certificate of the key comes first.
func loadCertificate(path string, password *config.Secret) ([]*x509.Certificate, *rsa.PrivateKey, error) {
	certs, key, err := readCertificate(path, password)
	if err != nil {
		return nil, nil, fmt.Errorf("client_certificate %q: %w", path, err)
	}
	rsaKey, ok := key.(*rsa.PrivateKey)
	if !ok {
		return nil, nil, fmt.Errorf("client_certificate %q: the key is a %T, Azure AD's client assertions need an RSA key", path, key)
	}
	for i, c := range certs {
		if pub, isRSA := c.PublicKey.(*rsa.PublicKey); isRSA && pub.Equal(&rsaKey.PublicKey) {
			certs[0], certs[i] = certs[i], certs[0]
			return certs, rsaKey, nil
		}
	}
	return nil, nil, fmt.Errorf("client_certificate %q: the private key does not match the certificate", path)
}

func readCertificate(path string, password *config.Secret) ([]*x509.Certificate, crypto.PrivateKey, error) {
	data, err := os.ReadFile(path)
	switch {
	case err != nil:
		return nil, nil, bare(err)
	case bytes.Contains(data, []byte("-----BEGIN")) && (!password.Empty() || bytes.Contains(data, []byte("ENCRYPTED"))):
		return nil, nil, errors.New("the key of a PEM file must not be encrypted (client_certificate_password is for " +
			"PKCS#12 files): use an unencrypted key, or a PKCS#12 file with client_certificate_password")
	case bytes.Contains(data, []byte("-----BEGIN")):
		certs, key, err := azidentity.ParseCertificates(data, nil)
		if err != nil {
			return nil, nil, fmt.Errorf("not a PEM file with a certificate and an unencrypted RSA key: %w", err)
		}
		return certs, key, nil
	}
	var pass string
	if !password.Empty() {
		buf, err := password.Get()
		if err != nil {
			return nil, nil, fmt.Errorf("reading client_certificate_password: %w", err)
		}
		pass = buf.String()
		buf.Destroy()
	}
	// go-pkcs12, unlike azidentity.ParseCertificates, reads OpenSSL 3's AES/PBKDF2 files.
	key, cert, chain, err := pkcs12.DecodeChain(data, pass)
	if errors.Is(err, pkcs12.ErrIncorrectPassword) {
		return nil, nil, errors.New("the PKCS#12 file's password is wrong or missing: check client_certificate_password")
	}
	if err != nil {
		return nil, nil, fmt.Errorf("not a PKCS#12 file with one key and its certificate: %w", err)
	}
	return append([]*x509.Certificate{cert}, chain...), key, nil
}
