package sim

import (
	"crypto/rsa"
	"crypto/sha1" //nolint:gosec // x5t
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/stretchr/testify/require"
)

// assertion signs a client assertion as MSAL does, changed by edit.
func assertion(t *testing.T, cert *x509.Certificate, key *rsa.PrivateKey, aud string, edit func(*jwt.Token, jwt.MapClaims)) string {
	t.Helper()
	claims := jwt.MapClaims{"aud": aud, "iss": "c", "sub": "c", "jti": randomUUID(),
		"nbf": simNow.Unix(), "exp": simNow.Add(10 * time.Minute).Unix()}
	token := jwt.NewWithClaims(jwt.SigningMethodPS256, claims)
	sum := sha256.Sum256(cert.Raw)
	token.Header["x5t#S256"] = base64.StdEncoding.EncodeToString(sum[:])
	if edit != nil {
		edit(token, claims)
	}
	signed, err := token.SignedString(key)
	require.NoError(t, err)
	return signed
}

func TestClientAssertionsAreVerified(t *testing.T) {
	ca, err := NewTestCA()
	require.NoError(t, err)
	cert, key, err := ca.Issue(&x509.Certificate{Subject: pkix.Name{CommonName: "app"}, NotBefore: simNow.Add(-time.Hour), NotAfter: simNow.Add(time.Hour)})
	require.NoError(t, err)
	expired, expiredKey, err := ca.Issue(&x509.Certificate{NotBefore: simNow.Add(-2 * time.Hour), NotAfter: simNow.Add(-time.Hour)})
	require.NoError(t, err)
	stranger, strangerKey, err := ca.Issue(&x509.Certificate{})
	require.NoError(t, err)
	_, server := newTestServer(t, Config{ClientCertificates: []*x509.Certificate{cert, expired}})
	aud := server.URL + "/t/oauth2/v2.0/token"

	reused := assertion(t, cert, key, aud, nil)
	tests := []struct {
		name      string
		assertion string
		status    int
		aadsts    string
	}{
		{"valid, x5t#S256", assertion(t, cert, key, aud, nil), http.StatusOK, ""},
		{"valid, x5t", assertion(t, cert, key, aud, func(tok *jwt.Token, _ jwt.MapClaims) {
			delete(tok.Header, "x5t#S256")
			sum := sha1.Sum(cert.Raw) //nolint:gosec // x5t
			tok.Header["x5t"] = base64.RawURLEncoding.EncodeToString(sum[:])
		}), http.StatusOK, ""},
		{"first use", reused, http.StatusOK, ""},
		{"jti reused", reused, http.StatusBadRequest, "AADSTS50027: The client assertion's jti was already used"},
		{"not registered", assertion(t, stranger, strangerKey, aud, nil), http.StatusUnauthorized,
			"AADSTS700027: The certificate with identifier used to sign the client assertion is not registered on application."},
		{"expired certificate", assertion(t, expired, expiredKey, aud, nil), http.StatusUnauthorized,
			"AADSTS700027: The certificate with identifier used to sign the client assertion is expired on application."},
		{"key of another certificate", assertion(t, cert, strangerKey, aud, nil), http.StatusUnauthorized,
			"AADSTS700027: Client assertion failed signature validation."},
		{"wrong audience", assertion(t, cert, key, server.URL+"/other/oauth2/v2.0/token", nil), http.StatusBadRequest, "AADSTS700212"},
		{"sub is not the client", assertion(t, cert, key, aud, func(_ *jwt.Token, c jwt.MapClaims) { c["sub"] = "other" }), http.StatusBadRequest,
			"AADSTS700021: Client assertion application identifier doesn't match 'client_id' parameter."},
		{"expired assertion", assertion(t, cert, key, aud, func(_ *jwt.Token, c jwt.MapClaims) { c["exp"] = simNow.Add(-6 * time.Minute).Unix() }),
			http.StatusBadRequest, "AADSTS700024: Client assertion is not within its valid time range."},
		{"assertion not yet valid", assertion(t, cert, key, aud, func(_ *jwt.Token, c jwt.MapClaims) { c["nbf"] = simNow.Add(6 * time.Minute).Unix() }),
			http.StatusBadRequest, "AADSTS700024"},
		{"no jti", assertion(t, cert, key, aud, func(_ *jwt.Token, c jwt.MapClaims) { delete(c, "jti") }), http.StatusBadRequest, "AADSTS50027"},
		{"not a JWT", "not-a-jwt", http.StatusBadRequest, "AADSTS50027: JWT token is invalid or malformed."},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, body := token(t, server, "/t/oauth2/v2.0/token", url.Values{
				"grant_type": {"client_credentials"}, "client_id": {"c"}, "client_info": {"1"},
				"client_assertion_type": {clientAssertionType}, "client_assertion": {tt.assertion},
				"scope": {"https://graph.microsoft.com/.default openid offline_access profile"},
			})
			require.Equal(t, tt.status, status, body)
			if tt.aadsts == "" {
				require.NotEmpty(t, body["access_token"])
				return
			}
			require.Contains(t, body["error_description"], tt.aadsts)
		})
	}
}

