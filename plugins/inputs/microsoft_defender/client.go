package microsoft_defender

import (
	"cmp"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

const (
	maxBodySnippet = 512       // what a message quotes at most of a text from a server
	maxQuotedBody  = 200       // what it quotes of an API error answer,
	maxReadBody    = 64 << 10  // read and redacted whole, so that a secret crossing the cut is not quoted in part
	maxRetryAfter  = time.Hour // the APIs' longest quota is per hour; a century would stop all polling
	maxRedirects   = 5
)

// apiClient sends authenticated GET requests to one Defender API.
type apiClient struct {
	name          string // the API's name in messages, e.g. "SIEM API"
	client        *http.Client
	tokens        tokenSource
	maxBodySize   int64
	statusMeaning func(status int) string // explains a non-2xx status
	now           func() time.Time
	header        http.Header
	apiNow        time.Time // the latest answer's Date: a host clock running ahead ends no window in the API's future (chunk.reachable)
}

// statusError is a non-2xx answer of the API.
type statusError struct {
	msg        string
	status     int
	retryAfter time.Duration
	capped     error // Retry-After asked for more than maxRetryAfter
}

func (e *statusError) Error() string { return e.msg }

// answerError is a 2xx answer that could not be read.
func answerError(api, host string, err error) error {
	return fmt.Errorf("reading the %s answer from %s: %w", api, host, err)
}

// errBodyTooLarge ends a response longer than max_body_size.
var errBodyTooLarge = errors.New("the answer is larger than max_body_size")

// get returns the body of a 2xx answer (errBodyTooLarge past maxBodySize), else a *statusError; a 401 drops the token.
func (c *apiClient) get(ctx context.Context, u *url.URL) (io.ReadCloser, error) {
	tok, err := c.tokens.token(ctx)
	if err != nil {
		return nil, err
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil) //nolint:errcheck // a GET of a parsed URL cannot fail
	req.Header = http.Header{"Authorization": {"Bearer " + tok}, "Accept": {"application/json"}, "User-Agent": {userAgent}}
	maps.Copy(req.Header, c.header)
	resp, err := c.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s request to %s failed: %w", c.name, u.Host, bare(err))
	}
	if date, err := http.ParseTime(resp.Header.Get("Date")); err == nil {
		c.apiNow = date.UTC()
	}
	if resp.StatusCode/100 == 2 {
		return limitedBody{http.MaxBytesReader(nil, resp.Body, c.maxBodySize)}, nil
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusUnauthorized {
		c.tokens.invalidate(tok)
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, maxReadBody)) //nolint:errcheck // a body cut short still tells what it has
	e := &statusError{status: resp.StatusCode, msg: fmt.Sprintf("%s at %s answered %s (%s): %s", c.name, u.Host, statusText(resp.StatusCode),
		c.statusMeaning(resp.StatusCode), bodySnippet(body, tok))} // tok: the one secret the API was sent
	e.retryAfter, e.capped = parseRetryAfter(resp.Header.Get("Retry-After"), c.now(), c.name+" at "+u.Host)
	return nil, e
}

// statusText is the status's code and standard text: the reason phrase is the server's, which may echo a secret.
func statusText(code int) string {
	return strings.TrimSpace(strconv.Itoa(code) + " " + http.StatusText(code))
}

// limitedBody fails with errBodyTooLarge past its limit, so that an oversized answer is not taken for a cut one.
type limitedBody struct{ io.ReadCloser }

func (l limitedBody) Read(p []byte) (int, error) {
	n, err := l.ReadCloser.Read(p)
	if errors.As(err, new(*http.MaxBytesError)) {
		err = errBodyTooLarge
	}
	return n, err
}

