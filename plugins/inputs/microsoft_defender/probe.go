package microsoft_defender

import (
	"cmp"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"
)

// probeStep names the step of a probe that failed.
type probeStep string

const (
	stepToken   probeStep = "token"
	stepRequest probeStep = "request"
	stepAnswer  probeStep = "answer"
)

// probeError is a failed probe. Its message carries the likely fix, as it is all the log says of a failed
// start-up with startup_error_behavior = "probe"; -check reads its form.
type probeError struct {
	step probeStep
	err  error
	fix  string
}

func (e *probeError) Error() string {
	return strings.TrimSuffix(fmt.Sprintf("%s: %v", e.step, e.err), ".") + ". Likely fix: " + e.fix
}

func (e *probeError) Unwrap() error {
	return e.err
}

// Probe implements telegraf.ProbePlugin: a token and one minimal request,
// emitting nothing and keeping the cursor; its error is a *probeError.
func (m *MicrosoftDefender) Probe() error {
	if _, err := m.tokens.token(m.ctx); err != nil {
		return m.probeError(stepToken, err)
	}
	now, c := m.now().UTC(), &chunk{}
	var u *url.URL
	switch r := m.reader.(type) {
	case *siemReader:
		u = r.ask(c, &siemAsk{since: now.Add(-probeWindow), until: now, limit: 1}).url
	case *graphReader:
		u = r.ask(c, now.Add(-probeWindow).Truncate(tick), now.Truncate(tick), 1)
	}
	// One record is enough, however many the service sends.
	err := m.probeRequest(u, c, func(record) bool { return false })
	if err == nil {
		return nil
	}
	step := stepRequest
	var answerErr *answerError
	if errors.As(err, &answerErr) {
		step = stepAnswer
	}
	return m.probeError(step, err)
}

// probeRequest sends one request and reads its answer whole, emitting nothing.
func (m *MicrosoftDefender) probeRequest(u *url.URL, c *chunk, emit func(record) bool) error {
	body, err := m.client.get(m.ctx, u)
	if err != nil {
		return err
	}
	defer body.Close()
	if err := m.reader.decode(c, body, emit); err != nil {
		return &answerError{api: m.client.name, host: u.Host, err: err}
	}
	return nil
}

func (m *MicrosoftDefender) probeError(step probeStep, err error) *probeError {
	e := &probeError{step: step, err: err}
	e.fix = advice(e, m.API)
	return e
}

// advice says what most likely fixes a failed probe, in words a security engineer can act on.
func advice(err error, api string) string {
	var tokenErr *tokenError
	var statusErr *statusError
	var probeErr *probeError
	switch {
	case errors.As(err, &tokenErr):
		return tokenAdvice(tokenErr)
	case errors.As(err, &statusErr):
		return statusAdvice(statusErr.status, api)
	case errors.As(err, new(*net.DNSError)) && api == "siem":
		return "The API's host name does not resolve: check region or endpoint_url. Where the SIEM API was retired for the tenant, use api = \"graph\"."
	case errors.As(err, new(*net.DNSError)):
		return "The API's host name does not resolve: check region or endpoint_url, and the machine's DNS."
	case errors.Is(err, errBodyTooLarge):
		return "The answer is larger than max_body_size: raise it."
	case strings.Contains(err.Error(), "x509:") || strings.Contains(err.Error(), "tls:"):
		return "The server's certificate is not trusted: check tls_ca, or a TLS-intercepting proxy between this host and Microsoft."
	case errors.As(err, &probeErr) && probeErr.step == stepAnswer:
		return "The API answered something that is not a list of alerts: check endpoint_url, and a proxy that may answer in its place."
	}
	return "The API could not be reached: check the network path, a proxy (use_system_proxy, http_proxy_url) and firewall rules to the API's host."
}

// aadstsAdvice is what went wrong and the fix, per AADSTS number ("|" between numbers of one entry),
// or number/qualifier: the method, or what an AADSTS700027 is about.
var aadstsAdvice = map[string][2]string{
	"7000215": {"Azure AD refused the client secret",
		"it is wrong, or it is the secret's ID rather than its value. Create a new client secret for the app and set its value as client_secret."},
	"7000222": {"The client secret has expired", "create a new client secret for the app and set its value as client_secret."},
	"700016":  {"No app with this client_id exists in the tenant", "check client_id, and that tenant_id is the tenant the app is registered in."},
	"90002": {"The tenant does not exist",
		"check tenant_id, and that login_endpoint (or region) is the tenant's cloud, e.g. login.microsoftonline.us for GCC High."},
	"900144|1002012": {"The token request lacks a valid scope", "scopes takes one value ending in /.default, e.g. https://graph.windows.net/.default."},
	"500011":         {"The scope names an API the tenant does not know", "check scopes and the region."},
	"70000|700082": {"The refresh token is invalid or expired",
		"refresh tokens live 90 days; generate a new one, or use auth_method = \"client_secret\"."},
	"700027/expired": {"The certificate registered for the app has expired",
		"create a new one, upload its public part under Certificates & secrets of the app registration, and set client_certificate to it."},
	"700027/not registered": {"The certificate in client_certificate is not registered on the app", "upload its public part under Certificates & " +
		"secrets of the app registration; for subject name/issuer authentication set send_certificate_chain = true."},
	"700027": {"Azure AD could not verify the client assertion with the registered certificate",
		"client_certificate holds another key than the registered certificate's: configure the registered pair."},
	"700021": {"The client assertion is for another app", "client_id must be the application (client) id of the app the certificate is registered on."},
	"70021": {"No federated credential of the app matches the token", "add one under Certificates & secrets > Federated credentials with the " +
		"cluster's OIDC issuer URL, the subject system:serviceaccount:NAMESPACE:NAME and the audience api://AzureADTokenExchange, or correct client_id."},
	"700024/workload identity": {"The federated token has expired",
		"the file is not being renewed: federated_token_file must be the projected service account token, which the kubelet rotates."},
	"700024": {"Azure AD finds the client assertion outside its valid time", "correct this host's clock (NTP)."},
}

