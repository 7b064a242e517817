package microsoft_defender

import (
	"bufio"
	"encoding/base64"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/influxdata/telegraf/config"
	"github.com/influxdata/telegraf/testutil"
)

// What no output confirmed is read again from where reading began: on a
// first run, and after a saved position in the future was distrusted
// (reading starts again initial_lookback before now), whether an output
// rejected the alerts or Telegraf restarted before any confirmation. The
// confirmed position used to stay empty, or in the future: the next poll
// began initial_lookback before ITS now, and the start of the window
// (d:early) was never read again.
func TestUnconfirmedWindowIsReadAgain(t *testing.T) {
	for _, start := range []string{"first run", "saved position in the future"} {
		for _, outcome := range []string{"rejected", "restarted"} {
			t.Run(start+", "+outcome, func(t *testing.T) {
				stateFile := filepath.Join(t.TempDir(), "state.json")
				sim := &placedSIEM{detections: []placedDetection{
					{id: "d:early", at: fixedNow.Add(-55 * time.Minute)}, // inside the first window, [now - 1h, now]
					{id: "d:late", at: fixedNow.Add(-5 * time.Minute)},
				}}
				server := stub(t, sim.handler(t))
				if start != "first run" {
					futureState(t, server, stateFile)
				}
				plugin, acc, _ := deliveryPlugin(t, server, stateFile)
				require.NoError(t, plugin.Gather(acc))
				require.Equal(t, []string{"d:late", "d:early"}, emittedIDs(acc))
				if outcome == "rejected" {
					for _, m := range alerts(acc, 0) {
						m.Reject()
					}
					plugin.now = func() time.Time { return fixedNow.Add(10 * time.Minute) }
					before := len(acc.GetTelegrafMetrics())
					require.NoError(t, plugin.Gather(acc))
					again := make([]string, 0, 2)
					for _, m := range alerts(acc, before) {
						id, _ := m.GetField("full_id")
						again = append(again, id.(string))
					}
					require.Equal(t, []string{"d:late", "d:early"}, again, "every rejected alert is read and sent again")
					return
				}
				plugin.now = func() time.Time { return fixedNow.Add(time.Minute) }
				require.NoError(t, plugin.Gather(acc)) // the output is still down
				plugin.Stop()
				restarted, again, _ := deliveryPlugin(t, server, stateFile,
					func(m *MicrosoftDefender) { m.now = func() time.Time { return fixedNow.Add(30 * time.Minute) } })
				require.NoError(t, restarted.Gather(again))
				require.Equal(t, []string{"d:late", "d:early"}, emittedIDs(again), "what no output confirmed is read again")
			})
		}
	}
}

// A Graph API that echoes the bearer token, as TestAPIEchoesTheToken's
// error page does, in an @odata.nextLink to another place: the link is
// rightly not followed, but the warning saying so quotes it, token and all,
// into Telegraf's log. Error bodies are redacted; this quote is not.
func TestGraphNextLinkToAnotherPlaceEchoingTheToken(t *testing.T) {
	at := fixedNow.Add(-time.Hour)
	plugin, logger, _ := graphStub(t, func(r *http.Request, from, to time.Time) string {
		if at.Before(from) || !at.Before(to) {
			return `{"value":[]}`
		}
		tok := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
		return `{"value":[` + graphAlertJSON("a1", at) + `],"@odata.nextLink":"https://evil.example.com/page2?access_token=` + tok + `"}`
	})
	gatherOK(t, plugin)
	require.NotEmpty(t, logger.Warnings())
	for _, line := range logger.Messages() {
		requireNoSecret(t, line.Text)
	}
}

// The README promises that a clean stop "repeats at most the unconfirmed".
// While an output lags, the cursor reads on past the last confirmed
// position and forgets the identities that fall overlap behind ITS
// watermark, among them confirmed ones that lie within overlap of the
// confirmed position. The state saves the confirmed position without them,
// so a restart emits those confirmed alerts again (and counts them again in
// defender_alert_count).
func TestCleanStopRepeatsOnlyTheUnconfirmed(t *testing.T) {
	stateFile := filepath.Join(t.TempDir(), "state.json")
	sim := &placedSIEM{}
	for _, m := range []int{2, 8, 12, 25} { // minutes after fixedNow
		sim.detections = append(sim.detections, placedDetection{id: "d+" + strconv.Itoa(m), at: fixedNow.Add(time.Duration(m) * time.Minute)})
	}
	server := stub(t, sim.handler(t))
	short := func(m *MicrosoftDefender) {
		m.MaxWindow = config.Duration(15 * time.Minute)
		m.Overlap = config.Duration(10 * time.Minute)
	}
	plugin, acc, _ := deliveryPlugin(t, server, stateFile, short)
	require.NoError(t, plugin.Gather(acc)) // nothing yet: the first window ends at fixedNow
	require.Empty(t, emittedIDs(acc))

	plugin.now = func() time.Time { return fixedNow.Add(30 * time.Minute) }
	require.NoError(t, plugin.Gather(acc))
	require.Equal(t, []string{"d+2", "d+8", "d+12", "d+25"}, emittedIDs(acc))
	alerts(acc, 0)[0].Accept() // d+2 confirmed; the output has not taken the rest yet
	plugin.Stop()

	restarted, again, _ := deliveryPlugin(t, server, stateFile, short,
		func(m *MicrosoftDefender) { m.now = func() time.Time { return fixedNow.Add(31 * time.Minute) } })
	require.NoError(t, restarted.Gather(again))
	require.Equal(t, []string{"d+8", "d+12", "d+25"}, emittedIDs(again), "only the unconfirmed are read again")
}

