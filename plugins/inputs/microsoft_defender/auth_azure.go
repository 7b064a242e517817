package microsoft_defender

import (
	"bytes"
	"context"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/cloud"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	azruntime "github.com/Azure/azure-sdk-for-go/sdk/azcore/runtime"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"golang.org/x/oauth2"
	"software.sslmate.com/src/go-pkcs12"

	"github.com/influxdata/telegraf/config"
)

// azureMode is an authentication mode implemented with the Azure SDK's
// azidentity; its name starts every token error of the mode.
type azureMode string

const (
	modeCertificate      azureMode = "client certificate"
	modeManagedIdentity  azureMode = "managed identity"
	modeWorkloadIdentity azureMode = "workload identity"
)

// The environment that AKS workload identity projects into a pod.
const (
	envFederatedTokenFile = "AZURE_FEDERATED_TOKEN_FILE"
	envClientID           = "AZURE_CLIENT_ID"
	envTenantID           = "AZURE_TENANT_ID"
	envAuthorityHost      = "AZURE_AUTHORITY_HOST"
)

// bypassMSALCache is passed as claims to the managed identity client: its
// token cache is global to the process and would hand back a token the API
// just refused. The plugin caches tokens itself (cachedToken). MSAL Go
// v1.7.2 sends no claims to managed identity endpoints; it only skips its
// cache for them.
const bypassMSALCache = `{"access_token":{}}`

// azureTokenSource returns the token source of the modes built on
// azidentity (client certificate, managed identity, workload identity), or
// nil when none of their keys is set. Keys of a mode that is not selected,
// and keys that a selected mode does not use, are refused.
func (m *MicrosoftDefender) azureTokenSource(client *http.Client) (tokenSource, error) {
	modes := setKeys(
		configKey{"client_certificate", m.ClientCertificate != ""},
		configKey{"use_managed_identity", m.UseManagedIdentity},
		configKey{"use_workload_identity", m.UseWorkloadIdentity},
	)
	var orphans []string
	if m.ClientCertificate == "" {
		orphans = append(orphans, setKeys(
			configKey{"client_certificate_password", !m.ClientCertificatePassword.Empty()},
			configKey{"send_certificate_chain", m.SendCertificateChain})...)
	}
	if !m.UseManagedIdentity {
		orphans = append(orphans, setKeys(
			configKey{"managed_identity_client_id", m.ManagedIdentityClientID != ""},
			configKey{"managed_identity_resource_id", m.ManagedIdentityResourceID != ""})...)
	}
	if !m.UseWorkloadIdentity {
		orphans = append(orphans, setKeys(configKey{"federated_token_file", m.FederatedTokenFile != ""})...)
	}
	if len(orphans) > 0 {
		return nil, fmt.Errorf("%s: only used with %s", strings.Join(orphans, ", "), ownerOfKeys(orphans))
	}
	switch len(modes) {
	case 0:
		return nil, nil
	case 1:
	default:
		return nil, fmt.Errorf("%s cannot be combined: set one authentication mode", strings.Join(modes, ", "))
	}
	mode := modes[0]
	if foreign := setKeys(
		configKey{"access_token", !m.AccessToken.Empty()},
		configKey{"client_secret", !m.ClientSecret.Empty()},
		configKey{"refresh_token", !m.RefreshToken.Empty()},
		configKey{"token_url (use login_endpoint)", m.TokenURL != ""},
	); len(foreign) > 0 {
		return nil, fmt.Errorf("%s: not used with %s", strings.Join(foreign, ", "), mode)
	}
	if m.Resource != "" && len(m.Scopes) > 0 {
		return nil, errors.New("resource and scopes cannot both be set: resource selects the Azure AD v1 token form, scopes the v2 form")
	}
	scopes := m.Scopes
	if len(scopes) == 0 {
		resource := m.Resource
		if resource == "" {
			resource = defaultSIEMResource
		}
		// azidentity asks for scopes only; a v1 resource is the scope
		// {resource}/.default.
		scopes = []string{strings.TrimSuffix(resource, "/") + "/.default"}
	}

	source := &azureSource{client: client, scopes: scopes, now: m.now}
	var err error
	switch mode {
	case "client_certificate":
		err = m.certificateCredential(source)
	case "use_managed_identity":
		err = m.managedIdentityCredential(source)
	default:
		err = m.workloadIdentityCredential(source)
	}
	if err != nil {
		return nil, err
	}
	return &cachedToken{source: source}, nil
}

