package main

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/influxdata/telegraf/logger"
	"github.com/influxdata/telegraf/plugins/common/shim"

	"github.com/sectelemetry/telegraf-defender/plugins/inputs/microsoft_defender"
)

// The top-level sample.conf, the file users pass to -config, is the
// plugin's own sample configuration.
func TestSampleConfIsThePluginSampleConfig(t *testing.T) {
	top, err := os.ReadFile(filepath.Join("..", "..", "sample.conf"))
	require.NoError(t, err)
	require.Equal(t, (&microsoft_defender.MicrosoftDefender{}).SampleConfig(), string(top))
}

func TestSampleConfLoadsInTheShim(t *testing.T) {
	t.Setenv("DEFENDER_TENANT_ID", "contoso.onmicrosoft.com")
	t.Setenv("DEFENDER_CLIENT_ID", "00000000-0000-0000-0000-000000000001")
	t.Setenv("DEFENDER_CLIENT_SECRET", `se"cr\et$`)
	path := filepath.Join("..", "..", "sample.conf")
	loaded, err := shim.LoadConfig(&path)
	require.NoError(t, err)
	plugin, ok := loaded.Input.(*microsoft_defender.MicrosoftDefender)
	require.True(t, ok)
	require.Equal(t, "graph", plugin.API)
	require.Equal(t, "contoso.onmicrosoft.com", plugin.TenantID)
	secret, err := plugin.ClientSecret.Get()
	require.NoError(t, err)
	defer secret.Destroy()
	require.Equal(t, `se"cr\et$`, secret.String())
	require.NoError(t, plugin.Init())
}

func TestLogLinesCarryTheLevelExecdReads(t *testing.T) {
	var buf bytes.Buffer
	forwardLogsToExecd(&buf)
	log := logger.New("inputs", "microsoft_defender", "")
	log.Error("token request failed:\nsecond line")
	log.Warnf("retrying in %s", "5s")
	log.Info("started")
	log.Debug("details")
	require.Equal(t, "E! token request failed: second line\nW! retrying in 5s\nI! started\nD! details\n", buf.String())
}

// -cpuprofile writes a profile pprof reads: gzip-compressed protobuf.
func TestCPUProfileIsWritten(t *testing.T) {
	path := filepath.Join(t.TempDir(), "cpu.pprof")
	stop, err := startCPUProfile(path)
	require.NoError(t, err)
	stop()
	data, err := os.ReadFile(path)
	require.NoError(t, err)
	require.Greater(t, len(data), 2)
	require.Equal(t, []byte{0x1f, 0x8b}, data[:2])

	_, err = startCPUProfile(filepath.Join(t.TempDir(), "missing", "cpu.pprof"))
	require.ErrorContains(t, err, "creating the CPU profile: open ")
}