// echoingProxy is a proxy that refuses every request, repeating in its
// status line the Proxy-Authorization it was sent and the password in it,
// URL-escaped, as TestProxyEchoesItsPassword's does; it returns its address.
func echoingProxy(t *testing.T) string {
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { listener.Close() })
	go func() {
		for {
			conn, err := listener.Accept()
			if err != nil {
				return
			}
			if req, err := http.ReadRequest(bufio.NewReader(conn)); err == nil {
				auth := strings.TrimPrefix(req.Header.Get("Proxy-Authorization"), "Basic ")
				decoded, _ := base64.StdEncoding.DecodeString(auth) //nolint:errcheck // an empty echo is still an answer
				_, password, _ := strings.Cut(string(decoded), ":")
				fmt.Fprintf(conn, "HTTP/1.1 407 Denied %s for %s\r\nContent-Length: 0\r\n\r\n", auth, url.QueryEscape(password))
			}
			conn.Close()
		}
	}()
	return listener.Addr().String()
}

// use_system_proxy with a password in the environment's HTTPS_PROXY, the
// usual form of an authenticating corporate proxy: the same refusal that
// TestProxyEchoesItsPassword shows redacted for http_proxy_url reaches the
// error, and so Telegraf's log, in clear. proxyTransport is only set up for
// http_proxy_url. Go reads the environment's proxy once per process, so the
// poll runs in a child process of the test binary.
func TestSystemProxyEchoesItsPassword(t *testing.T) {
	if os.Getenv("DEFENDER_SYSTEM_PROXY_CHILD") == "" {
		cmd := exec.Command(os.Args[0], "-test.run=^TestSystemProxyEchoesItsPassword$", "-test.count=1")
		cmd.Env = append(os.Environ(), "DEFENDER_SYSTEM_PROXY_CHILD=1", "NO_PROXY=", "no_proxy=",
			"HTTPS_PROXY=http://proxyuser:"+url.QueryEscape(testClientSecret)+"@"+echoingProxy(t))
		out, err := cmd.CombinedOutput()
		require.NoError(t, err, "the child's output:\n%s", out)
		return
	}
	logger := &testutil.CaptureLogger{}
	plugin := proxiedPlugin(logger)
	plugin.UseSystemProxy = true
	require.NoError(t, plugin.Init())
	msg, _ := gatherError(t, plugin, logger)
	require.Equal(t, "SIEM API request to alerts.example.com failed: Denied [redacted] for [redacted]", msg)
}

// The versions of one 100 ns instant are read by following next links, and
// a chain cut short by the poll's end (its deadline or
// max_requests_per_minute) is begun again from its first page by the next
// poll (TestNextLinkIsNotResumedAPollLater). A chain longer than one poll
// can send, yet within the max_alerts_per_gather / page_size pages the
// plugin follows, is then never finished: every poll reads its first pages
// again (duplicates) and stops, and the cursor never passes the instant.
// Here a poll sends six requests (max_requests_per_minute = 6, a poll a
// minute) and the instant takes eight pages: the alert a minute later is
// never read.
func TestGraphChainLongerThanAPollIsNoWall(t *testing.T) {
	at := fixedNow.Add(-time.Hour)
	const versions, pageSize = 16, 2
	plugin, _, _ := graphStub(t, func(r *http.Request, from, to time.Time) string {
		var match []string
		if !at.Before(from) && at.Before(to) {
			for i := range versions {
				match = append(match, graphAlertJSON(fmt.Sprintf("v%02d", i), at))
			}
		}
		if later := at.Add(time.Minute); !later.Before(from) && later.Before(to) {
			match = append(match, graphAlertJSON("later", later))
		}
		return skipPage(r, match, pageSize)
	}, func(m *MicrosoftDefender) {
		m.PageSize, m.MaxAlertsPerGather, m.MaxRequestsPerMinute = pageSize, 100, 6
	})
	emitted := gatherAlertPolls(t, plugin, 40)
	require.Equal(t, 1, emitted["later"], "the alert after the instant is read, once: %v", emitted)
	for i := range versions {
		require.Equal(t, 1, emitted[fmt.Sprintf("v%02d", i)], "every version of the instant once: %v", emitted)
	}
}

