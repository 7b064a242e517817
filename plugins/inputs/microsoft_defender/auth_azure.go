package microsoft_defender

import (
	"bytes"
	"cmp"
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
	"syscall"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/cloud"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"software.sslmate.com/src/go-pkcs12"

	"github.com/influxdata/telegraf/config"
)

// bypassMSALCache, as claims, skips MSAL's process-wide managed identity cache, which would hand back a refused token.
const bypassMSALCache = `{"access_token":{}}`

// Size caps: a sign-in answer is a few KiB, a projected service account token about 1 KiB.
const (
	maxSignInAnswer    = 1 << 20
	maxFederatedToken  = 64 << 10
	maxCertificateFile = 1 << 20
)

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

// azureCredential signs in with azidentity. Each token comes from a new credential, so that MSAL's cache never
// hands back a refused one.
func (m *MicrosoftDefender) azureCredential(client *http.Client, login *url.URL) (tokenSource, error) {
	method, tenant, clientID, secret, file := m.AuthMethod, m.TenantID, m.ClientID, &m.ClientSecret, m.FederatedTokenFile
	var certs []*x509.Certificate
	var key *rsa.PrivateKey
	var id azidentity.ManagedIDKind
	var err error
	switch {
	case method == methodClientCertificate:
		if certs, key, err = loadCertificate(m.ClientCertificate, &m.ClientCertificatePassword); err != nil {
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
		case methodClientCertificate:
			cred, err = azidentity.NewClientCertificateCredential(tenant, clientID, certs, key,
				&azidentity.ClientCertificateCredentialOptions{ClientOptions: opts, DisableInstanceDiscovery: true, SendCertificateChain: chain})
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

// signInTransport carries one token's sign-in requests. It answers tenant discovery itself and refuses origins
// other than login's, so that credentials go only to the configured host and scheme; it caps answers and keeps
// what the last request came to (azidentity keeps only text, which may quote the answer).
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
