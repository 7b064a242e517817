package microsoft_defender

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"unicode"

	"golang.org/x/oauth2"
)

// maxBodySnippet is how much of an error response an error message quotes.
const maxBodySnippet = 512

// apiClient sends authenticated GET requests to one Defender API.
type apiClient struct {
	name   string // the API's name in messages, e.g. "SIEM API"
	client *http.Client
	tokens oauth2.TokenSource
	// statusMeaning explains a non-2xx status for this API.
	statusMeaning func(status int) string
}

// get sends the request and returns the response body of a 2xx answer; any
// other answer is an error naming the status, its meaning, the host and the
// start of the body.
func (c *apiClient) get(ctx context.Context, u *url.URL) (io.ReadCloser, error) {
	tok, err := c.tokens.Token()
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, fmt.Errorf("building request for %s: %w", u.Host, err)
	}
	req.Header.Set("Authorization", "Bearer "+tok.AccessToken)
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", userAgent)

	resp, err := c.client.Do(req)
	if err != nil {
		// url.Error repeats the whole URL; the host is enough to act on.
		var ue *url.Error
		if ok := asURLError(err, &ue); ok {
			err = ue.Err
		}
		return nil, fmt.Errorf("%s request to %s failed: %w", c.name, u.Host, err)
	}
	if resp.StatusCode/100 == 2 {
		return resp.Body, nil
	}
	defer resp.Body.Close()
	// Read past the quoted part so that a token straddling its end is
	// still redacted whole.
	snippet, _ := io.ReadAll( //nolint:errcheck // a body cut short still tells what it has
		io.LimitReader(resp.Body, int64(maxBodySnippet+len(tok.AccessToken))))
	return nil, fmt.Errorf("%s at %s answered %s (%s): %s",
		c.name, u.Host, resp.Status, c.statusMeaning(resp.StatusCode), bodySnippet(redact(snippet, tok.AccessToken)))
}

func asURLError(err error, target **url.Error) bool {
	ue, ok := err.(*url.Error) //nolint:errorlint // http.Client.Do returns *url.Error unwrapped
	if ok {
		*target = ue
	}
	return ok
}

// bodySnippet quotes at most maxBodySnippet bytes of a response body.
func bodySnippet(body []byte) string {
	s := sanitize(string(body), maxBodySnippet)
	if s == "" {
		return "empty body"
	}
	return fmt.Sprintf("body %q", s)
}

// redact blanks out secrets a server echoed back, as they were sent or
// URL-encoded: an error page that repeats the Authorization header or the
// token request's form.
func redact(body []byte, secrets ...string) []byte {
	for _, secret := range secrets {
		if secret == "" {
			continue
		}
		for _, form := range []string{secret, url.QueryEscape(secret), url.PathEscape(secret)} {
			body = bytes.ReplaceAll(body, []byte(form), []byte("[redacted]"))
		}
	}
	return body
}

// sanitize cuts s to at most n bytes of valid UTF-8 and removes control
// characters, so that a hostile body cannot forge log lines.
func sanitize(s string, n int) string {
	if len(s) > n {
		s = s[:n]
	}
	s = strings.ToValidUTF8(s, "")
	return strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return -1
		}
		return r
	}, s)
}
