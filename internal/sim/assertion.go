package sim

import (
	"bytes"
	"cmp"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1" //nolint:gosec // x5t is a SHA-1 thumbprint by definition (RFC 7515)
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// clientAssertionType is the only client_assertion_type Azure AD takes
// (RFC 7523).
const clientAssertionType = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"

// FederatedAudience is the audience Azure AD expects in a federated token.
const FederatedAudience = "api://AzureADTokenExchange"

// FederatedCredential is a federated identity credential of the app: Azure
// AD exchanges a token of this issuer, subject and audience for one of its
// own (workload identity federation).
type FederatedCredential struct {
	Issuer   string
	Subject  string
	Audience string // FederatedAudience when empty
}

// assertionFailure is a refused client assertion: the status and AADSTS
// code Azure AD answers with.
type assertionFailure struct {
	status int
	code   string
	aadsts int
	desc   string
}

// checkClientAssertion verifies a client assertion as Azure AD does: a
// certificate assertion (iss = the client) against the app's registered
// certificates, or a federated token against its federated credentials.
func (s *Server) checkClientAssertion(r *http.Request) *assertionFailure {
	if t := r.PostForm.Get("client_assertion_type"); t != clientAssertionType {
		return &assertionFailure{http.StatusBadRequest, "invalid_request", 50027,
			fmt.Sprintf("The client_assertion_type '%s' is not supported.", t)}
	}
	raw := r.PostForm.Get("client_assertion")
	var claims jwt.RegisteredClaims
	unverified, _, err := jwt.NewParser().ParseUnverified(raw, &claims)
	if err != nil {
		return &assertionFailure{http.StatusBadRequest, "invalid_request", 50027, "JWT token is invalid or malformed."}
	}
	if claims.Issuer != s.cfg.ClientID {
		return s.checkFederated(raw)
	}
	return s.checkCertificateAssertion(r, raw, unverified, &claims)
}

func (s *Server) checkCertificateAssertion(r *http.Request, raw string, unverified *jwt.Token, claims *jwt.RegisteredClaims) *assertionFailure {
	cert, failure := s.signingCertificate(unverified)
	if failure != nil {
		return failure
	}
	now := s.now()
	if now.After(cert.NotAfter) {
		return &assertionFailure{http.StatusUnauthorized, "invalid_client", 700027, fmt.Sprintf(
			"The certificate with identifier used to sign the client assertion is expired on application. [Reason - The key used is expired., "+
				"Thumbprint of key used by client: '%s', Found key 'Start=%s, End=%s']",
			thumbprintHex(cert), cert.NotBefore.UTC().Format("01/02/2006 15:04:05"), cert.NotAfter.UTC().Format("01/02/2006 15:04:05"))}
	}
	if _, err := jwt.ParseWithClaims(raw, &jwt.RegisteredClaims{}, func(*jwt.Token) (any, error) { return cert.PublicKey, nil },
		jwt.WithValidMethods([]string{"PS256", "RS256"}), jwt.WithoutClaimsValidation()); err != nil {
		return &assertionFailure{http.StatusUnauthorized, "invalid_client", 700027,
			"Client assertion failed signature validation. [Reason - The key was found but use of the key to verify the signature failed.]"}
	}
	if claims.Subject != s.cfg.ClientID {
		return &assertionFailure{http.StatusBadRequest, "invalid_client", 700021,
			"Client assertion application identifier doesn't match 'client_id' parameter."}
	}
	if want := tokenEndpointOf(r); !audienceIs(claims.Audience, want) {
		return &assertionFailure{http.StatusBadRequest, "invalid_client", 700212,
			fmt.Sprintf("The audience of the client assertion %q is not the token endpoint '%s'.", claims.Audience, want)}
	}
	if failure := validTimeRange(claims, now); failure != nil {
		return failure
	}
	if claims.ID == "" {
		return &assertionFailure{http.StatusBadRequest, "invalid_client", 50027, "The client assertion has no jti claim."}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, used := s.usedJTIs[claims.ID]; used {
		return &assertionFailure{http.StatusBadRequest, "invalid_client", 50027,
			"The client assertion's jti was already used: an assertion is accepted once."}
	}
	s.usedJTIs[claims.ID] = claims.ExpiresAt.Time
	for jti, expiry := range s.usedJTIs {
		if now.After(expiry) {
			delete(s.usedJTIs, jti)
		}
	}
	return nil
}

// signingCertificate finds the certificate an assertion was signed with:
// by its thumbprint among the registered ones, or, for subject name/issuer
// authentication, the chain sent in x5c.
func (s *Server) signingCertificate(token *jwt.Token) (*x509.Certificate, *assertionFailure) {
	var thumbprint []byte
	for _, h := range []string{"x5t#S256", "x5t"} {
		if v, ok := token.Header[h].(string); ok {
			thumbprint = decodeBase64(v)
			break
		}
	}
	for _, cert := range s.cfg.ClientCertificates {
		sum256 := sha256.Sum256(cert.Raw)
		sum1 := sha1.Sum(cert.Raw) //nolint:gosec // see the import
		if thumbprint != nil && (bytes.Equal(thumbprint, sum256[:]) || bytes.Equal(thumbprint, sum1[:])) {
			return cert, nil
		}
	}
	if leaf := s.subjectNameCertificate(token); leaf != nil {
		return leaf, nil
	}
	return nil, &assertionFailure{http.StatusUnauthorized, "invalid_client", 700027, fmt.Sprintf(
		"The certificate with identifier used to sign the client assertion is not registered on application. [Reason - The key was not found., "+
			"Thumbprint of key used by client: '%X', Please visit the Azure Portal, Graph Explorer or directly use MS Graph "+
			"to see configured keys for app Id '%s'.]",
		thumbprint, s.cfg.ClientID)}
}

// subjectNameCertificate returns the leaf of the x5c chain when the app
// trusts certificates of its subject from its issuer.
func (s *Server) subjectNameCertificate(token *jwt.Token) *x509.Certificate {
	chain, _ := token.Header["x5c"].([]any)
	if s.cfg.SubjectNameIssuer == nil || len(chain) == 0 {
		return nil
	}
	certs := make([]*x509.Certificate, 0, len(chain))
	for _, c := range chain {
		text, _ := c.(string)
		der, err := base64.StdEncoding.DecodeString(text)
		if err != nil {
			return nil
		}
		cert, err := x509.ParseCertificate(der)
		if err != nil {
			return nil
		}
		certs = append(certs, cert)
	}
	roots := x509.NewCertPool()
	roots.AddCert(s.cfg.SubjectNameIssuer)
	intermediates := x509.NewCertPool()
	for _, c := range certs[1:] {
		intermediates.AddCert(c)
	}
	// Expiry is judged with the registered certificates' rule, after the match.
	_, err := certs[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: intermediates, CurrentTime: certs[0].NotBefore,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
	if err != nil || certs[0].Subject.CommonName != s.cfg.SubjectName {
		return nil
	}
	return certs[0]
}

// checkFederated exchanges a federated token: signed by an issuer the
// simulator speaks for, and matching one of the app's federated credentials.
func (s *Server) checkFederated(raw string) *assertionFailure {
	var claims jwt.RegisteredClaims
	if _, err := jwt.ParseWithClaims(raw, &claims, func(*jwt.Token) (any, error) { return &s.federatedSigner().PublicKey, nil },
		jwt.WithValidMethods([]string{"RS256"}), jwt.WithoutClaimsValidation()); err != nil {
		return &assertionFailure{http.StatusUnauthorized, "invalid_client", 5002738,
			"The client assertion's signature does not verify against the keys of its issuer."}
	}
	matched := false
	for _, fc := range s.cfg.FederatedCredentials {
		audience := fc.Audience
		if audience == "" {
			audience = FederatedAudience
		}
		if fc.Issuer == claims.Issuer && fc.Subject == claims.Subject && audienceIs(claims.Audience, audience) {
			matched = true
		}
	}
	if !matched {
		return &assertionFailure{http.StatusBadRequest, "invalid_client", 70021, fmt.Sprintf(
			"No matching federated identity record found for presented assertion. Assertion Issuer: '%s'. Assertion Subject: '%s'. Assertion Audience: '%s'.",
			claims.Issuer, claims.Subject, strings.Join(claims.Audience, ","))}
	}
	return validTimeRange(&claims, s.now())
}

func validTimeRange(claims *jwt.RegisteredClaims, now time.Time) *assertionFailure {
	// Azure AD allows five minutes of clock skew.
	const skew = 5 * time.Minute
	if claims.ExpiresAt == nil || !now.Before(claims.ExpiresAt.Add(skew)) || claims.NotBefore != nil && now.Add(skew).Before(claims.NotBefore.Time) {
		var nbf, exp string
		if claims.NotBefore != nil {
			nbf = claims.NotBefore.UTC().Format(time.RFC3339)
		}
		if claims.ExpiresAt != nil {
			exp = claims.ExpiresAt.UTC().Format(time.RFC3339)
		}
		return &assertionFailure{http.StatusBadRequest, "invalid_client", 700024, fmt.Sprintf(
			"Client assertion is not within its valid time range. Current time: %s, assertion valid from %s, expiry time of assertion %s.",
			now.Format(time.RFC3339), nbf, exp)}
	}
	return nil
}

// FederatedToken issues a token as the cluster's OIDC issuer would
// project it into a pod, signed with a key only the simulator holds.
func (s *Server) FederatedToken(issuer, subject string, notBefore, expiry time.Time) string {
	claims := jwt.RegisteredClaims{
		Issuer:    issuer,
		Subject:   subject,
		Audience:  jwt.ClaimStrings{FederatedAudience},
		NotBefore: jwt.NewNumericDate(notBefore),
		IssuedAt:  jwt.NewNumericDate(notBefore),
		ExpiresAt: jwt.NewNumericDate(expiry),
		ID:        randomUUID(),
	}
	signed, err := jwt.NewWithClaims(jwt.SigningMethodRS256, claims).SignedString(s.federatedSigner())
	if err != nil {
		panic(err) // signing with a valid RSA key does not fail
	}
	return signed
}

// serveOpenIDConfiguration serves the document MSAL reads before its first
// token request, for the tenant's v2.0 endpoints on this host.
func (s *Server) serveOpenIDConfiguration(w http.ResponseWriter, r *http.Request) {
	tenant := r.PathValue("tenant")
	if tenant != s.cfg.TenantID {
		writeAADError(w, http.StatusBadRequest, "invalid_tenant", 90002,
			fmt.Sprintf("Tenant '%s' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud.", tenant))
		return
	}
	base := baseURLOf(r) + "/" + tenant
	writeJSON(w, http.StatusOK, map[string]any{
		"token_endpoint":                        cmp.Or(s.cfg.SignIn.TokenEndpoint, base+"/oauth2/v2.0/token"),
		"authorization_endpoint":                base + "/oauth2/v2.0/authorize",
		"issuer":                                base + "/v2.0",
		"token_endpoint_auth_methods_supported": []string{"client_secret_post", "private_key_jwt", "client_secret_basic"},
		"response_types_supported":              []string{"code", "id_token", "code id_token", "id_token token"},
		"scopes_supported":                      []string{"openid", "profile", "email", "offline_access"},
	})
}

// serveADFSConfiguration serves the document MSAL reads for an ADFS
// authority (tenant "adfs"), which names the token endpoint too.
func (s *Server) serveADFSConfiguration(w http.ResponseWriter, r *http.Request) {
	base := baseURLOf(r) + "/adfs"
	writeJSON(w, http.StatusOK, map[string]any{
		"token_endpoint":         cmp.Or(s.cfg.SignIn.TokenEndpoint, base+"/oauth2/token"),
		"authorization_endpoint": base + "/oauth2/authorize",
		"issuer":                 base,
	})
}

func baseURLOf(r *http.Request) string {
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	return scheme + "://" + r.Host
}

func tokenEndpointOf(r *http.Request) string {
	return baseURLOf(r) + r.URL.Path
}

func audienceIs(aud jwt.ClaimStrings, want string) bool {
	return len(aud) == 1 && strings.EqualFold(aud[0], want)
}

// decodeBase64 reads a thumbprint in base64url, as RFC 7515 has it, or
// in standard base64 with padding, as MSAL Go sends it.
func decodeBase64(v string) []byte {
	for _, enc := range []*base64.Encoding{base64.RawURLEncoding, base64.URLEncoding, base64.StdEncoding, base64.RawStdEncoding} {
		if b, err := enc.DecodeString(v); err == nil {
			return b
		}
	}
	return nil
}

func thumbprintHex(cert *x509.Certificate) string {
	sum := sha1.Sum(cert.Raw) //nolint:gosec // see the import
	return fmt.Sprintf("%X", sum)
}

// federatedSigner is the key of the OIDC issuer the simulator speaks for,
// made on first use: most simulators never need it.
func (s *Server) federatedSigner() *rsa.PrivateKey {
	s.federatedOnce.Do(func() {
		key, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			panic(errors.Join(errors.New("generating the federated issuer's key"), err))
		}
		s.federatedKey = key
	})
	return s.federatedKey
}