// refuseProxyInClear refuses a plain http endpoint (key) that a proxy (http_proxy_url: even on loopback) would read.
func (m *MicrosoftDefender) refuseProxyInClear(key string, endpoint *url.URL, what string) error {
	proxyFunc, err := m.HTTPProxy.Proxy() // an invalid one is reported by httpClients
	if endpoint.Scheme != "http" || err != nil || proxyFunc == nil {
		return nil //nolint:nilerr // not proxied
	}
	if proxyURL, err := proxyFunc(&http.Request{URL: endpoint}); err != nil || proxyURL == nil {
		return nil //nolint:nilerr // not proxied
	}
	via, fix := "http_proxy_url", "remove http_proxy_url"
	if m.UseSystemProxy {
		via, fix = "use_system_proxy (the environment's HTTP_PROXY)", "exclude the host with NO_PROXY"
	}
	return fmt.Errorf("%s %q is plain http and %s sends it through a proxy, which would read the %s in clear: use https, or %s",
		key, endpoint, via, what, fix)
}

// bare is err without the URL or path that *url.Error and *os.PathError repeat: a URL may hold more than a message should.
func bare(err error) error {
	if ue, ok := errors.AsType[*url.Error](err); ok {
		return ue.Err
	}
	if pe, ok := errors.AsType[*os.PathError](err); ok {
		return pe.Err
	}
	return err
}

// statusMeanings say what an HTTP status means for each api, where it means more than commonStatusMeaning says.
var statusMeanings = map[string]map[int]string{
	"graph": {
		http.StatusBadRequest: "the query was refused: check service_sources and severities",
		http.StatusUnauthorized: "the token is invalid or expired, or was issued for another audience: scopes must be the region's " +
			"Graph host + /.default",
		http.StatusForbidden: "the app lacks the SecurityAlert.Read.All application permission, or admin consent for it: " +
			"grant it and consent in Entra ID",
		http.StatusNotFound: "no alerts_v2 at this address: check region or endpoint_url",
	},
	"graph_incidents": {
		http.StatusBadRequest: "the query was refused: check severities",
		http.StatusUnauthorized: "the token is invalid or expired, or was issued for another audience: scopes must be the region's " +
			"Graph host + /.default",
		http.StatusForbidden: "the app lacks the SecurityIncident.Read.All application permission, or admin consent for it: " +
			"grant it and consent in Entra ID",
		http.StatusNotFound: "no security incidents at this address: check region or endpoint_url",
	},
	"siem": {
		http.StatusUnauthorized: "the token is invalid or expired, was issued for another audience (the SIEM API's is " +
			"https://graph.windows.net), or the request is malformed",
		http.StatusForbidden: "the app lacks permission, or the tenant is not managed by this API or was deleted: enable SIEM " +
			"integration for the app in the Defender portal, or use api = \"graph\"",
		http.StatusNotFound: "no alerts API at this address: check region or endpoint_url; if it is retired for this tenant, use api = \"graph\"",
		http.StatusGone:     "the SIEM API is retired for this tenant: use api = \"graph\"",
	},
}

// statusMeaning explains a status of api's answers.
func statusMeaning(api string) func(status int) string {
	return func(status int) string { return cmp.Or(statusMeanings[api][status], commonStatusMeaning(status)) }
}

// commonStatusMeaning explains the statuses that mean the same for every API.
func commonStatusMeaning(status int) string {
	switch {
	case status == http.StatusTooManyRequests:
		return "throttled"
	case status >= 500:
		return "service error"
	}
	return "unexpected answer"
}

// parseRetryAfter reads from's Retry-After (seconds or date): 0 if absent or unreadable, maxRetryAfter and an error past it.
func parseRetryAfter(value string, now time.Time, from string) (time.Duration, error) {
	value = strings.TrimSpace(value)
	wait, asked := time.Duration(0), ""
	if seconds, err := strconv.ParseInt(value, 10, 64); err == nil && seconds > int64(maxRetryAfter/time.Second) {
		asked = value + " seconds" // not a Duration, which it may overflow
	} else if err == nil {
		wait = time.Duration(max(seconds, 0)) * time.Second
	} else if at, err := http.ParseTime(value); err == nil && at.After(now) {
		if wait = at.Sub(now); wait > maxRetryAfter {
			asked = wait.Round(time.Second).String()
		}
	}
	if asked != "" {
		return maxRetryAfter, fmt.Errorf("%s: the Retry-After of %q asks to wait %s, more than the %s the plugin waits at most: waiting %s",
			from, value, asked, maxRetryAfter, maxRetryAfter)
	}
	return wait, nil
}