// tokenAdvice advises on a failed sign-in.
func tokenAdvice(e *tokenError) string {
	mi := e.method == "managed identity"
	switch {
	case e.file:
		return "The federated token file cannot be read: on AKS, label the pod azure.workload.identity/use: \"true\" and run it with a service " +
			"account annotated azure.workload.identity/client-id, so that the webhook projects the token and sets " + envFederatedTokenFile +
			"; elsewhere set federated_token_file to the file your issuer writes."
	case e.host == "" && mi && strings.Contains(e.msg, "azcmagent"): // Arc's challenge file is readable only by the himds group
		return "The Azure Arc agent's challenge file cannot be read: add the user Telegraf runs as to the himds group " +
			"(usermod -aG himds telegraf) and restart Telegraf."
	case e.host == "":
		return "The sign-in could not start: see the message above (for a managed identity, check that the host has it assigned)."
	case e.err != nil && mi:
		return "No managed identity endpoint answered: the plugin runs outside Azure, or IMDS (169.254.169.254) is blocked by a firewall or a " +
			"proxy (add it to NO_PROXY); on App Service, Functions or Arc the environment must carry IDENTITY_ENDPOINT."
	case e.err != nil:
		return "The sign-in service could not be reached: check login_endpoint, the network path and the proxy."
	case mi && e.status == http.StatusBadRequest:
		return "The managed identity is not assigned to this resource: enable the system-assigned identity of the VM or app, or assign the " +
			"user-assigned one, and check client_id or managed_identity_resource_id."
	case mi && e.status == http.StatusNotFound:
		return "The managed identity endpoint has no token service at this address (HTTP 404): check IDENTITY_ENDPOINT; a new identity may take minutes."
	}
	for _, key := range []string{e.aadsts + "/" + cmp.Or(e.about, e.method), e.aadsts} {
		for numbers, a := range aadstsAdvice {
			if slices.Contains(strings.Split(numbers, "|"), key) {
				return a[0] + " (AADSTS" + e.aadsts + "): " + a[1]
			}
		}
	}
	switch {
	case e.status == 0:
		return "The sign-in service answered no usable token: check login_endpoint (IDENTITY_ENDPOINT for a managed identity), " +
			"and a proxy that may answer in its place."
	case isTransientStatus(e.status):
		return "The sign-in service is throttling or failing for now: try again later."
	}
	return "The sign-in service refused the request: see its message above."
}

func statusAdvice(status int, api string) string {
	siem := api == "siem"
	switch {
	case status == http.StatusUnauthorized && siem:
		return "The API refused the token: it was issued for another audience. For the SIEM API the resource is https://graph.windows.net " +
			"(the WindowsDefenderATPSiemConnector app) or https://WDATPAlertExport.Seville.onmicrosoft.com."
	case status == http.StatusUnauthorized:
		return "The API refused the token: it was issued for another audience. The scope must be the region's Graph host followed by /.default, " +
			"e.g. https://graph.microsoft.com/.default."
	case status == http.StatusForbidden && siem:
		return "The app lacks access to the SIEM API, or the tenant is not managed by it: enable SIEM integration for the app in the Defender " +
			"portal, or use api = \"graph\"."
	case status == http.StatusForbidden && api == "graph_incidents":
		return "The app lacks the Graph application permission SecurityIncident.Read.All, or admin consent to it: grant it and consent in Entra ID."
	case status == http.StatusForbidden:
		return "The app lacks the Graph application permission SecurityAlert.Read.All, or admin consent to it: grant it and consent in Entra ID."
	case (status == http.StatusNotFound || status == http.StatusGone) && siem:
		return "There is no SIEM API at this address: check region or endpoint_url. Microsoft retired the SIEM API; " +
			"if it is retired for this tenant, use api = \"graph\"."
	case status == http.StatusNotFound:
		return fmt.Sprintf("There is no %s resource at this address: check region or endpoint_url.",
			map[bool]string{true: "security incidents", false: "alerts_v2"}[api == "graph_incidents"])
	case status == http.StatusTooManyRequests:
		return "The API is throttling this app: lower max_requests_per_minute, or share fewer apps per tenant."
	case status >= 500:
		return "The service is failing for now: try again later."
	}
	return "The API refused the request: see its message above."
}

// probeWindow is how far back the probe's request reaches.
const probeWindow = time.Hour
