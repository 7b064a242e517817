package microsoft_defender

import (
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
)

// maxRedirects is how many redirects one API request may follow.
const maxRedirects = 5

// redirectError is a redirect the plugin refused to follow: credentials
// travel only to the configured token endpoint and API, so a redirect of
// the token request, or of an API request to another origin, is an error.
type redirectError struct {
	request string // "token request" or the API's name
	from    string // origin of the refused hop's source
	to      string // origin it pointed to; no path, which may carry anything
	reason  string
}

func (e *redirectError) Error() string {
	return fmt.Sprintf("refused the redirect of the %s from %s to %s: %s", e.request, e.from, e.to, e.reason)
}

// refuseRedirects is the redirect policy of token requests: the form holds
// the client secret, and Go would post it again to wherever a 307 or 308
// points.
func refuseRedirects(req *http.Request, via []*http.Request) error {
	return &redirectError{
		request: "token request",
		from:    origin(via[len(via)-1].URL),
		to:      origin(req.URL),
		reason:  "the credentials are sent only to the configured token endpoint; set login_endpoint to the address that answers",
	}
}

// sameOriginRedirects is the redirect policy of API requests: a redirect is
// followed only to the scheme, host and port of the configured endpoint.
// Go keeps the Authorization header on a redirect to the same host name
// even when the scheme or port change, which would send the bearer token
// in clear or to another service.
func sameOriginRedirects(req *http.Request, via []*http.Request) error {
	refuse := func(reason string) error {
		return &redirectError{request: "API request", from: origin(via[len(via)-1].URL), to: origin(req.URL), reason: reason}
	}
	switch {
	case origin(req.URL) != origin(via[0].URL):
		return refuse("the token is sent only to the scheme, host and port of the configured endpoint; set endpoint_url to the address that answers")
	case len(via) >= maxRedirects:
		return refuse(fmt.Sprintf("stopped after %d redirects", maxRedirects))
	}
	return nil
}

// origin is scheme://host:port of u, with the scheme's default port made
// explicit and the host in lower case, so that equal origins compare equal.
func origin(u *url.URL) string {
	port := u.Port()
	if port == "" {
		switch u.Scheme {
		case "https":
			port = "443"
		case "http":
			port = "80"
		}
	}
	return strings.ToLower(u.Scheme) + "://" + net.JoinHostPort(strings.ToLower(u.Hostname()), port)
}
