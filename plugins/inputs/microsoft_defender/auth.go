package microsoft_defender

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"

	"github.com/influxdata/telegraf/config"
)

// tokenRenewBefore is how long before expiry a cached token is replaced, so
// that a token never expires between being handed out and being used.
const tokenRenewBefore = 2 * time.Minute

// staticToken hands out the configured access_token, read from the secret
// store on every use so that a rotated secret takes effect.
type staticToken struct {
	secret *config.Secret
}

// Token implements oauth2.TokenSource.
func (s *staticToken) Token() (*oauth2.Token, error) {
	buf, err := s.secret.Get()
	if err != nil {
		return nil, fmt.Errorf("reading access_token: %w", err)
	}
	defer buf.Destroy()
	return &oauth2.Token{AccessToken: buf.String(), TokenType: "Bearer"}, nil
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

	// refreshToken is the latest refresh token: the configured one until
	// Azure AD hands out a new one.
	mu           sync.Mutex
	refreshToken *config.Secret
}

// Token implements oauth2.TokenSource; every call asks Azure AD.
func (a *aadToken) Token() (*oauth2.Token, error) {
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

	a.mu.Lock()
	defer a.mu.Unlock()
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

	ctx := context.WithValue(context.Background(), oauth2.HTTPClient, a.client)
	tok, err := cfg.Token(ctx)
	if err != nil {
		return nil, a.describe(err, cfg.ClientSecret, cfg.EndpointParams.Get("refresh_token"))
	}
	if tok.RefreshToken != "" && a.refreshToken != nil {
		rotated := config.NewSecret([]byte(tok.RefreshToken))
		a.refreshToken = &rotated
	}
	return tok, nil
}

// describe turns a token endpoint failure into an error that names the
// endpoint's host and Azure AD's own code (AADSTSnnnn) and description, and
// nothing of the request, which holds the secrets; secrets echoed back by
// the server are redacted.
func (a *aadToken) describe(err error, secrets ...string) error {
	host := hostOf(a.tokenURL)
	var re *oauth2.RetrieveError
	if !errors.As(err, &re) {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return fmt.Errorf("token request to %s failed: %w", host, err)
	}
	status := ""
	if re.Response != nil {
		status = re.Response.Status
	}
	if re.ErrorCode == "" {
		return fmt.Errorf("token request to %s failed: HTTP %s: %s", host, status, bodySnippet(redact(re.Body, secrets...)))
	}
	// Azure AD appends trace and correlation ids on further lines.
	description, _, _ := strings.Cut(string(redact([]byte(re.ErrorDescription), secrets...)), "\n")
	return fmt.Errorf("token request to %s failed: HTTP %s: %s: %s", host, status, re.ErrorCode,
		sanitize(strings.TrimSpace(description), maxBodySnippet))
}

func hostOf(rawURL string) string {
	u, err := url.Parse(rawURL)
	if err != nil || u.Host == "" {
		return "(invalid URL)"
	}
	return u.Host
}