func TestFederatedTokensAreExchanged(t *testing.T) {
	sim, server := newTestServer(t, Config{FederatedCredentials: []FederatedCredential{{Issuer: "https://issuer", Subject: "system:serviceaccount:ns:sa"}}})
	other := New(Config{})
	tests := []struct {
		name   string
		token  string
		status int
		aadsts string
	}{
		{"matching", sim.FederatedToken("https://issuer", "system:serviceaccount:ns:sa", simNow, simNow.Add(time.Hour)), http.StatusOK, ""},
		{"other subject", sim.FederatedToken("https://issuer", "system:serviceaccount:ns:other", simNow, simNow.Add(time.Hour)), http.StatusBadRequest,
			"AADSTS70021: No matching federated identity record found for presented assertion. Assertion Issuer: 'https://issuer'. " +
				"Assertion Subject: 'system:serviceaccount:ns:other'. Assertion Audience: 'api://AzureADTokenExchange'."},
		{"expired", sim.FederatedToken("https://issuer", "system:serviceaccount:ns:sa", simNow.Add(-time.Hour), simNow.Add(-10*time.Minute)),
			http.StatusBadRequest, "AADSTS700024"},
		{"signed by another issuer's key", other.FederatedToken("https://issuer", "system:serviceaccount:ns:sa", simNow, simNow.Add(time.Hour)),
			http.StatusUnauthorized, "AADSTS5002738"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, body := token(t, server, "/t/oauth2/v2.0/token", url.Values{
				"grant_type": {"client_credentials"}, "client_id": {"c"},
				"client_assertion_type": {clientAssertionType}, "client_assertion": {tt.token},
				"scope": {"https://graph.microsoft.com/.default"},
			})
			require.Equal(t, tt.status, status, body)
			if tt.aadsts != "" {
				require.Contains(t, body["error_description"], tt.aadsts)
			}
		})
	}
}

func TestOpenIDConfiguration(t *testing.T) {
	_, server := newTestServer(t, Config{})
	resp, err := http.Get(server.URL + "/t/v2.0/.well-known/openid-configuration")
	require.NoError(t, err)
	defer resp.Body.Close()
	var doc map[string]any
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&doc))
	require.Equal(t, server.URL+"/t/oauth2/v2.0/token", doc["token_endpoint"])
	require.Equal(t, server.URL+"/t/oauth2/v2.0/authorize", doc["authorization_endpoint"])
	require.Equal(t, server.URL+"/t/v2.0", doc["issuer"])

	resp, err = http.Get(server.URL + "/fabrikam/v2.0/.well-known/openid-configuration")
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusBadRequest, resp.StatusCode)
}

func TestManagedIdentityEndpoint(t *testing.T) {
	sim, server := newTestServer(t, Config{ManagedIdentity: &ManagedIdentity{Header: "h", SystemAssigned: true,
		UserAssigned: []UserAssignedIdentity{{ClientID: "uid", ResourceID: "/subscriptions/s/rg/id"}}}})
	get := func(query, header string) (int, map[string]any) {
		req, err := http.NewRequest(http.MethodGet, server.URL+ManagedIdentityPath+"?"+query, nil)
		require.NoError(t, err)
		req.Header.Set("X-IDENTITY-HEADER", header)
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		var body map[string]any
		require.NoError(t, json.NewDecoder(resp.Body).Decode(&body))
		return resp.StatusCode, body
	}
	resource := "api-version=2019-08-01&resource=https%3A%2F%2Fgraph.windows.net"
	status, body := get(resource, "h")
	require.Equal(t, http.StatusOK, status)
	require.Equal(t, "system-assigned", body["client_id"])
	require.Equal(t, strings.TrimSpace(body["expires_on"].(string)), body["expires_on"], "expires_on is a string")
	tok := body["access_token"].(string)
	require.True(t, sim.checkBearer(httptest.NewRecorder(), &http.Request{Header: http.Header{"Authorization": {"Bearer " + tok}}}, siemAudiences))

	status, body = get(resource+"&mi_res_id=%2Fsubscriptions%2Fs%2Frg%2Fid", "h")
	require.Equal(t, http.StatusOK, status)
	require.Equal(t, "uid", body["client_id"])
	status, body = get(resource+"&client_id=other", "h")
	require.Equal(t, http.StatusBadRequest, status)
	require.Equal(t, "Unable to load the proper Managed Identity.", body["message"])
	status, _ = get(resource, "wrong")
	require.Equal(t, http.StatusBadRequest, status)
	sim.FailManagedIdentity(http.StatusInternalServerError, 1)
	status, _ = get(resource, "h")
	require.Equal(t, http.StatusInternalServerError, status)
	status, _ = get(resource, "h")
	require.Equal(t, http.StatusOK, status)
}
