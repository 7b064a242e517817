package microsoft_defender

import (
	"cmp"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// probeWindow is how far back the probe's request reaches.
const probeWindow = time.Hour

// probeError is a failed probe step ("token", "request" or "answer"). Its message carries the likely fix, as it
// is all the log says of a failed start-up with startup_error_behavior = "probe"; -check reads its form.
type probeError struct {
	step, fix string
	err       error
}

func (e *probeError) Error() string {
	return strings.TrimSuffix(fmt.Sprintf("%s: %v", e.step, e.err), ".") + ". Likely fix: " + e.fix
}

func (e *probeError) Unwrap() error { return e.err }

// Probe implements telegraf.ProbePlugin: a token and one minimal request, emitting nothing and keeping the cursor.
func (m *MicrosoftDefender) Probe() error {
	fail := func(step string, err error) error { return &probeError{step: step, err: err, fix: advice(err, m.API)} }
	if _, err := m.tokens.token(m.ctx); err != nil {
		return fail("token", err)
	}
	now, c := m.now().UTC(), &chunk{}
	var u *url.URL
	switch r := m.reader.(type) {
	case *siemReader:
		u = r.ask(c, &siemAsk{since: now.Add(-probeWindow), until: now, limit: 1}).url
	case *graphReader:
		u = r.ask(c, now.Add(-probeWindow).Truncate(tick), now.Truncate(tick), 1)
	}
	body, err := m.client.get(m.ctx, u)
	if err != nil {
		return fail("request", err)
	}
	defer body.Close()
	// One record is enough, however many the service sends.
	if err := m.reader.decode(c, body, func(record) bool { return false }); err != nil {
		return fail("answer", &answerError{api: m.client.name, host: u.Host, err: err})
	}
	return nil
}

// advice says what most likely fixes a failed probe, in words a security engineer can act on.
func advice(err error, api string) string {
	var tokenErr *tokenError
	var statusErr *statusError
	switch {
	case errors.As(err, &tokenErr):
		return tokenAdvice(tokenErr)
	case errors.As(err, &statusErr):
		return statusAdvice(statusErr.status, api)
	case errors.As(err, new(*net.DNSError)):
		return "The API's host name does not resolve: check region or endpoint_url, and the machine's DNS."
	case errors.Is(err, errBodyTooLarge):
		return "The answer is larger than max_body_size: raise it."
	case strings.Contains(err.Error(), "x509:") || strings.Contains(err.Error(), "tls:"):
		return "The server's certificate is not trusted: check tls_ca, or a TLS-intercepting proxy between this host and Microsoft."
	case errors.As(err, new(*answerError)):
		return "The API answered something that is not a list of alerts: check endpoint_url, and a proxy that may answer in its place."
	}
	return "The API could not be reached: check the network path, a proxy (use_system_proxy, http_proxy_url) and firewall rules."
}

// aadstsAdvice is what went wrong and the fix per AADSTS number, or number/qualifier: the method, or what an
// AADSTS700027 is about. Only the common failures: the others get the general advice.
var aadstsAdvice = map[string][2]string{
	"7000215": {"Azure AD refused the client secret",
		"it is wrong, or it is the secret's ID rather than its value. Create a new client secret for the app and set its value as client_secret."},
	"7000222": {"The client secret has expired", "create a new client secret for the app and set its value as client_secret."},
	"700016":  {"No app with this client_id exists in the tenant", "check client_id, and that tenant_id is the tenant the app is registered in."},
	"90002":   {"The tenant does not exist", "check tenant_id, and that login_endpoint (or region) is the tenant's cloud."},
	"700082":  {"The refresh token has expired", "generate a new one, or use auth_method = \"client_secret\"."},
	"700027/expired": {"The certificate registered for the app has expired",
		"create a new one, register it under Certificates & secrets of the app and set client_certificate to it."},
	"700027/not registered": {"The certificate in client_certificate is not registered on the app",
		"upload its public part under Certificates & secrets of the app, or set send_certificate_chain = true for subject name/issuer."},
	"700027": {"Azure AD could not verify the client assertion", "client_certificate holds another key than the registered certificate's."},
	"70021": {"No federated credential of the app matches the token", "add one (Certificates & secrets > Federated credentials) with the " +
		"cluster's OIDC issuer, the subject system:serviceaccount:NAMESPACE:NAME and the audience api://AzureADTokenExchange."},
	"700024/workload identity": {"The federated token has expired", "federated_token_file must be the projected token the kubelet rotates."},
}

// tokenAdvice advises on a failed sign-in.
func tokenAdvice(e *tokenError) string {
	mi := e.method == "managed identity"
	switch {
	case e.file:
		return "The federated token file cannot be read: on AKS, label the pod azure.workload.identity/use: \"true\" and give it a service " +
			"account annotated azure.workload.identity/client-id; elsewhere set federated_token_file."
	case e.host == "" && mi && strings.Contains(e.msg, "azcmagent"): // Arc's challenge file is readable only by the himds group
		return "The Azure Arc agent's challenge file cannot be read: add the user Telegraf runs as to the himds group, then restart Telegraf."
	case e.host == "":
		return "The sign-in could not start: see the message above (for a managed identity, check that the host has it assigned)."
	case e.err != nil && mi:
		return "No managed identity endpoint answered: the plugin runs outside Azure, or IMDS (169.254.169.254) is blocked by a firewall " +
			"or proxy (add it to NO_PROXY); on App Service, Functions or Arc IDENTITY_ENDPOINT must be set."
	case e.err != nil:
		return "The sign-in service could not be reached: check login_endpoint, the network path and the proxy."
	case mi && e.status == http.StatusBadRequest:
		return "The managed identity is not assigned to this resource: enable the system-assigned identity, or assign the user-assigned one."
	case mi && e.status == http.StatusNotFound:
		return "The managed identity endpoint has no token service at this address (HTTP 404): check IDENTITY_ENDPOINT."
	}
	for _, key := range []string{e.aadsts + "/" + cmp.Or(e.about, e.method), e.aadsts} {
		if a, ok := aadstsAdvice[key]; ok {
			return a[0] + " (AADSTS" + e.aadsts + "): " + a[1]
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
	graph := map[bool][2]string{true: {"SecurityIncident.Read.All", "security incidents"}, false: {"SecurityAlert.Read.All", "alerts_v2"}}[api == "graph_incidents"]
	switch {
	case status == http.StatusUnauthorized && siem:
		return "The API refused the token: it was issued for another audience. For the SIEM API the resource is https://graph.windows.net."
	case status == http.StatusUnauthorized:
		return "The API refused the token: it was issued for another audience. The scope must be the region's Graph host + /.default."
	case status == http.StatusForbidden && siem:
		return "The app lacks access to the SIEM API: enable SIEM integration for the app in the Defender portal, or use api = \"graph\"."
	case status == http.StatusForbidden:
		return "The app lacks the Graph application permission " + graph[0] + ", or admin consent to it: grant it and consent in Entra ID."
	case (status == http.StatusNotFound || status == http.StatusGone) && siem:
		return "There is no SIEM API at this address: check region or endpoint_url; where it is retired for the tenant, use api = \"graph\"."
	case status == http.StatusNotFound:
		return "There is no " + graph[1] + " resource at this address: check region or endpoint_url."
	case status == http.StatusTooManyRequests:
		return "The API is throttling this app: lower max_requests_per_minute, or share fewer apps per tenant."
	case status >= 500:
		return "The service is failing for now: try again later."
	}
	return "The API refused the request: see its message above."
}
