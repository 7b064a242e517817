package microsoft_defender

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// maxBodySnippet bounds what a message quotes of a text from a server.
const maxBodySnippet = 512

// maxQuotedBody is how much of an API error answer a message quotes, and
// maxReadBody how much of it is read: the secrets are redacted in what was
// read before the quote is cut, so that a secret crossing the cut is not
// quoted in part.
const (
	maxQuotedBody = 200
	maxReadBody   = 64 << 10
)

// apiClient sends authenticated GET requests to one Defender API.
type apiClient struct {
	name   string // the API's name in messages, e.g. "SIEM API"
	client *http.Client
	tokens tokenSource
	// maxBodySize caps the bytes read from one response.
	maxBodySize int64
	// statusMeaning explains a non-2xx status for this API.
	statusMeaning func(status int) string
	// now reads Retry-After dates on the plugin's clock.
	now func() time.Time
	// header holds further request headers of the API.
	header http.Header
	// apiNow is the API's own time, from the Date header of its latest
	// answer; zero before the first. A host clock that runs ahead would
	// otherwise end windows in the API's future (see chunk.reachable).
	apiNow time.Time
}

// statusError is a non-2xx answer of the API.
type statusError struct {
	api        string
	host       string
	status     int
	statusText string
	meaning    string
	body       string
	retryAfter time.Duration
	// capped says that Retry-After asked for more than maxRetryAfter.
	capped error
}

func (e *statusError) Error() string {
	return fmt.Sprintf("%s at %s answered %s (%s): %s", e.api, e.host, e.statusText, e.meaning, e.body)
}

// answerError is a 2xx answer that could not be read: malformed, cut
// short, or lost with the connection.
type answerError struct {
	api  string
	host string
	err  error
}

func (e *answerError) Error() string {
	return fmt.Sprintf("reading the %s answer from %s: %v", e.api, e.host, e.err)
}

func (e *answerError) Unwrap() error {
	return e.err
}

// errBodyTooLarge ends a response longer than max_body_size.
var errBodyTooLarge = errors.New("the answer is larger than max_body_size")

