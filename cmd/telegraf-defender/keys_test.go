package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// The tail of every unknown-key message.
const unknownKeyAdvice = ", which the external plugin would ignore: check the spelling against the plugin's README" +
	" (Telegraf's own options of a plugin, such as interval or tags, belong in [[inputs.execd]] in telegraf.conf)"

// validConf is a configuration the plugin accepts; every key is known,
// those of the embedded TLS and proxy settings included.
const validConf = `[[inputs.microsoft_defender]]
  region = "gcc"
  tenant_id = "contoso.onmicrosoft.com"
  client_id = "app"
  client_secret = "${DEFENDER_TEST_SECRET}"
  initial_lookback = "5h"
  tls_ca = ""
  insecure_skip_verify = false
  use_system_proxy = false
  http_proxy_url = ""
`

func writeConf(t *testing.T, conf string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "defender.conf")
	require.NoError(t, os.WriteFile(path, []byte(conf), 0o600))
	return path
}

// Keys the shim would ignore are refused with their line; a correct
// configuration passes.
func TestCheckKeys(t *testing.T) {
	// A secret holding a quote and a backslash: the file is expanded as the
	// shim expands it, so it parses here as there.
	t.Setenv("DEFENDER_TEST_SECRET", `se"cr\et`)
	tests := []struct {
		name string
		conf string
		want string // "" when the configuration passes
	}{
		{"a correct configuration", validConf, ""},
		{"the sample configuration", mustRead(t, filepath.Join("..", "..", "sample.conf")), ""},
		{"no configuration file", "", ""},
		{"client_secert", strings.Replace(validConf, "client_secret", "client_secert", 1),
			`unknown key "client_secert" in [[inputs.microsoft_defender]] (line 5)` + unknownKeyAdvice},
		{"initial_lookbak", strings.Replace(validConf, "initial_lookback", "initial_lookbak", 1),
			`unknown key "initial_lookbak" in [[inputs.microsoft_defender]] (line 6)` + unknownKeyAdvice},
		{"two typos", strings.Replace(strings.Replace(validConf, "initial_lookback", "initial_lookbak", 1), "tls_ca", "tls_cacert", 1),
			`unknown keys "initial_lookbak" in [[inputs.microsoft_defender]] (line 6), ` +
				`"tls_cacert" in [[inputs.microsoft_defender]] (line 7)` + unknownKeyAdvice},
		{"a nested table", validConf + "  [inputs.microsoft_defender.tags]\n    tenant = \"contoso\"\n",
			`unknown key "tags" in [[inputs.microsoft_defender]] (line 11)` + unknownKeyAdvice},
		{"a key in a nested table", validConf + "  [inputs.microsoft_defender.tls]\n    ca = \"/etc/ca.pem\"\n",
			`unknown key "tls" in [[inputs.microsoft_defender]] (line 11)` + unknownKeyAdvice},
		{"an inline table", validConf + "  proxy = { url = \"http://127.0.0.1:3128\" }\n",
			`unknown key "proxy" in [[inputs.microsoft_defender]] (line 11)` + unknownKeyAdvice},
		{"Telegraf's own option", validConf + "  interval = \"30s\"\n",
			`unknown key "interval" in [[inputs.microsoft_defender]] (line 11)` + unknownKeyAdvice},
		{"a key before the section", "region = \"eu\"\n" + validConf,
			`unknown key "region" outside [[inputs.microsoft_defender]] (line 1)` + unknownKeyAdvice},
		{"a second section", validConf + "\n[[inputs.microsoft_defender]]\n  region = \"us\"\n",
			`2 [[inputs.microsoft_defender]] sections (line 12): the external plugin runs only the first; use one file and one [[inputs.execd]] per instance`},
		{"another plugin", validConf + "\n[[outputs.file]]\n  files = [\"stdout\"]\n",
			`section [[outputs.file]] (line 12): telegraf-defender runs only [[inputs.microsoft_defender]]`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := ""
			if tt.conf != "" {
				path = writeConf(t, tt.conf)
			}
			err := checkKeys(path)
			if tt.want == "" {
				require.NoError(t, err)
				return
			}
			require.EqualError(t, err, path+": "+tt.want)
			require.NotContains(t, err.Error(), `se"cr\et`)
		})
	}
}

func mustRead(t *testing.T, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	require.NoError(t, err)
	return string(data)
}

// Both the plugin's start and -check refuse an unknown key before any
// request. The configuration is otherwise valid, and names a loopback
// port where nothing listens.
func TestStartAndCheckRefuseUnknownKeys(t *testing.T) {
	path := writeConf(t, "[[inputs.microsoft_defender]]\n"+
		"  endpoint_url = \"http://127.0.0.1:9/api/alerts\"\n"+
		"  access_token = \"static-token\"\n"+
		"  initial_lookbak = \"5h\"\n")
	want := path + `: unknown key "initial_lookbak" in [[inputs.microsoft_defender]] (line 4)` + unknownKeyAdvice

	require.EqualError(t, runPlugin(path, time.Minute, ""), want)

	var out bytes.Buffer
	require.False(t, check(&out, path))
	require.Equal(t, "Checking "+path+"\n"+
		"  configuration  "+want+"\n"+
		"  token          skipped\n"+
		"  request        skipped\n"+
		"Likely fix: correct the configuration key the message names; the plugin's README documents each key.\n", out.String())
}
