package microsoft_defender

import (
	"errors"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// probeWindow is how far back the probe's request reaches.
const probeWindow = time.Hour

// Probe implements telegraf.ProbePlugin: a token and one minimal request, emitting nothing and keeping the cursor.
func (m *MicrosoftDefender) Probe() error {
	// The step ("token", "request" or "answer"), what failed and the likely fix: all that the log says of a failed
	// start-up with startup_error_behavior = "probe"; -check reads this form.
	fail := func(step string, err error) error {
		return &messageError{err, strings.TrimSuffix(step+": "+err.Error(), ".") + ". Likely fix: " + advice(err, m.API)}
	}
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

// aadstsAdvice is the likely fix per AADSTS number (qualified by the method where it means more than one thing), for
// the common failures; the others get the general advice.
var aadstsAdvice = map[string]string{
	"7000215": "Azure AD refused the client secret (AADSTS7000215): it is wrong, or it is the secret's ID rather than its value. " +
		"Create a new client secret for the app and set its value as client_secret.",
	"7000222": "The client secret has expired (AADSTS7000222): create a new client secret for the app and set its value as client_secret.",
	"700016":  "No app with this client_id exists in the tenant (AADSTS700016): check client_id, and that tenant_id is the app's tenant.",
	"90002":   "The tenant does not exist (AADSTS90002): check tenant_id, and that login_endpoint (or region) is the tenant's cloud.",
	"700027": "Azure AD refused the certificate (AADSTS700027): register the one in client_certificate on the app (Certificates & secrets), " +
		"a new one if it expired, or set send_certificate_chain = true for subject name/issuer authentication.",
	"70021": "No federated credential of the app matches the token (AADSTS70021): add one with the cluster's OIDC issuer, the subject " +
		"system:serviceaccount:NAMESPACE:NAME and the audience api://AzureADTokenExchange.",
	"700024/workload identity": "The federated token has expired (AADSTS700024): federated_token_file must be the token the kubelet rotates.",
}

// advice says what most likely fixes a failed probe, in words a security engineer can act on.
func advice(err error, api string) string {
	var t *tokenError
	var s *statusError
	signIn, siem, status := errors.As(err, &t), api == "siem", 0
	mi := signIn && t.method == "managed identity"
	if errors.As(err, &s) {
		status = s.status
	}
	permission, resource := "SecurityAlert.Read.All", "alerts_v2"
	if api == "graph_incidents" {
		permission, resource = "SecurityIncident.Read.All", "security incidents"
	}
	switch {
	case signIn && t.host == "":
		return "The sign-in could not start: see the message above (a managed identity: is one assigned? On Arc, add Telegraf's user to himds)."
	case mi && t.err != nil:
		return "No managed identity endpoint answered: the plugin runs outside Azure, or IMDS (169.254.169.254) is blocked by a firewall " +
			"or proxy (add it to NO_PROXY); on App Service, Functions or Arc IDENTITY_ENDPOINT must be set."
	case signIn && t.err != nil:
		return "The sign-in service could not be reached: check login_endpoint, the network path and the proxy."
	case mi && t.status == http.StatusBadRequest:
		return "The managed identity is not assigned to this resource: enable the system-assigned identity, or assign the user-assigned one."
	case signIn && aadstsAdvice[t.aadsts+"/"+t.method] != "":
		return aadstsAdvice[t.aadsts+"/"+t.method]
	case signIn && aadstsAdvice[t.aadsts] != "":
		return aadstsAdvice[t.aadsts]
	case signIn && t.status == 0:
		return "The sign-in service answered no usable token: check login_endpoint (IDENTITY_ENDPOINT for a managed identity), " +
			"and a proxy that may answer in its place."
	case signIn && isTransientStatus(t.status):
		return "The sign-in service is throttling or failing for now: try again later."
	case signIn:
		return "The sign-in service refused the request: see its message above."
	case status == http.StatusUnauthorized && siem:
		return "The API refused the token: it was issued for another audience. For the SIEM API the resource is https://graph.windows.net."
	case status == http.StatusUnauthorized:
		return "The API refused the token: it was issued for another audience. The scope must be the region's Graph host + /.default."
	case status == http.StatusForbidden && siem:
		return "The app lacks access to the SIEM API: enable SIEM integration for the app in the Defender portal, or use api = \"graph\"."
	case status == http.StatusForbidden:
		return "The app lacks the Graph application permission " + permission + ", or admin consent to it: grant it and consent in Entra ID."
	case (status == http.StatusNotFound || status == http.StatusGone) && siem:
		return "There is no SIEM API at this address: check region or endpoint_url; if it is retired for this tenant, use api = \"graph\"."
	case status == http.StatusNotFound:
		return "There is no " + resource + " resource at this address: check region or endpoint_url."
	case status == http.StatusTooManyRequests:
		return "The API is throttling this app: lower max_requests_per_minute, or share fewer apps per tenant."
	case status >= 500:
		return "The service is failing for now: try again later."
	case status != 0:
		return "The API refused the request: see its message above."
	case errors.As(err, new(*answerError)):
		return "The API's answer could not be read: check endpoint_url and max_body_size, and a proxy that may answer in its place."
	}
	return "The API could not be reached: check region or endpoint_url, DNS, firewall rules, the proxy (use_system_proxy, " +
		"http_proxy_url), and tls_ca if a TLS-intercepting proxy stands between this host and Microsoft."
}