// get sends the request and returns the body of a 2xx answer, cut off
// with errBodyTooLarge past maxBodySize. Any other answer is a
// *statusError; a 401 also makes the token source forget the token sent.
func (c *apiClient) get(ctx context.Context, u *url.URL) (io.ReadCloser, error) {
	tok, err := c.tokens.token(ctx)
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, fmt.Errorf("building request for %s: %w", u.Host, err)
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", userAgent)
	for k, v := range c.header {
		req.Header[k] = v
	}

	resp, err := c.client.Do(req)
	if err != nil {
		// url.Error repeats the whole URL; the host is enough to act on.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, fmt.Errorf("%s request to %s failed: %w", c.name, u.Host, err)
	}
	if date, err := http.ParseTime(resp.Header.Get("Date")); err == nil {
		c.apiNow = date.UTC()
	}
	if resp.StatusCode/100 == 2 {
		return &limitedBody{body: resp.Body, remaining: c.maxBodySize}, nil
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusUnauthorized {
		c.tokens.invalidate(tok)
	}
	body, _ := io.ReadAll( //nolint:errcheck // a body cut short still tells what it has
		io.LimitReader(resp.Body, maxReadBody))
	retryAfter, retryAfterErr := parseRetryAfter(resp.Header.Get("Retry-After"), c.now())
	if retryAfterErr != nil {
		retryAfterErr = fmt.Errorf("%s at %s: %w", c.name, u.Host, retryAfterErr)
	}
	return nil, &statusError{
		api:        c.name,
		host:       u.Host,
		status:     resp.StatusCode,
		statusText: resp.Status,
		meaning:    c.statusMeaning(resp.StatusCode),
		// The bearer token is the one secret the API was sent.
		body:       bodySnippet(body, tok),
		retryAfter: retryAfter,
		capped:     retryAfterErr,
	}
}

// refuseProxyInClear refuses a plain http endpoint that the configured proxy
// would carry: the proxy would read what the request holds (key names the
// endpoint, what the secret). Through a proxy, https is a tunnel the proxy
// cannot read; the environment's proxies (use_system_proxy) already leave
// loopback alone, http_proxy_url does not.
func (m *MicrosoftDefender) refuseProxyInClear(key string, endpoint *url.URL, what string) error {
	if endpoint.Scheme != "http" {
		return nil
	}
	proxyFunc, err := m.HTTPProxy.Proxy()
	if err != nil || proxyFunc == nil {
		return nil //nolint:nilerr // no proxy; an invalid one is reported by httpClient
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

// commonStatusMeaning explains the statuses that mean the same for every
// API.
func commonStatusMeaning(status int) string {
	switch {
	case status == http.StatusTooManyRequests:
		return "throttled"
	case status >= 500:
		return "service error"
	default:
		return "unexpected answer"
	}
}

// limitedBody fails with errBodyTooLarge instead of reading past its limit,
// so an oversized answer is not mistaken for a truncated one.
type limitedBody struct {
	body      io.ReadCloser
	remaining int64
}

func (l *limitedBody) Read(p []byte) (int, error) {
	if l.remaining <= 0 {
		// One byte more tells a body of exactly the limit from a longer one.
		var probe [1]byte
		if n, err := l.body.Read(probe[:]); n == 0 {
			return 0, err
		}
		return 0, errBodyTooLarge
	}
	if int64(len(p)) > l.remaining {
		p = p[:l.remaining]
	}
	n, err := l.body.Read(p)
	l.remaining -= int64(n)
	return n, err
}

// Close implements io.Closer.
func (l *limitedBody) Close() error {
	return l.body.Close()
}

// maxRetryAfter is the longest wait a Retry-After is obeyed for. The
// longest quota the Defender APIs document is per hour (1500 requests), so
// an honest server never needs to ask for more; a longer value, such as
// the century of "Retry-After: 3153600000", would stop all polling, and is
// cut to this with an error that says so.
const maxRetryAfter = time.Hour

// parseRetryAfter reads a Retry-After header: seconds or an HTTP date.
// It returns 0 when the header is absent or unreadable, and maxRetryAfter
// with an error saying so when it asks for longer.
func parseRetryAfter(value string, now time.Time) (time.Duration, error) {
	value = strings.TrimSpace(value)
	var wait time.Duration
	var asked string // what an over-long value asks for
	if seconds, err := strconv.ParseInt(value, 10, 64); err == nil {
		// Compared before converting, which could overflow.
		if seconds > int64(maxRetryAfter/time.Second) {
			asked = strconv.FormatInt(seconds, 10) + " seconds"
		} else {
			wait = time.Duration(max(seconds, 0)) * time.Second
		}
	} else if at, err := http.ParseTime(value); err == nil && at.After(now) {
		if wait = at.Sub(now); wait > maxRetryAfter {
			asked = wait.Round(time.Second).String()
		}
	}
	if asked != "" {
		// A value that parsed is digits or an HTTP date: safe to quote.
		return maxRetryAfter, fmt.Errorf("the Retry-After of %q asks to wait %s, more than the %s the plugin waits at most: waiting %s",
			value, asked, maxRetryAfter, maxRetryAfter)
	}
	return wait, nil
}

// bodySnippet quotes at most maxQuotedBody bytes of an API error answer,
// without control characters and with the secrets redacted.
func bodySnippet(body []byte, secrets ...string) string {
	s := strings.TrimSpace(sanitize(redact(string(body), secrets...), maxQuotedBody))
	if s == "" {
		return "empty body"
	}
	return fmt.Sprintf("body %q", s)
}

// sanitize cuts s to at most n bytes, turns line breaks and tabs into
// spaces and other control characters and invalid UTF-8 into U+FFFD, so
// that a hostile body cannot forge log lines. It replaces rather than
// drops: dropping could join, after redaction, the halves of a secret that
// a server echoed with bytes in between.
func sanitize(s string, n int) string {
	if printableASCII(s) {
		return cutAtRune(s, n)
	}
	s = strings.Map(func(r rune) rune {
		switch {
		case r == '\n' || r == '\r' || r == '\t':
			return ' '
		case unicode.IsControl(r):
			return utf8.RuneError
		}
		return r // invalid UTF-8 arrives here as U+FFFD
	}, cutAtRune(s, n))
	return cutAtRune(s, n)
}

// printableASCII reports whether sanitize would keep s as it is: tags and
// messages usually are, and strings.Map calls its function for every rune.
func printableASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < ' ' || s[i] > '~' {
			return false
		}
	}
	return true
}

// cutAtRune cuts s to at most n bytes without splitting a UTF-8 sequence.
func cutAtRune(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}
