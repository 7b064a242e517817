package microsoft_defender

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"

	"github.com/influxdata/telegraf/config"
)

// tokenRenewBefore is how long before expiry a cached token is replaced, so
// that a token never expires between being handed out and being used.
const tokenRenewBefore = 2 * time.Minute

// tokenSource hands out bearer tokens for the API.
type tokenSource interface {
	token(ctx context.Context) (string, error)
	// invalidate forgets a token the API refused, so the next call fetches
	// a new one.
	invalidate(token string)
	// secrets returns the values that must never appear in a message.
	secrets() []string
}

// staticToken hands out the configured access_token, read from the secret
// store on every use so that a rotated secret takes effect.
type staticToken struct {
	secret *config.Secret
}

func (s *staticToken) token(context.Context) (string, error) {
	buf, err := s.secret.Get()
	if err != nil {
		return "", fmt.Errorf("reading access_token: %w", err)
	}
	defer buf.Destroy()
	tok := buf.String()
	if err := checkBearerToken(tok); err != nil {
		return "", fmt.Errorf("access_token cannot be sent: %w", err)
	}
	return tok, nil
}

func (*staticToken) invalidate(string) {}

func (s *staticToken) secrets() []string {
	return secretValues(s.secret)
}

// cachedToken reuses a token from Azure AD until shortly before it expires,
// or until the API refuses it.
type cachedToken struct {
	source  tokenFetcher
	current *oauth2.Token
}

func (c *cachedToken) token(ctx context.Context) (string, error) {
	if c.current != nil && (c.current.Expiry.IsZero() || time.Until(c.current.Expiry) > tokenRenewBefore) {
		return c.current.AccessToken, nil
	}
	tok, err := c.source.fetch(ctx)
	if err != nil {
		return "", err
	}
	c.current = tok
	return tok.AccessToken, nil
}

func (c *cachedToken) invalidate(token string) {
	if c.current != nil && c.current.AccessToken == token {
		c.current = nil
	}
}

func (c *cachedToken) secrets() []string {
	out := c.source.secrets()
	if c.current != nil {
		out = append(out, c.current.AccessToken)
	}
	return out
}

// tokenFetcher asks the sign-in service for a new token.
type tokenFetcher interface {
	fetch(ctx context.Context) (*oauth2.Token, error)
	// secrets returns the values that must never appear in a message.
	secrets() []string
}

// aadToken fetches tokens from Azure AD with the client credentials grant,
// or the refresh token grant when a refresh token is configured. The v1
// endpoint takes `resource`, the v2 endpoint `scope`.
type aadToken struct {
	client       *http.Client
	tokenURL     string
	clientID     string
	clientSecret *config.Secret
	resource     string
	scopes       []string

	// now reads Retry-After dates on the plugin's clock.
	now func() time.Time

	// refreshToken is the latest refresh token: the configured one until
	// Azure AD hands out a new one.
	refreshToken *config.Secret
}

func (a *aadToken) fetch(ctx context.Context) (*oauth2.Token, error) {
	secret, err := a.clientSecret.Get()
	if err != nil {
		return nil, fmt.Errorf("reading client_secret: %w", err)
	}
	defer secret.Destroy()

	cfg := clientcredentials.Config{
		ClientID:       a.clientID,
		ClientSecret:   secret.String(),
		TokenURL:       a.tokenURL,
		Scopes:         a.scopes,
		AuthStyle:      oauth2.AuthStyleInParams,
		EndpointParams: url.Values{},
	}
	if a.resource != "" {
		cfg.EndpointParams.Set("resource", a.resource)
	}

	if a.refreshToken != nil && !a.refreshToken.Empty() {
		refresh, err := a.refreshToken.Get()
		if err != nil {
			return nil, fmt.Errorf("reading refresh_token: %w", err)
		}
		defer refresh.Destroy()
		// clientcredentials lets grant_type be overridden; the rest of the
		// refresh grant's form is the client credentials form.
		cfg.EndpointParams.Set("grant_type", "refresh_token")
		cfg.EndpointParams.Set("refresh_token", refresh.String())
	}

	tok, err := cfg.Token(context.WithValue(ctx, oauth2.HTTPClient, a.client))
	if err != nil {
		return nil, a.describe(err, cfg.ClientSecret, cfg.EndpointParams.Get("refresh_token"))
	}
	// A token that cannot be a header value would fail every request it
	// was cached for; the answer is refused whole, its refresh token too.
	if err := checkBearerToken(tok.AccessToken); err != nil {
		return nil, &tokenError{host: hostOf(a.tokenURL), description: "the access_token it answered cannot be sent: " + err.Error()}
	}
	if tok.RefreshToken != "" && a.refreshToken != nil {
		rotated := config.NewSecret([]byte(tok.RefreshToken))
		a.refreshToken = &rotated
	}
	return tok, nil
}