// machine_groups on Graph keeps an alert by its FIRST device evidence's
// rbacGroupName. An alert on two devices (lateral movement, a multi-device
// incident's alert), the second of them in the configured group, is left
// out: a user reading one machine group never sees an alert on one of its
// machines. The SIEM API filtered server-side on the detection's machine.
func TestGraphMachineGroupsSeeEveryDeviceOfAnAlert(t *testing.T) {
	at := fixedNow.Add(-time.Hour)
	device := func(name, group string) string {
		return fmt.Sprintf(`{"@odata.type":"#microsoft.graph.security.deviceEvidence","deviceDnsName":%q,"rbacGroupName":%q}`, name, group)
	}
	plugin, _, _ := graphStub(t, func(_ *http.Request, from, to time.Time) string {
		if at.Before(from) || !at.Before(to) {
			return `{"value":[]}`
		}
		return fmt.Sprintf(`{"value":[{"id":"a1","lastUpdateDateTime":%q,"evidence":[%s,%s]}]}`,
			at.Format(time.RFC3339Nano), device("ws1.corp", "Workstations"), device("dc1.corp", "Domain Controllers"))
	}, func(m *MicrosoftDefender) { m.MachineGroups = []string{"Domain Controllers"} })
	acc := gatherOK(t, plugin)
	var ids []any
	for _, m := range acc.GetTelegrafMetrics() {
		if id, ok := m.GetField("alert_id"); ok {
			ids = append(ids, id)
		}
	}
	require.Equal(t, []any{"a1"}, ids, "the alert touches a machine of the group")
}

// A SIEM detection's point is the second of its AlertTime plus a fraction
// hashed from its AlertId and, below 100 ns, its AlertPart modulo 100: the
// detections 1 and 101 of one alert, detected in the same second, share one
// point, and a database keeping one point per series and time (InfluxDB,
// OpenSearch with force_document_id) keeps only the last. Hashing the
// detection's identity (FullId) would keep them apart as it does alerts.
func TestSIEMDetectionsOfOneAlertKeepTheirOwnPoints(t *testing.T) {
	at := fixedNow.Add(-10 * time.Minute).Format(time.RFC3339Nano)
	detection := func(part int) string {
		return fmt.Sprintf(`{"AlertId":"da1","FullId":"da1:ioc%d","IocUniqueId":"ioc%d","AlertPart":%d,"Severity":"High","Category":"Ransomware",`+
			`"AlertTime":%q,"LastProcessedTimeUtc":%q}`, part, part, part, at, at)
	}
	requireOwnPoints(t, "["+detection(1)+","+detection(101)+"]")
}

// requireOwnPoints reads a SIEM answer of two detections and requires each
// on a point of its own: measurement, tags and time.
func requireOwnPoints(t *testing.T, body string) {
	t.Helper()
	server := stub(t, func(w http.ResponseWriter, _ *http.Request) { respond(t, w, []byte(body)) })
	acc := gatherOK(t, stubbedPlugin(t, server, &testutil.CaptureLogger{}))
	points := make(map[string][]string)
	for _, m := range acc.GetTelegrafMetrics() {
		if id, ok := m.GetField("full_id"); ok {
			key := fmt.Sprint(m.Name(), m.Tags(), m.Time().UnixNano())
			points[key] = append(points[key], id.(string))
		}
	}
	require.Len(t, points, 2, "two detections, two points: %v", points)
}

// With machine_groups, the machine_group tag of an alert (and its count's)
// was its first device's group even when another device kept it: an alert
// kept for Domain Controllers was tagged Workstations. It is the first of its
// devices' groups that machine_groups holds.
func TestGraphMachineGroupTagIsAConfiguredGroup(t *testing.T) {
	at := fixedNow.Add(-time.Hour)
	device := func(name, group string) string {
		return fmt.Sprintf(`{"@odata.type":"#microsoft.graph.security.deviceEvidence","deviceDnsName":%q,"rbacGroupName":%q}`, name, group)
	}
	plugin, _, _ := graphStub(t, func(_ *http.Request, from, to time.Time) string {
		if at.Before(from) || !at.Before(to) {
			return `{"value":[]}`
		}
		return fmt.Sprintf(`{"value":[{"id":"a1","lastUpdateDateTime":%q,"evidence":[%s,%s,%s]}]}`, at.Format(time.RFC3339Nano),
			device("ws1.corp", "Workstations"), device("dc1.corp", "Domain Controllers"), device("srv1.corp", "Servers"))
	}, func(m *MicrosoftDefender) { m.MachineGroups = []string{"Servers", "Domain Controllers"} })
	acc := gatherOK(t, plugin)
	groups := make(map[string]string)
	for _, m := range acc.GetTelegrafMetrics() {
		if m.Name() == measurementAlert || m.Name() == measurementCount {
			groups[m.Name()], _ = m.GetTag("machine_group")
		}
		if m.Name() == measurementAlert {
			// The device fields are of the same device, not of the first one.
			dns, _ := m.GetField("computer_dns_name")
			require.Equal(t, "dc1.corp", dns)
		}
	}
	require.Equal(t, map[string]string{measurementAlert: "Domain Controllers", measurementCount: "Domain Controllers"}, groups)
}