// bodySnippet quotes at most maxQuotedBody bytes of an API error answer, sanitized and with the secrets redacted.
func bodySnippet(body []byte, secrets ...string) string {
	s := strings.TrimSpace(sanitize(redact(string(body), secrets...), maxQuotedBody))
	if s == "" {
		return "empty body"
	}
	return fmt.Sprintf("body %q", s)
}

// sanitize cuts s to n bytes and replaces line breaks and tabs with spaces, other controls and invalid UTF-8
// with U+FFFD, so that a body cannot forge log lines; dropping them could join the halves of an echoed secret.
func sanitize(s string, n int) string {
	for i := 0; i < len(s); i++ { // printable ASCII, the common case, is only cut
		if s[i] < ' ' || s[i] > '~' {
			return cutAtRune(strings.Map(func(r rune) rune {
				switch {
				case r == '\n' || r == '\r' || r == '\t':
					return ' '
				case unicode.IsControl(r):
					return utf8.RuneError
				}
				return r // invalid UTF-8 arrives here as U+FFFD
			}, cutAtRune(s, n)), n)
		}
	}
	return cutAtRune(s, n)
}

// cutAtRune cuts s to at most n bytes without splitting a UTF-8 sequence.
func cutAtRune(s string, n int) string {
	for n > 0 && n < len(s) && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:min(n, len(s))]
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return cutAtRune(s, n) + "..."
}

// countOf says "1 alert", "2 alerts".
func countOf(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

// errTruncated marks an answer that ended before its JSON did.
var errTruncated = errors.New("response truncated")

// failureClass is what a failed request means for the poll and its readers.
type failureClass int

const (
	failFinal      failureClass = iota // the same request would fail the same way
	failTransient                      // may go away by itself
	failToken                          // 401: one more try at once with a new token
	failUnreadable                     // the answer came and cannot be read
	failRefused                        // a 4xx other than 401, 403 and 429
)

// failure is a classified error with the server's Retry-After.
type failure struct {
	class  failureClass
	after  time.Duration
	capped error
}

func classify(err error) failure {
	var statusErr *statusError
	var tokenErr *tokenError
	var recordErr *recordSyntaxError
	var netErr net.Error
	timeout := errors.As(err, &netErr) && netErr.Timeout()
	switch {
	case errors.Is(err, errRedirect), errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded) && !timeout:
		return failure{class: failFinal}
	case errors.Is(err, errBodyTooLarge), errors.As(err, &recordErr):
		return failure{class: failUnreadable}
	case errors.As(err, &statusErr):
		switch s := statusErr.status; {
		case s == http.StatusUnauthorized:
			return failure{class: failToken}
		case isTransientStatus(s):
			return failure{class: failTransient, after: statusErr.retryAfter, capped: statusErr.capped}
		case s >= 400 && s < 500 && s != http.StatusForbidden:
			return failure{class: failRefused}
		}
		return failure{class: failFinal}
	case errors.As(err, &tokenErr):
		if tokenErr.err != nil || isTransientStatus(tokenErr.status) {
			return failure{class: failTransient, after: tokenErr.retryAfter, capped: tokenErr.capped}
		}
		return failure{class: failFinal}
	case errors.Is(err, errTruncated), errors.Is(err, io.ErrUnexpectedEOF), errors.As(err, &netErr):
		return failure{class: failTransient}
	}
	return failure{class: failFinal}
}

// isTransientStatus: throttling and server errors may go away by themselves.
func isTransientStatus(status int) bool {
	return status == http.StatusTooManyRequests || status >= 500
}

// backoff is the wait before retry attempt (0-based): 1 s doubled up to 30 s, jittered so that pollers do not retry in step.
func backoff(attempt int) time.Duration {
	d := min(time.Second<<min(attempt, 5), 30*time.Second)
	return d/2 + time.Duration(rand.Int64N(int64(d/2)+1)) //nolint:gosec // jitter, not security
}