// ownerOfKeys names the key that enables the keys given.
func ownerOfKeys(keys []string) string {
	switch {
	case strings.HasPrefix(keys[0], "managed_identity"):
		return "use_managed_identity = true"
	case keys[0] == "federated_token_file":
		return "use_workload_identity = true"
	}
	return "client_certificate"
}

// authority is the sign-in host for azidentity: login_endpoint, else the
// region's; azidentity and MSAL refuse plain http.
func (m *MicrosoftDefender) authority(key string) (string, error) {
	login, err := m.loginEndpoint()
	if err != nil {
		return "", err
	}
	if login.Scheme != "https" {
		return "", fmt.Errorf("%s %q must be an https URL: the Azure SDK signs in over https only", key, login.String())
	}
	if !validTenantID.MatchString(m.TenantID) {
		return "", fmt.Errorf("tenant_id %q is not a tenant id or domain name", m.TenantID)
	}
	return strings.TrimSuffix(login.String(), "/") + "/", nil
}

func clientOptions(authority string, transport policy.Transporter) azcore.ClientOptions {
	return azcore.ClientOptions{
		Cloud:     cloud.Configuration{ActiveDirectoryAuthorityHost: authority},
		Transport: transport,
		// The poll retries what is worth retrying, within its deadline.
		Retry: policy.RetryOptions{MaxRetries: -1},
	}
}