func (a *aadToken) secrets() []string {
	return secretValues(a.clientSecret, a.refreshToken)
}

// tokenError is a failed token request. Its message names the endpoint's
// host, the HTTP status and Azure AD's own code (AADSTSnnnn), and nothing of
// the request, which holds the secrets.
type tokenError struct {
	host        string
	status      int    // 0 when no answer came, or an answer that is not an error
	statusText  string // e.g. "401 Unauthorized"
	code        string // OAuth error code, e.g. invalid_client
	description string
	retryAfter  time.Duration
	capped      error // Retry-After asked for more than maxRetryAfter
	err         error // the transport's error when no answer came
}

func (e *tokenError) Error() string {
	switch {
	case e.err != nil:
		return fmt.Sprintf("token request to %s failed: %v", e.host, e.err)
	case e.status == 0 && e.code == "":
		return fmt.Sprintf("token request to %s failed: %s", e.host, e.description)
	case e.code == "":
		return fmt.Sprintf("token request to %s failed: HTTP %s: %s", e.host, e.statusText, e.description)
	default:
		return fmt.Sprintf("token request to %s failed: HTTP %s: %s: %s", e.host, e.statusText, e.code, e.description)
	}
}

func (e *tokenError) Unwrap() error {
	return e.err
}

// describe turns a token endpoint failure into a tokenError; secrets the
// server echoed back are redacted.
func (a *aadToken) describe(err error, secrets ...string) error {
	e := &tokenError{host: hostOf(a.tokenURL)}
	var re *oauth2.RetrieveError
	if !errors.As(err, &re) {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		e.err = err
		return e
	}
	if re.Response != nil {
		e.status = re.Response.StatusCode
		e.statusText = re.Response.Status
		e.retryAfter, e.capped = parseRetryAfter(re.Response.Header.Get("Retry-After"), a.now())
		if e.capped != nil {
			e.capped = fmt.Errorf("token endpoint %s: %w", e.host, e.capped)
		}
	}
	if re.ErrorCode == "" {
		// Not an OAuth error: a proxy's or gateway's page, the likeliest to
		// echo the form it was sent.
		e.description = bodySnippet(re.Body, secrets...)
		return e
	}
	e.code = outsideText([]byte(re.ErrorCode), 64, false, secrets...)
	// Azure AD appends trace and correlation ids on further lines.
	description, _, more := strings.Cut(string(redact([]byte(re.ErrorDescription), secrets...)), "\n")
	e.description = strings.TrimSpace(outsideText([]byte(description), maxBodySnippet, more, secrets...))
	return e
}

// secretValues reads secrets for redaction; unreadable or empty ones are
// skipped.
func secretValues(secrets ...*config.Secret) []string {
	out := make([]string, 0, len(secrets))
	for _, s := range secrets {
		if s == nil || s.Empty() {
			continue
		}
		buf, err := s.Get()
		if err != nil {
			continue
		}
		out = append(out, buf.String())
		buf.Destroy()
	}
	return out
}

func hostOf(rawURL string) string {
	u, err := url.Parse(rawURL)
	if err != nil || u.Host == "" {
		return "(invalid URL)"
	}
	return u.Host
}

// checkBearerToken refuses a token that RFC 6750 does not allow in an
// Authorization header (b64token): a line break in it would end the header,
// or let it add others. The message tells where without repeating the
// token's own characters.
func checkBearerToken(tok string) error {
	end := len(tok)
	for end > 0 && tok[end-1] == '=' {
		end--
	}
	if end == 0 {
		return errors.New("it is empty")
	}
	for i := range end {
		switch c := tok[i]; {
		case isAlnum(c) || strings.IndexByte("-._~+/", c) >= 0:
		case c == '=':
			return fmt.Errorf("byte %d is '=', allowed only as padding at the end of a bearer token (RFC 6750)", i)
		default:
			return fmt.Errorf("byte %d is 0x%02x, not allowed in a bearer token (RFC 6750)", i, c)
		}
	}
	return nil
}