// sleepContext waits for d or until ctx ends.
func sleepContext(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}

// errRedirect is a refused redirect: credentials go only to the configured token endpoint and API.
var errRedirect = errors.New("refused the redirect")

// refuseRedirects is the policy of token requests: Go would post the secret again wherever a 307 or 308 points.
func refuseRedirects(req *http.Request, via []*http.Request) error {
	return refusedRedirect("token request", req, via,
		"the credentials are sent only to the configured token endpoint; set login_endpoint to the address that answers")
}

// sameOriginRedirects is the policy of API requests: Go keeps Authorization on the same host with another scheme or port.
func sameOriginRedirects(req *http.Request, via []*http.Request) error {
	switch {
	case origin(req.URL) != origin(via[0].URL):
		return refusedRedirect("API request", req, via,
			"the token is sent only to the scheme, host and port of the configured endpoint; set endpoint_url to the address that answers")
	case len(via) >= maxRedirects:
		return refusedRedirect("API request", req, via, fmt.Sprintf("stopped after %d redirects", maxRedirects))
	}
	return nil
}

// refusedRedirect names origins only, as a path may carry anything.
func refusedRedirect(request string, req *http.Request, via []*http.Request, reason string) error {
	return fmt.Errorf("%w of the %s from %s to %s: %s", errRedirect, request, origin(via[len(via)-1].URL),
		originSeenFrom(req.URL, via[0].URL), reason)
}

// originSeenFrom is the origin of u, a server's choice, its host named only when it is ours': a server may
// echo a secret into a host name.
func originSeenFrom(u, ours *url.URL) string {
	if strings.EqualFold(u.Hostname(), ours.Hostname()) {
		return origin(u)
	}
	return originWithHost(u, "(another host)")
}

// origin is scheme://host:port of u, normalized so equal origins compare equal.
func origin(u *url.URL) string { return originWithHost(u, strings.ToLower(u.Hostname())) }

func originWithHost(u *url.URL, host string) string {
	scheme, port := strings.ToLower(u.Scheme), u.Port()
	if port == "" {
		port = map[string]string{"https": "443", "http": "80"}[scheme]
	}
	return scheme + "://" + net.JoinHostPort(host, port)
}

// redact replaces the exact and URL-escaped forms of each secret (query, path, and userinfo: a proxy's
// http://user:password@host) with "[redacted]".
func redact(s string, secrets ...string) string {
	var pairs []string
	for _, secret := range secrets {
		if secret != "" {
			userinfo := strings.TrimPrefix(url.UserPassword("", secret).String(), ":")
			pairs = append(pairs, secret, "[redacted]", url.QueryEscape(secret), "[redacted]", url.PathEscape(secret), "[redacted]",
				userinfo, "[redacted]")
		}
	}
	// One pass: a marker written is not searched again.
	return strings.NewReplacer(pairs...).Replace(s)
}

// proxyTransport redacts the password of the proxy a request went through (http_proxy_url's or the
// environment's) from errors, such as a refused tunnel's reason phrase.
type proxyTransport struct{ *http.Transport }

// RoundTrip implements http.RoundTripper.
func (t proxyTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.Transport.RoundTrip(req)
	if err == nil || t.Proxy == nil {
		return resp, err
	}
	if u, perr := t.Proxy(req); perr == nil && u != nil && u.User != nil {
		if password, ok := u.User.Password(); ok {
			// The second form is the Proxy-Authorization header's.
			err = &messageError{err, redact(err.Error(), password,
				base64.StdEncoding.EncodeToString([]byte(u.User.Username()+":"+password)))}
		}
	}
	return resp, err
}

// messageError has a message of its own (redacted) and keeps its cause for errors.As.
type messageError struct {
	error
	msg string
}

func (e *messageError) Error() string { return e.msg }
func (e *messageError) Unwrap() error { return e.error }
