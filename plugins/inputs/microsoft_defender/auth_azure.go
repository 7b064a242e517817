package microsoft_defender

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rsa"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/cloud"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"software.sslmate.com/src/go-pkcs12"

	"github.com/influxdata/telegraf/config"
)

// bypassMSALCache, as claims, makes MSAL skip its process-wide managed identity cache, which would hand
// back a refused token (MSAL sends no claims).
const bypassMSALCache = `{"access_token":{}}`

// Size caps: a sign-in answer is a few KiB, a projected service account token about 1 KiB.
const (
	maxSignInAnswer    = 1 << 20
	maxFederatedToken  = 64 << 10
	maxCertificateFile = 1 << 20
)

// signInFunc gets a token through t, a new signInTransport.
type signInFunc func(ctx context.Context, t *signInTransport) (token string, expiry time.Time, err error)

// signIn is a cached token source that gets each token with get, as method (named in errors, but for the
// client secret and refresh token), from login (nil for a managed identity).
func (m *MicrosoftDefender) signIn(client *http.Client, login *url.URL, get signInFunc) tokenSource {
	method, tenant, now := strings.ReplaceAll(m.AuthMethod, "_", " "), m.TenantID, m.now
	if m.AuthMethod == methodClientSecret || m.AuthMethod == methodRefreshToken {
		method = ""
	}
	return &cachedToken{fetch: func(ctx context.Context) (string, time.Time, error) {
		t := &signInTransport{client: client, login: login, tenant: tenant, now: now}
		tok, expiry, err := get(ctx, t)
		last := t.seen()
		var e *tokenError
		switch {
		case err == nil && checkBearerToken(tok) == nil:
			return tok, expiry, nil
		case err == nil:
			e = &tokenError{host: last.host, msg: "the access_token it answered cannot be sent: " + checkBearerToken(tok).Error()}
		case last.host != "" || last.file:
			e = &last
		default: // nothing was sent: the text is the library's or a secret store's, not an answer's, which may echo secrets
			line, _, _ := strings.Cut(strings.TrimSpace(err.Error()), "\n")
			e = &tokenError{msg: sanitize(line, maxBodySnippet)}
		}
		e.method = method
		return "", time.Time{}, e
	}}
}

// azureCredential signs in with azidentity: client secret, client certificate, workload or managed
// identity. Each token comes from a new credential, so that MSAL's cache never hands back a refused one.
func (m *MicrosoftDefender) azureCredential(client *http.Client, login *url.URL) (tokenSource, error) {
	tenant, clientID, scopes, claims, authority := m.TenantID, m.ClientID, m.Scopes, "", ""
	if login != nil {
		// azidentity takes https authorities only: plain http on loopback goes through the token endpoint signInTransport names.
		authority = "https://" + login.Host + strings.TrimSuffix(login.Path, "/") + "/"
	}
	options := func(t *signInTransport) azcore.ClientOptions {
		return azcore.ClientOptions{Cloud: cloud.Configuration{ActiveDirectoryAuthorityHost: authority}, Transport: t,
			Retry: policy.RetryOptions{MaxRetries: -1}} // the poll retries, within its deadline
	}
	var newCredential func(t *signInTransport) (azcore.TokenCredential, error)
	// DisableInstanceDiscovery: no request goes to another host.
	switch m.AuthMethod {
	case methodClientSecret:
		secret := &m.ClientSecret
		newCredential = func(t *signInTransport) (azcore.TokenCredential, error) {
			buf, err := secret.Get()
			if err != nil {
				return nil, fmt.Errorf("reading client_secret: %w", err)
			}
			defer buf.Destroy()
			return azidentity.NewClientSecretCredential(tenant, clientID, buf.String(), &azidentity.ClientSecretCredentialOptions{
				ClientOptions: options(t), DisableInstanceDiscovery: true})
		}
	case methodClientCertificate:
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
		newCredential = func(t *signInTransport) (azcore.TokenCredential, error) {
			return azidentity.NewClientCertificateCredential(tenant, clientID, certs, key, &azidentity.ClientCertificateCredentialOptions{
				ClientOptions: options(t), DisableInstanceDiscovery: true, SendCertificateChain: chain})
		}
	case methodWorkloadIdentity:
		// Not WorkloadIdentityCredential, which keeps the file's token ten minutes: a rotated one is used at once.
		file := m.FederatedTokenFile
		newCredential = func(t *signInTransport) (azcore.TokenCredential, error) {
			return azidentity.NewClientAssertionCredential(tenant, clientID, func(context.Context) (string, error) {
				return t.readFederatedToken(file)
			}, &azidentity.ClientAssertionCredentialOptions{ClientOptions: options(t), DisableInstanceDiscovery: true})
		}
	default:
		var id azidentity.ManagedIDKind
		switch {
		case m.ClientID != "" && m.ManagedIdentityResourceID != "":
			return nil, errors.New("client_id and managed_identity_resource_id cannot both be set: each names one user-assigned identity")
		case m.ClientID != "":
			id = azidentity.ClientID(m.ClientID)
		case m.ManagedIdentityResourceID != "":
			id = azidentity.ResourceID(m.ManagedIdentityResourceID)
		}
		claims, newCredential = bypassMSALCache, func(t *signInTransport) (azcore.TokenCredential, error) {
			return azidentity.NewManagedIdentityCredential(&azidentity.ManagedIdentityCredentialOptions{ClientOptions: options(t), ID: id})
		}
	}
	return m.signIn(client, login, func(ctx context.Context, t *signInTransport) (string, time.Time, error) {
		cred, err := newCredential(t)
		if err != nil {
			return "", time.Time{}, err
		}
		tok, err := cred.GetToken(ctx, policy.TokenRequestOptions{Scopes: scopes, Claims: claims})
		return tok.Token, tok.ExpiresOn, err
	}), nil
}

