package main

import (
	"bytes"
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/influxdata/telegraf/testutil"

	simulator "github.com/sectelemetry/telegraf-defender/internal/sim"
	"github.com/sectelemetry/telegraf-defender/plugins/inputs/microsoft_defender"
)

// -check against the simulator's failure modes: each names the failed step
// and what the service said with the fix, and passes only when a poll
// would succeed.
func TestCheck(t *testing.T) {
	sim := simulator.New(simulator.Config{TenantID: "contoso", ClientID: "app", ClientSecret: "right-secret", Rate: 10, History: time.Hour})
	server := httptest.NewServer(sim.Handler())
	defer server.Close()
	host := strings.TrimPrefix(server.URL, "http://")

	siem := func(extra string) string {
		return fmt.Sprintf("[[inputs.microsoft_defender]]\n  api = \"siem\"\n  endpoint_url = %q\n  login_endpoint = %q\n"+
			"  tenant_id = \"contoso\"\n  client_id = \"app\"\n%s\n",
			server.URL+"/api/alerts", server.URL, extra)
	}
	runChecks(t, []checkCase{
		{"a poll would succeed", siem(`  client_secret = "right-secret"`), true, []string{
			"  configuration  ok (api \"siem\", " + server.URL + "/api/alerts)",
			"  token          ok",
			"  request        ok",
			"A poll would succeed.",
		}},
		{"invalid configuration", siem(`  client_secret = "right-secret"` + "\n  auth_method = \"client_certificate\""), false, []string{
			`  configuration  client_secret: only used with auth_method = "client_secret" or "refresh_token"`,
			"  token          skipped",
			"Likely fix: correct the configuration key the message names",
		}},
		{"expired secret", siem(`  client_secret = "old-secret"`), false, []string{
			"  token          failed: token request to " + host + " failed: HTTP 401 Unauthorized: invalid_client (AADSTS7000215). " +
				"The client secret is wrong, or is the secret's ID rather than its value: create a new client secret for the app " +
				"and set its value as client_secret\n  request        skipped\n",
		}},
		{"wrong tenant", strings.Replace(siem(`  client_secret = "right-secret"`), `tenant_id = "contoso"`, `tenant_id = "fabrikam"`, 1), false, []string{
			"  token          failed: token request to " + host + " failed: HTTP 400 Bad Request: invalid_request (AADSTS90002). " +
				"The tenant does not exist: check tenant_id, and that login_endpoint (or region) is the tenant's cloud\n",
		}},
		{"unknown app", strings.Replace(siem(`  client_secret = "right-secret"`), `client_id = "app"`, `client_id = "other"`, 1), false, []string{
			"  token          failed: token request to " + host + " failed: HTTP 400 Bad Request: unauthorized_client (AADSTS700016). " +
				"No app with this client_id exists in the tenant: check client_id, and that tenant_id is the app's tenant\n",
		}},
		{"scope for Graph on the SIEM API",
			siem(`  client_secret = "right-secret"` + "\n  scopes = [\"https://graph.microsoft.com/.default\"]"), false, []string{
				"  token          ok",
				"  request        failed: SIEM API at " + host + " answered 401 Unauthorized (the token is invalid or expired, was issued " +
					"for another audience (the SIEM API's is https://graph.windows.net), or the request is malformed): " +
					`body "Invalid audience \"https://graph.microsoft.com\"."` + "\n",
			}},
		{"SIEM API retired for the tenant", strings.Replace(siem(`  client_secret = "right-secret"`), "/api/alerts", "/api/retired", 1), false, []string{
			"  request        failed: SIEM API at " + host + " answered 404 Not Found (no alerts API at this address: check region or " +
				`endpoint_url; if it is retired for this tenant, use api = "graph"): body "404 page not found"` + "\n",
		}},
		{"graph", fmt.Sprintf("[[inputs.microsoft_defender]]\n  api = \"graph\"\n  endpoint_url = %q\n  login_endpoint = %q\n"+
			"  scopes = [\"https://graph.microsoft.com/.default\"]\n  tenant_id = \"contoso\"\n  client_id = \"app\"\n  client_secret = \"right-secret\"\n",
			server.URL+"/v1.0/security/alerts_v2", server.URL), true, []string{
			"  request        ok\nA poll would succeed.",
		}},
	}, "right-secret", "old-secret")
}

// -check runs beside the plugin it checks, which holds state_file's lock,
// and leaves the state file alone.
func TestCheckBesideTheRunningPlugin(t *testing.T) {
	sim := simulator.New(simulator.Config{TenantID: "contoso", ClientID: "app", ClientSecret: "right-secret", Rate: 10, History: time.Hour})
	server := httptest.NewServer(sim.Handler())
	defer server.Close()
	dir := t.TempDir()
	stateFile := filepath.Join(dir, "defender.state")
	path := filepath.Join(dir, "defender.conf")
	require.NoError(t, os.WriteFile(path, fmt.Appendf(nil, "[[inputs.microsoft_defender]]\n  api = \"siem\"\n  endpoint_url = %q\n  login_endpoint = %q\n"+
		"  tenant_id = \"contoso\"\n  client_id = \"app\"\n  client_secret = \"right-secret\"\n  state_file = %q\n",
		server.URL+"/api/alerts", server.URL, stateFile), 0o600))
	input, err := loadInput(path)
	require.NoError(t, err)
	running := input.(*microsoft_defender.MicrosoftDefender)
	running.Log = testutil.Logger{}
	require.NoError(t, running.Init())
	defer running.Stop()
	// Corrupt: a plugin starting on it would move it aside.
	require.NoError(t, os.WriteFile(stateFile, []byte(`{"version":1,"watermark":`), 0o600))

	var out bytes.Buffer
	require.True(t, check(&out, path), out.String())
	data, err := os.ReadFile(stateFile)
	require.NoError(t, err)
	require.Equal(t, `{"version":1,"watermark":`, string(data))
}
