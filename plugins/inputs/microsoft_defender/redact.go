package microsoft_defender

import (
	"net/http"
	"net/url"
	"strings"
)

// redact replaces the exact and URL-escaped forms of each secret with
// "[redacted]": an API error page that repeats the bearer token it was
// sent, or a proxy that repeats its credentials.
func redact(s string, secrets ...string) string {
	for _, secret := range secrets {
		if secret == "" {
			continue
		}
		for _, form := range []string{secret, url.QueryEscape(secret), url.PathEscape(secret)} {
			s = strings.ReplaceAll(s, form, "[redacted]")
		}
	}
	return s
}

// proxyTransport is the transport of a proxy with a password: its errors,
// such as the proxy's refusal of a tunnel whose reason phrase the proxy
// writes, come without the password or the Proxy-Authorization header.
type proxyTransport struct {
	http.RoundTripper
	secrets []string
}

// RoundTrip implements http.RoundTripper.
func (t *proxyTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.RoundTripper.RoundTrip(req)
	if err != nil {
		err = &redactedError{msg: redact(err.Error(), t.secrets...), cause: err}
	}
	return resp, err
}

// redactedError keeps its cause for errors.As while its message is
// redacted.
type redactedError struct {
	msg   string
	cause error
}

func (e *redactedError) Error() string { return e.msg }
func (e *redactedError) Unwrap() error { return e.cause }

// isHexDigit is decode.go's.
func isHexDigit(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}