func requireKeys(mode string, keys ...configKey) error {
	var missing []string
	for _, k := range keys {
		if !k.set {
			missing = append(missing, k.name)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("%s needs %s", mode, strings.Join(missing, ", "))
	}
	return nil
}

func (m *MicrosoftDefender) certificateCredential(source *azureSource) error {
	if err := requireKeys("client_certificate", configKey{"tenant_id", m.TenantID != ""}, configKey{"client_id", m.ClientID != ""}); err != nil {
		return err
	}
	authority, err := m.authority("login_endpoint")
	if err != nil {
		return err
	}
	certs, key, err := loadCertificate(m.ClientCertificate, &m.ClientCertificatePassword)
	if err != nil {
		return err
	}
	switch now := m.now(); {
	case now.After(certs[0].NotAfter):
		m.Log.Warnf("The certificate in client_certificate expired on %s: Azure AD refuses it until a new one is registered and configured",
			certs[0].NotAfter.UTC().Format(time.RFC3339))
	case now.Before(certs[0].NotBefore):
		m.Log.Warnf("The certificate in client_certificate is valid only from %s", certs[0].NotBefore.UTC().Format(time.RFC3339))
	}
	tenant, clientID, chain := m.TenantID, m.ClientID, m.SendCertificateChain
	source.mode = modeCertificate
	source.secretKeys = []*config.Secret{&m.ClientCertificatePassword}
	source.newCredential = func(transport policy.Transporter) (azcore.TokenCredential, error) {
		return azidentity.NewClientCertificateCredential(tenant, clientID, certs, key, &azidentity.ClientCertificateCredentialOptions{
			ClientOptions: clientOptions(authority, transport),
			// The authority is configured, not discovered: no request goes
			// to another host.
			DisableInstanceDiscovery: true,
			SendCertificateChain:     chain,
		})
	}
	return nil
}

func (m *MicrosoftDefender) managedIdentityCredential(source *azureSource) error {
	if foreign := setKeys(
		configKey{"tenant_id", m.TenantID != ""},
		configKey{"client_id (use managed_identity_client_id)", m.ClientID != ""},
		configKey{"login_endpoint", m.LoginEndpoint != ""},
	); len(foreign) > 0 {
		return fmt.Errorf("%s: not used with use_managed_identity", strings.Join(foreign, ", "))
	}
	if m.ManagedIdentityClientID != "" && m.ManagedIdentityResourceID != "" {
		return errors.New("managed_identity_client_id and managed_identity_resource_id cannot both be set: each names one user-assigned identity")
	}
	if len(source.scopes) != 1 {
		return fmt.Errorf("use_managed_identity takes one scope, got %d", len(source.scopes))
	}
	var id azidentity.ManagedIDKind
	switch {
	case m.ManagedIdentityClientID != "":
		id = azidentity.ClientID(m.ManagedIdentityClientID)
	case m.ManagedIdentityResourceID != "":
		id = azidentity.ResourceID(m.ManagedIdentityResourceID)
	}
	source.mode = modeManagedIdentity
	source.claims = bypassMSALCache
	source.newCredential = func(transport policy.Transporter) (azcore.TokenCredential, error) {
		opts := clientOptions("", transport)
		opts.Cloud = cloud.Configuration{}
		return azidentity.NewManagedIdentityCredential(&azidentity.ManagedIdentityCredentialOptions{ClientOptions: opts, ID: id})
	}
	return nil
}

func (m *MicrosoftDefender) workloadIdentityCredential(source *azureSource) error {
	// The pod's environment fills what the configuration leaves out, as
	// azidentity's WorkloadIdentityCredential does.
	for _, v := range []struct {
		value *string
		env   string
	}{
		{&m.TenantID, envTenantID},
		{&m.ClientID, envClientID},
		{&m.FederatedTokenFile, envFederatedTokenFile},
		{&m.LoginEndpoint, envAuthorityHost},
	} {
		if *v.value == "" {
			*v.value = os.Getenv(v.env)
		}
	}
	if region, known := graphRegions[m.Region]; m.LoginEndpoint == "" && m.API == "graph" && known {
		m.LoginEndpoint = "https://" + region.loginHost
	}
	if err := requireKeys("use_workload_identity",
		configKey{"tenant_id (or " + envTenantID + ")", m.TenantID != ""},
		configKey{"client_id (or " + envClientID + ")", m.ClientID != ""},
		configKey{"federated_token_file (or " + envFederatedTokenFile + ")", m.FederatedTokenFile != ""},
	); err != nil {
		return err
	}
	authority, err := m.authority("login_endpoint (or " + envAuthorityHost + ")")
	if err != nil {
		return err
	}
	tenant, clientID := m.TenantID, m.ClientID
	source.mode = modeWorkloadIdentity
	source.federatedTokenFile = m.FederatedTokenFile
	source.newCredential = func(transport policy.Transporter) (azcore.TokenCredential, error) {
		// ClientAssertionCredential rather than WorkloadIdentityCredential:
		// the latter keeps the file's token for up to ten minutes, the
		// plugin reads the file at every token request, so that a rotated
		// token is used at once.
		return azidentity.NewClientAssertionCredential(tenant, clientID, source.readFederatedToken,
			&azidentity.ClientAssertionCredentialOptions{
				ClientOptions:            clientOptions(authority, transport),
				DisableInstanceDiscovery: true,
			})
	}
	return nil
}

// azureSource fetches tokens with an azidentity credential. A new
// credential serves each fetch, so that MSAL's own cache never hands back a
// token the API refused: cachedToken decides when a token is needed.
type azureSource struct {
	mode          azureMode
	client        *http.Client
	scopes        []string
	claims        string
	newCredential func(policy.Transporter) (azcore.TokenCredential, error)
	secretKeys    []*config.Secret
	// now reads Retry-After dates on the plugin's clock.
	now func() time.Time

	federatedTokenFile string

	// mu guards what readFederatedToken records: azidentity calls it, and
	// documents no goroutine it calls it on.
	mu sync.Mutex
	// federatedToken is the last token read from federatedTokenFile, kept
	// for redaction; fileErr is the last failure to read it.
	federatedToken string
	fileErr        error
}

func (a *azureSource) fetch(ctx context.Context) (*oauth2.Token, error) {
	a.mu.Lock()
	a.fileErr = nil
	a.mu.Unlock()
	transport := &recordingTransport{client: a.client}
	cred, err := a.newCredential(transport)
	if err != nil {
		return nil, &azureTokenError{mode: a.mode, msg: a.scrub(err.Error())}
	}
	tok, err := cred.GetToken(ctx, policy.TokenRequestOptions{Scopes: a.scopes, Claims: a.claims})
	if err != nil {
		return nil, a.describe(err, transport)
	}
	return &oauth2.Token{AccessToken: tok.Token, TokenType: "Bearer", Expiry: tok.ExpiresOn}, nil
}

// readFederatedToken is the assertion callback of the workload identity
// credential.
func (a *azureSource) readFederatedToken(context.Context) (string, error) {
	data, err := os.ReadFile(a.federatedTokenFile)
	token := string(bytes.TrimSpace(data))
	if err == nil && token == "" {
		err = errors.New("the file is empty")
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if err != nil {
		var pathErr *os.PathError
		if errors.As(err, &pathErr) {
			err = pathErr.Err
		}
		a.fileErr = fmt.Errorf("%q: %w", a.federatedTokenFile, err)
		return "", a.fileErr
	}
	a.federatedToken = token
	return token, nil
}

func (a *azureSource) secrets() []string {
	out := secretValues(a.secretKeys...)
	a.mu.Lock()
	if a.federatedToken != "" {
		out = append(out, a.federatedToken)
	}
	a.mu.Unlock()
	if a.mode == modeManagedIdentity {
		// The managed identity endpoints' shared secrets.
		for _, env := range []string{"IDENTITY_HEADER", "MSI_SECRET"} {
			if v := os.Getenv(env); v != "" {
				out = append(out, v)
			}
		}
	}
	return out
}

// scrub makes one line of a message of the Azure SDK, without secrets.
func (a *azureSource) scrub(msg string) string {
	msg, _, _ = strings.Cut(strings.TrimSpace(msg), "\n")
	return sanitize(string(redactJWTs(redact([]byte(msg), a.secrets()...))), maxBodySnippet)
}

// jwtPattern matches a JSON Web Token: a client assertion that MSAL made,
// which the plugin never sees, echoed by a server.
var jwtPattern = regexp.MustCompile(`eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*(\.[A-Za-z0-9_-]*)?`)

func redactJWTs(b []byte) []byte {
	return jwtPattern.ReplaceAll(b, []byte("[redacted]"))
}

// describe turns azidentity's error into an azureTokenError: the host,
// status and Azure AD's code of the failed request, or the transport's
// error, and never the request, which holds the assertion.
func (a *azureSource) describe(err error, transport *recordingTransport) error {
	a.mu.Lock()
	fileErr := a.fileErr
	a.mu.Unlock()
	if fileErr != nil {
		return &azureTokenError{mode: a.mode, file: true, msg: a.scrub(fileErr.Error())}
	}
	var failed *azidentity.AuthenticationFailedError
	if errors.As(err, &failed) && failed.RawResponse != nil {
		return &azureTokenError{mode: a.mode, tok: a.describeResponse(failed.RawResponse, transport)}
	}
	if host, transportErr := transport.failure(); transportErr != nil {
		return &azureTokenError{mode: a.mode, tok: &tokenError{host: host, err: transportErr}}
	}
	return &azureTokenError{mode: a.mode, msg: a.scrub(err.Error())}
}

func (a *azureSource) describeResponse(resp *http.Response, transport *recordingTransport) *tokenError {
	host := transport.lastHost()
	if resp.Request != nil {
		host = resp.Request.URL.Host
	}
	e := &tokenError{host: host, status: resp.StatusCode, statusText: resp.Status}
	if e.retryAfter, e.capped = parseRetryAfter(resp.Header.Get("Retry-After"), a.now()); e.capped != nil {
		e.capped = fmt.Errorf("sign-in service %s: %w", host, e.capped)
	}
	body, err := azruntime.Payload(resp)
	if err != nil {
		e.description = "body unreadable"
		return e
	}
	body = redactJWTs(redact(body, a.secrets()...))
	// Azure AD answers {error, error_description}; App Service's managed
	// identity endpoint {statusCode, message}.
	var answer struct {
		Error       string `json:"error"`
		Description string `json:"error_description"`
		Message     string `json:"message"`
	}
	switch {
	case json.Unmarshal(body, &answer) != nil:
		e.description = bodySnippet(body)
	case answer.Error != "":
		e.code = sanitize(answer.Error, 64)
		description, _, _ := strings.Cut(answer.Description, "\n")
		e.description = sanitize(strings.TrimSpace(description), maxBodySnippet)
	case answer.Message != "":
		e.description = sanitize(strings.TrimSpace(answer.Message), maxBodySnippet)
	default:
		e.description = bodySnippet(body)
	}
	return e
}

// recordingTransport is the plugin's HTTP client, as azidentity's
// transport, remembering the last request's host and transport error:
// azidentity keeps only their text.
type recordingTransport struct {
	client *http.Client

	// mu guards what Do records: azidentity's pipeline calls Do, and
	// documents no goroutine it calls it on.
	mu   sync.Mutex
	host string
	err  error
}

// Do implements azcore's policy.Transporter.
func (t *recordingTransport) Do(req *http.Request) (*http.Response, error) {
	resp, err := t.client.Do(req)
	t.mu.Lock()
	defer t.mu.Unlock()
	t.host, t.err = req.URL.Host, err
	if err != nil {
		// url.Error repeats the whole URL, query included.
		var ue *url.Error
		if errors.As(err, &ue) {
			t.err = ue.Err
		}
	}
	return resp, err
}

func (t *recordingTransport) failure() (string, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.host, t.err
}

func (t *recordingTransport) lastHost() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.host
}

// azureTokenError is a failed token request of an azidentity mode: the
// request's failure (a *tokenError, so that retries and advice treat it as
// any token error), an unreadable federated token file, or another
// refusal of the library.
type azureTokenError struct {
	mode azureMode
	tok  *tokenError
	file bool // msg says why federated_token_file could not be read
	msg  string
}

func (e *azureTokenError) Error() string {
	switch {
	case e.tok != nil:
		return string(e.mode) + ": " + e.tok.Error()
	case e.file:
		return string(e.mode) + ": reading federated_token_file " + e.msg
	}
	return string(e.mode) + ": " + e.msg
}

func (e *azureTokenError) Unwrap() error {
	if e.tok == nil {
		return nil
	}
	return e.tok
}

// azureAdvice says what most likely fixes a failed token request of an
// azidentity mode.
func azureAdvice(e *azureTokenError) string {
	switch {
	case e.file:
		return "The federated token file cannot be read: on AKS, label the pod azure.workload.identity/use: \"true\" and run it " +
			"with a service account annotated azure.workload.identity/client-id, so that the webhook projects the token and sets " +
			envFederatedTokenFile + "; elsewhere set federated_token_file to the file your issuer writes."
	case e.tok == nil && e.mode == modeManagedIdentity && strings.Contains(e.msg, "azcmagent"):
		// Arc's endpoint answers with the path of a challenge file that
		// only members of the himds group may read.
		return "The Azure Arc agent's challenge file cannot be read: add the user Telegraf runs as to the himds group " +
			"(usermod -aG himds telegraf) and restart Telegraf."
	case e.tok == nil && e.mode == modeManagedIdentity:
		return "The managed identity cannot be used here: see the message above, and that the host has the identity assigned."
	case e.tok == nil:
		return "The Azure SDK refused the sign-in: see the message above."
	case e.mode == modeManagedIdentity:
		return managedIdentityAdvice(e.tok)
	}
	code := ""
	if m := aadstsCode.FindStringSubmatch(e.tok.description); m != nil {
		code = m[1]
	}
	description := strings.ToLower(e.tok.description)
	switch {
	case code == "700027" && strings.Contains(description, "expired"):
		return "The certificate registered for the app has expired (AADSTS700027): create a new one, upload its public part " +
			"under Certificates & secrets of the app registration, and point client_certificate to it."
	case code == "700027" && strings.Contains(description, "not registered"):
		return "The certificate in client_certificate is not registered on the app (AADSTS700027): upload its public part " +
			"(.cer or .pem) under Certificates & secrets of the app registration; for subject name/issuer authentication set " +
			"send_certificate_chain = true."
	case code == "700027":
		return "Azure AD could not verify the client assertion with the registered certificate (AADSTS700027): the key in " +
			"client_certificate is not the key of the registered certificate; configure the pair that was registered."
	case code == "700021":
		return "The client assertion is for another app (AADSTS700021): client_id must be the application (client) id of " +
			"the app the certificate is registered on."
	case code == "70021":
		return "No federated credential of the app matches the token (AADSTS70021): add one under Certificates & secrets > " +
			"Federated credentials with the cluster's OIDC issuer URL, the subject system:serviceaccount:NAMESPACE:NAME and the " +
			"audience api://AzureADTokenExchange, or correct client_id."
	case code == "700024" && e.mode == modeWorkloadIdentity:
		return "The federated token has expired (AADSTS700024): the file is not being renewed; check that federated_token_file " +
			"is the projected service account token, which the kubelet rotates."
	case code == "700024":
		return "Azure AD finds the client assertion outside its valid time (AADSTS700024): correct this host's clock (NTP)."
	}
	return tokenAdvice(e.tok)
}

func managedIdentityAdvice(e *tokenError) string {
	switch {
	case e.err != nil:
		return "No managed identity endpoint answered: the plugin runs outside Azure, or IMDS (169.254.169.254) is blocked by " +
			"a firewall or a proxy (add it to NO_PROXY); on App Service, Functions or Arc the process's environment must carry " +
			"IDENTITY_ENDPOINT (and IDENTITY_HEADER or IMDS_ENDPOINT)."
	case e.status == http.StatusBadRequest:
		return "The managed identity is not assigned to this resource: enable the system-assigned identity of the VM or app " +
			"(Identity blade), or assign the user-assigned identity, and check managed_identity_client_id or managed_identity_resource_id."
	case e.status == http.StatusNotFound:
		return "The managed identity endpoint has no token service at this address (HTTP 404): check IDENTITY_ENDPOINT; an " +
			"identity assigned a few minutes ago may not be available yet."
	case isTransientStatus(e.status):
		return "The managed identity endpoint is throttling or failing for now: try again later."
	}
	return "The managed identity endpoint refused the request: see its message above."
}

// loadCertificate reads client_certificate: a PEM file with the
// certificate (and its chain) and an unencrypted RSA key, or a PKCS#12
// file. The certificate matching the key comes first.
func loadCertificate(path string, password *config.Secret) ([]*x509.Certificate, *rsa.PrivateKey, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		var pathErr *os.PathError
		if errors.As(err, &pathErr) {
			err = pathErr.Err
		}
		return nil, nil, fmt.Errorf("client_certificate %q: %w", path, err)
	}
	var certs []*x509.Certificate
	var key any
	ext := strings.ToLower(filepath.Ext(path))
	if ext == ".pfx" || ext == ".p12" || !bytes.Contains(data, []byte("-----BEGIN")) {
		certs, key, err = parsePKCS12(data, password)
	} else {
		if !password.Empty() {
			return nil, nil, fmt.Errorf("client_certificate %q: client_certificate_password is for PKCS#12 files; "+
				"the key of a PEM file must not be encrypted", path)
		}
		certs, key, err = parsePEM(data)
	}
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

func parsePKCS12(data []byte, password *config.Secret) ([]*x509.Certificate, any, error) {
	var pass string
	if !password.Empty() {
		buf, err := password.Get()
		if err != nil {
			return nil, nil, fmt.Errorf("reading client_certificate_password: %w", err)
		}
		pass = buf.String()
		buf.Destroy()
	}
	// go-pkcs12 reads the AES/PBKDF2 files OpenSSL 3 writes as well as the
	// older 3DES ones; azidentity.ParseCertificates reads only the latter.
	key, cert, chain, err := pkcs12.DecodeChain(data, pass)
	if errors.Is(err, pkcs12.ErrIncorrectPassword) {
		return nil, nil, errors.New("the PKCS#12 file's password is wrong or missing: check client_certificate_password")
	}
	if err != nil {
		return nil, nil, fmt.Errorf("not a PKCS#12 file with one key and its certificate: %w", err)
	}
	return append([]*x509.Certificate{cert}, chain...), key, nil
}

func parsePEM(data []byte) ([]*x509.Certificate, any, error) {
	var certs []*x509.Certificate
	var key any
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			break
		}
		var err error
		switch {
		case block.Type == "CERTIFICATE":
			var cert *x509.Certificate
			if cert, err = x509.ParseCertificate(block.Bytes); err == nil {
				certs = append(certs, cert)
			}
		case block.Type == "ENCRYPTED PRIVATE KEY" || block.Headers["Proc-Type"] != "":
			return nil, nil, errors.New("the key is encrypted: use an unencrypted PEM key, or a PKCS#12 file with client_certificate_password")
		case block.Type == "PRIVATE KEY":
			key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
		case block.Type == "RSA PRIVATE KEY":
			key, err = x509.ParsePKCS1PrivateKey(block.Bytes)
		case strings.HasSuffix(block.Type, "PRIVATE KEY"):
			return nil, nil, fmt.Errorf("the key is a %s, Azure AD's client assertions need an RSA key", block.Type)
		}
		if err != nil {
			return nil, nil, fmt.Errorf("its %s block: %w", block.Type, err)
		}
	}
	switch {
	case len(certs) == 0:
		return nil, nil, errors.New("no CERTIFICATE block")
	case key == nil:
		return nil, nil, errors.New("no PRIVATE KEY block: the file must hold the certificate and its key")
	}
	return certs, key, nil
}