// signInTransport carries sign-in requests, for azidentity (Do) and x/oauth2 (RoundTrip). It answers
// tenant discovery itself and refuses origins other than login's, so that credentials go only to the
// configured host and scheme; it caps answers and keeps what the last request came to (azidentity keeps
// only text, which may quote an answer).
type signInTransport struct {
	client *http.Client
	login  *url.URL
	tenant string
	now    func() time.Time

	mu   sync.Mutex // guards last
	last tokenError
}

func (t *signInTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	return t.Do(req)
}

// Do implements azcore's policy.Transporter.
func (t *signInTransport) Do(req *http.Request) (*http.Response, error) {
	if t.login != nil && strings.HasSuffix(req.URL.Path, "/v2.0/.well-known/openid-configuration") {
		base := t.login.JoinPath(t.tenant)
		// MSAL checks that the issuer is the authority it was given.
		body := fmt.Sprintf(`{"token_endpoint":%q,"authorization_endpoint":%q,"issuer":%q}`, base.JoinPath("oauth2/v2.0/token"),
			base.JoinPath("oauth2/v2.0/authorize"), "https://"+req.URL.Host+"/"+t.tenant+"/v2.0")
		return &http.Response{StatusCode: http.StatusOK, Status: "200 OK", Header: http.Header{"Content-Type": {"application/json"}},
			Body: io.NopCloser(strings.NewReader(body)), Request: req}, nil
	}
	seen := &tokenError{host: req.URL.Host}
	var resp *http.Response
	var err error
	if t.login != nil && origin(req.URL) != origin(t.login) {
		seen.msg = "refused: sign-in credentials go only to " + origin(t.login)
		err = errors.New(seen.msg)
	} else if resp, err = t.client.Do(req); err == nil {
		body, readErr := io.ReadAll(io.LimitReader(resp.Body, maxSignInAnswer+1))
		resp.Body.Close()
		resp.Body = io.NopCloser(bytes.NewReader(body))
		switch {
		case readErr != nil:
			resp, err = nil, readErr
		case len(body) > maxSignInAnswer:
			seen.msg = fmt.Sprintf("its answer is larger than %d MiB", maxSignInAnswer>>20)
			resp, err = nil, errors.New(seen.msg)
		case resp.StatusCode >= 400:
			seen = describeAnswer(seen.host, resp, body, t.now())
		default:
			seen.msg = fmt.Sprintf("its answer (HTTP %d) is not a token that could be read", resp.StatusCode)
		}
	}
	if seen.msg == "" && seen.status == 0 {
		seen.err = bare(err)
	}
	t.mu.Lock()
	t.last = *seen
	t.mu.Unlock()
	return resp, err
}

func (t *signInTransport) seen() tokenError {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.last
}

// readFederatedToken reads federated_token_file at each use, as the kubelet rotates it.
func (t *signInTransport) readFederatedToken(path string) (string, error) {
	data, err := readSmallFile(path, maxFederatedToken)
	token := string(bytes.TrimSpace(data))
	if err == nil && token == "" {
		err = errors.New("the file is empty")
	}
	if err == nil {
		return token, nil
	}
	err = fmt.Errorf("reading federated_token_file %q: %w", path, err)
	t.mu.Lock()
	t.last = tokenError{file: true, msg: err.Error()}
	t.mu.Unlock()
	return "", err
}

// readSmallFile reads a regular file of at most limit bytes, opened non-blocking so a FIFO cannot hang.
func readSmallFile(path string, limit int64) ([]byte, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, bare(err)
	}
	defer f.Close()
	switch info, err := f.Stat(); {
	case err != nil:
		return nil, bare(err)
	case !info.Mode().IsRegular():
		return nil, errors.New(describeFileMode(info.Mode()) + ", not a regular file")
	}
	data, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err == nil && int64(len(data)) > limit {
		err = fmt.Errorf("the file is larger than %d KiB", limit>>10)
	}
	return data, bare(err)
}

// loadCertificate reads client_certificate: PEM with an unencrypted key, or PKCS#12. The certificate of
// the key comes first.
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
	data, err := readSmallFile(path, maxCertificateFile)
	isPEM := bytes.Contains(data, []byte("-----BEGIN"))
	switch {
	case err != nil:
		return nil, nil, err
	case isPEM && (!password.Empty() || bytes.Contains(data, []byte("ENCRYPTED"))):
		return nil, nil, errors.New("the key of a PEM file must not be encrypted (client_certificate_password is for " +
			"PKCS#12 files): use an unencrypted key, or a PKCS#12 file with client_certificate_password")
	case isPEM:
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
