//go:generate ../../../tools/readme_config_includer/generator
package microsoft_defender

import (
	"context"
	_ "embed"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"time"

	"golang.org/x/time/rate"

	"github.com/influxdata/telegraf"
	"github.com/influxdata/telegraf/config"
	"github.com/influxdata/telegraf/plugins/common/proxy"
	common_tls "github.com/influxdata/telegraf/plugins/common/tls"
	"github.com/influxdata/telegraf/plugins/inputs"
)

//go:embed sample.conf
var sampleConfig string

// validTenantID matches a directory id (GUID) or domain name, so that the
// tenant can be put into the token URL's path as it is.
var validTenantID = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9.-]*$`)

const (
	defaultLoginEndpoint     = "https://login.microsoftonline.com"
	defaultLoginEndpointGovt = "https://login.microsoftonline.us"
	defaultSIEMResource      = "https://graph.windows.net"
	defaultSIEMRegion        = "us"
	// defaultGraphPageSize is Graph's $top when page_size is 0.
	defaultGraphPageSize = 500
	userAgent            = "Telegraf-microsoft_defender"
	// defaultMaxUndelivered keeps one section's unconfirmed alerts, with the
	// answer read beyond them, under Telegraf's default buffer of 10,000.
	defaultMaxUndelivered = 5000
)

// MicrosoftDefender pulls Microsoft Defender detections.
type MicrosoftDefender struct {
	API         string `toml:"api"`
	Region      string `toml:"region"`
	EndpointURL string `toml:"endpoint_url"`

	// Sign-in: auth_method names the method, auth.go which keys each takes.
	AuthMethod                string        `toml:"auth_method"`
	TenantID                  string        `toml:"tenant_id"`
	ClientID                  string        `toml:"client_id"`
	ClientSecret              config.Secret `toml:"client_secret"`
	ClientCertificate         string        `toml:"client_certificate"`
	ClientCertificatePassword config.Secret `toml:"client_certificate_password"`
	SendCertificateChain      bool          `toml:"send_certificate_chain"`
	ManagedIdentityResourceID string        `toml:"managed_identity_resource_id"`
	FederatedTokenFile        string        `toml:"federated_token_file"`
	RefreshToken              config.Secret `toml:"refresh_token"`
	AccessToken               config.Secret `toml:"access_token"`
	LoginEndpoint             string        `toml:"login_endpoint"`
	Scopes                    []string      `toml:"scopes"`

	MachineGroups            []string `toml:"machine_groups"`
	DeviceCreatedMachineTags string   `toml:"device_created_machine_tags"`
	CloudCreatedMachineTags  string   `toml:"cloud_created_machine_tags"`
	ServiceSources           []string `toml:"service_sources"`
	Severities               []string `toml:"severities"`
	PageSize                 int      `toml:"page_size"`
	IncludeEvidence          bool     `toml:"include_evidence"`

	InitialLookback    config.Duration `toml:"initial_lookback"`
	Delay              config.Duration `toml:"delay"`
	Overlap            config.Duration `toml:"overlap"`
	MaxWindow          config.Duration `toml:"max_window"`
	MaxAlertsPerGather int             `toml:"max_alerts_per_gather"`
	// MaxUndeliveredAlerts bounds the alerts sent and not yet confirmed by the outputs.
	MaxUndeliveredAlerts int    `toml:"max_undelivered_alerts"`
	StateFile            string `toml:"state_file"`

	MaxRetries           int             `toml:"max_retries"`
	MaxRequestsPerMinute int             `toml:"max_requests_per_minute"`
	MaxBodySize          config.Size     `toml:"max_body_size"`
	Timeout              config.Duration `toml:"timeout"`
	common_tls.ClientConfig
	proxy.HTTPProxy

	Log telegraf.Logger `toml:"-"`

	// reader reads the configured API at endpoint; client sends its
	// requests.
	reader   reader
	endpoint *url.URL
	client   *apiClient
	tokens   tokenSource
	cursor   *cursor
	plan     windowPlan
	limiter  *rate.Limiter
	// paging is what Graph showed of its paging, for the life of the
	// process.
	paging graphPaging
	// now and sleep are the plugin's clock; tests replace them.
	now   func() time.Time
	sleep func(ctx context.Context, d time.Duration) error

	// acc is the accumulator Start received, which Gather emits through:
	// Telegraf rounds the time of what is added to Gather's accumulator to
	// the agent's precision (a second by default), which would merge the
	// events atTick keeps apart below 100 ns, while a service input's Start
	// accumulator keeps nanoseconds unless the plugin's precision is set.
	acc telegraf.Accumulator

	// ctx ends when Interrupt or Stop is called, cancelling a poll in
	// flight. Both are set in Init and only read afterwards, so Interrupt
	// can cancel while Gather runs.
	ctx    context.Context
	cancel context.CancelFunc
	// lastGather is when the previous poll started: one interval before
	// this one, the poll's deadline.
	lastGather time.Time
	// throttledUntil is when the API allows the next request, after a
	// Retry-After longer than a poll.
	throttledUntil time.Time
	// stateDirty: the cursor moved since the state file was written.
	stateDirty bool
	// stateLock keeps other instances off state_file until Stop.
	stateLock *stateLock
	// delivery follows what the outputs confirmed; nil before Start.
	delivery *delivery
}

// defaultPollDeadline bounds the first poll, before an interval is known.
const defaultPollDeadline = time.Minute

// newMicrosoftDefender returns a plugin with the documented defaults.
func newMicrosoftDefender() *MicrosoftDefender {
	return &MicrosoftDefender{
		API:                  "graph",
		AuthMethod:           methodClientSecret,
		InitialLookback:      config.Duration(2 * time.Hour),
		Delay:                config.Duration(time.Minute),
		Overlap:              config.Duration(10 * time.Minute),
		MaxWindow:            config.Duration(time.Hour),
		MaxAlertsPerGather:   10000,
		MaxUndeliveredAlerts: defaultMaxUndelivered,
		MaxRetries:           3,
		MaxRequestsPerMinute: 60,
		MaxBodySize:          config.Size(256 * 1024 * 1024),
		Timeout:              config.Duration(30 * time.Second),
	}
}

func (*MicrosoftDefender) SampleConfig() string {
	return sampleConfig
}

func (m *MicrosoftDefender) Init() error {
	if m.API == "" {
		m.API = "graph"
	}
	if m.AuthMethod == "" {
		m.AuthMethod = methodClientSecret
	}
	if err := m.checkKeysOfAPI(); err != nil {
		return err
	}
	if m.PageSize < 0 {
		return fmt.Errorf("page_size must not be negative, got %d", m.PageSize)
	}
	if m.API == "graph" && m.PageSize == 0 {
		m.PageSize = defaultGraphPageSize
	}
	if m.InitialLookback <= 0 {
		return errors.New("initial_lookback must be positive")
	}
	if m.Delay < 0 {
		return errors.New("delay must not be negative")
	}
	if m.Overlap < 0 {
		return errors.New("overlap must not be negative")
	}
	if m.MaxWindow <= m.Overlap {
		return fmt.Errorf("max_window (%s) must be longer than overlap (%s), or no chunk would advance the cursor",
			time.Duration(m.MaxWindow), time.Duration(m.Overlap))
	}
	if m.MaxAlertsPerGather <= 0 {
		return fmt.Errorf("max_alerts_per_gather must be positive, got %d", m.MaxAlertsPerGather)
	}
	if m.MaxUndeliveredAlerts < 0 {
		return fmt.Errorf("max_undelivered_alerts must not be negative, got %d", m.MaxUndeliveredAlerts)
	}
	if m.MaxUndeliveredAlerts == 0 {
		m.MaxUndeliveredAlerts = defaultMaxUndelivered
	}
	if m.MaxRetries < 0 {
		return fmt.Errorf("max_retries must not be negative, got %d", m.MaxRetries)
	}
	if m.MaxRequestsPerMinute <= 0 {
		return fmt.Errorf("max_requests_per_minute must be positive, got %d", m.MaxRequestsPerMinute)
	}
	if m.MaxBodySize <= 0 {
		return errors.New("max_body_size must be positive")
	}
	if m.Timeout <= 0 {
		return errors.New("timeout must be positive")
	}

	if m.now == nil {
		m.now = time.Now
	}
	client, err := m.httpClient()
	if err != nil {
		return err
	}
	var endpoint *url.URL
	if m.API == "graph" {
		endpoint, err = m.graphEndpoint()
	} else {
		endpoint, err = m.siemEndpoint()
	}
	if err != nil {
		return err
	}
	if err := m.refuseProxyInClear("endpoint_url", endpoint, "bearer token"); err != nil {
		return err
	}
	tokenClient, apiHTTP := *client, *client
	tokenClient.CheckRedirect = refuseRedirects
	apiHTTP.CheckRedirect = sameOriginRedirects
	m.tokens, err = m.tokenSource(&tokenClient)
	if err != nil {
		return err
	}
	m.client = &apiClient{client: &apiHTTP, tokens: m.tokens, maxBodySize: int64(m.MaxBodySize), now: m.now}
	if m.API == "graph" {
		groups := make(map[string]bool, len(m.MachineGroups))
		for _, g := range m.MachineGroups {
			groups[g] = true
		}
		m.client.name, m.client.statusMeaning = "Graph API", graphStatusMeaning
		m.client.header = http.Header{"Prefer": {"include-unknown-enum-members"}}
		m.reader = &graphReader{
			endpoint:           endpoint,
			pageSize:           m.PageSize,
			serviceSources:     m.ServiceSources,
			severities:         m.Severities,
			machineGroups:      groups,
			includeEvidence:    m.IncludeEvidence,
			maxAlertsPerGather: m.MaxAlertsPerGather,
		}
	} else {
		m.client.name, m.client.statusMeaning = "SIEM API", siemStatusMeaning
		m.reader = &siemReader{
			endpoint:                 endpoint,
			machineGroups:            m.MachineGroups,
			deviceCreatedMachineTags: m.DeviceCreatedMachineTags,
			cloudCreatedMachineTags:  m.CloudCreatedMachineTags,
		}
	}
	m.endpoint = endpoint
	m.plan = windowPlan{
		lookback:  time.Duration(m.InitialLookback),
		overlap:   time.Duration(m.Overlap),
		maxWindow: time.Duration(m.MaxWindow),
		delay:     time.Duration(m.Delay),
	}
	m.cursor = newCursor()
	m.paging = graphPaging{}
	if m.sleep == nil {
		m.sleep = sleepContext
	}
	// A tenth of a minute's requests may go at once; beyond that they are
	// spread evenly.
	m.limiter = rate.NewLimiter(rate.Limit(float64(m.MaxRequestsPerMinute)/60), max(1, m.MaxRequestsPerMinute/10))
	m.ctx, m.cancel = context.WithCancel(context.Background())
	if m.StateFile != "" {
		if err := m.openStateFile(); err != nil {
			return err
		}
	}
	return nil
}

// Start implements telegraf.ServiceInput; polling happens in Gather, whose
// metrics go to acc (see the field's comment). The plugin is a service input
// for that accumulator and for the sake of Stop.
func (m *MicrosoftDefender) Start(acc telegraf.Accumulator) error {
	m.acc = acc
	// Each tracked group holds at least one alert: at most so many are open.
	tracking := acc.WithTracking(m.MaxUndeliveredAlerts + m.MaxAlertsPerGather)
	m.delivery = newDelivery(tracking, m.MaxUndeliveredAlerts, m.cursor)
	return nil
}

// Interrupt ends a poll in flight without waiting for it: the request in
// flight is cancelled and no other starts; what the poll emitted is
// remembered, so that it is not emitted again. Unlike the plugin's other
// functions, Interrupt may be called while Gather runs, from any goroutine,
// since all it does is cancel a context. Telegraf's agent has no use for it
// (it calls Stop once Gather returned); a host that must end promptly calls
// Interrupt, then Stop once Gather returned. The execd binary does, when
// its stdin closes or SIGTERM arrives: Telegraf kills an execd process ten
// seconds after closing its stdin, and a poll cut by a kill is repeated by
// the next start.
func (m *MicrosoftDefender) Interrupt() {
	if m.cancel != nil {
		m.cancel()
	}
}

// Stop saves the latest state, so that after a clean stop nothing is
// repeated, and ends the plugin: a later Gather sends no request.
func (m *MicrosoftDefender) Stop() {
	if m.cancel == nil {
		return // Init did not get as far as the cursor: nothing to stop or save
	}
	m.cancel()
	m.settleDeliveries()
	if err := m.commitState(); err != nil {
		m.Log.Errorf("Saving the state to %q failed, the next start repeats the last poll: %s", m.StateFile, err)
	}
	m.releaseStateLock()
}

// Gather reads the window [watermark - overlap, now - delay], emits the
// records not emitted before, and moves the cursor past each chunk read
// whole. A poll starts no request after its deadline, one interval after it
// started; a request in flight is bounded by timeout.
//
// The state file is written at the start of the next poll, not at the end
// of this one: the metrics of a poll can still sit in a pipe when the state
// is written, and Telegraf's execd drops what is left in the pipe of a
// process that dies. A crash thus repeats the last poll instead of losing
// its tail; a clean stop (Stop) saves the latest state.
func (m *MicrosoftDefender) Gather(acc telegraf.Accumulator) error {
	if m.acc != nil {
		acc = m.acc
	}
	m.settleDeliveries()
	if err := m.commitState(); err != nil {
		acc.AddError(fmt.Errorf("saving the state to %q failed, a restart would repeat detections: %w", m.StateFile, err))
	}

	started := time.Now()
	now := m.now().UTC()
	end := now.Add(-time.Duration(m.Delay))
	interval := now.Sub(m.lastGather)
	if m.lastGather.IsZero() || interval <= 0 {
		interval = defaultPollDeadline
	}
	m.lastGather = now
	if future, ok := m.cursor.futurePosition(now); ok {
		m.cursor.watermark, m.cursor.pending = time.Time{}, nil
		m.stateDirty = true
		acc.AddError(fmt.Errorf("the saved position %s lies after now (%s): the host clock ran ahead when it was saved, or the state was edited; "+
			"reading again from initial_lookback (%s) before now, detections already emitted in that stretch are dropped as duplicates where still remembered",
			future.Format(time.RFC3339), now.Format(time.RFC3339), time.Duration(m.InitialLookback)))
	}
	p := &poll{
		reader: m.reader, client: m.client, cursor: m.cursor, plan: m.plan, limiter: m.limiter,
		log: m.Log, acc: acc, now: m.now, sleep: m.sleep, maxRetries: m.MaxRetries,
		known: known{
			perRequest:  m.perRequest(),
			unreadable:  m.cursor.newestUnreadable,
			paging:      &m.paging,
			maxBodySize: int64(m.MaxBodySize),
			log:         m.Log,
		},
		budget:   m.MaxAlertsPerGather,
		deadline: now.Add(interval),
		delivery: m.delivery,
	}

	var countsAt time.Time
	if now.Before(m.throttledUntil) {
		m.Log.Warnf("The API asked to wait until %s (Retry-After): no request in this poll", m.throttledUntil.Format(time.RFC3339))
		p.stop(stoppedDeadline, nil)
	} else {
		countsAt = p.run(m.ctx, end)
	}
	m.delivery.send(m.cursor)
	if !p.throttledUntil.IsZero() {
		m.throttledUntil = p.throttledUntil
	}
	for _, c := range p.counter.metrics(countsAt, now) {
		acc.AddMetric(c)
	}
	switch p.stopped {
	case stoppedCancelled:
		m.Log.Info("Poll cancelled: the plugin is stopping; the next start resumes here")
	case stoppedFailed:
		acc.AddError(p.err)
	}

	readUpTo := m.cursor.watermark
	if readUpTo.IsZero() {
		readUpTo = end.Add(-time.Duration(m.InitialLookback))
	}
	// A watermark up to maxClockSkew ahead is believed; it is no lag.
	lag := max(now.Sub(readUpTo), 0)
	acc.AddMetric(pollMetric(m.API, p.status(), &p.stats, time.Since(started), lag, now))
	if m.delivery == nil {
		m.stateDirty = m.stateDirty || p.stats.requests > 0
	}
	return nil
}

// settleDeliveries takes what the outputs confirmed, and goes back to the
// last confirmed position when they did not take everything.
func (m *MicrosoftDefender) settleDeliveries() {
	if m.delivery == nil {
		return
	}
	m.delivery.drain()
	if m.delivery.failed {
		n := m.delivery.rollback(m.cursor)
		m.Log.Warnf("An output did not take %s (rejected, or dropped from Telegraf's full buffer): reading them again",
			countOf(n, "alert"))
		m.stateDirty = true
	}
	if m.delivery.moved {
		m.stateDirty, m.delivery.moved = true, false
	}
}

// maxRequestRecords caps what one request asks for, whatever the budget:
// the identities of one answer are held until the walk moves below them,
// and a retried request costs at most this much again.
const maxRequestRecords = 10000

// perRequest is the number of records one request asks for.
func (m *MicrosoftDefender) perRequest() int {
	n := min(m.MaxAlertsPerGather, maxRequestRecords)
	if m.API == "siem" && m.PageSize > 0 {
		n = min(n, m.PageSize)
	}
	if m.delivery != nil {
		// One answer more may be in flight than the delivery's limit.
		n = min(n, max(1, m.delivery.limit/2))
	}
	return n
}

// commitState writes the state file when the cursor moved since the last
// write.
func (m *MicrosoftDefender) commitState() error {
	if m.StateFile == "" || !m.stateDirty {
		return nil
	}
	if err := m.saveStateFile(); err != nil {
		return err
	}
	m.stateDirty = false
	return nil
}

// checkKeysOfAPI refuses keys that the chosen API does not use, so that a
// filter is never silently ignored.
func (m *MicrosoftDefender) checkKeysOfAPI() error {
	var foreign []string
	switch m.API {
	case "siem":
		foreign = setKeys(
			configKey{"service_sources", len(m.ServiceSources) > 0},
			configKey{"severities", len(m.Severities) > 0},
			configKey{"include_evidence", m.IncludeEvidence},
		)
	case "graph":
		if m.PageSize > 1000 {
			return fmt.Errorf("page_size must be from 1 to 1000 for api = \"graph\", got %d", m.PageSize)
		}
		foreign = setKeys(
			configKey{"device_created_machine_tags", m.DeviceCreatedMachineTags != ""},
			configKey{"cloud_created_machine_tags", m.CloudCreatedMachineTags != ""},
			configKey{`auth_method = "refresh_token" (the SIEM portal's)`, m.AuthMethod == methodRefreshToken},
		)
	default:
		return fmt.Errorf("api %q is not supported: use \"siem\" or \"graph\"", m.API)
	}
	if len(foreign) > 0 {
		return fmt.Errorf("%s: not used by api = %q", strings.Join(foreign, ", "), m.API)
	}
	return nil
}

// The regions of each API, for messages.
const (
	graphRegionNames = `"global" (the default), "gcc", "gcc-high", "dod" or "china"`
	siemRegionNames  = `"us" (the default), "eu", "uk", "gcc" or "gcc-high"`
)

// graphEndpoint is endpoint_url, or the alerts_v2 resource of the region's
// Graph cloud ("global" when no region is set). It also fills the scope of
// that cloud when it is not set.
func (m *MicrosoftDefender) graphEndpoint() (*url.URL, error) {
	if m.Region == "" {
		m.Region = "global"
	}
	cloud, known := graphRegions[m.Region]
	if _, siem := siemRegions[m.Region]; siem && !known {
		return nil, fmt.Errorf("region %q is a region of api = \"siem\": for api = \"graph\" use %s", m.Region, graphRegionNames)
	}
	if !known && m.EndpointURL == "" {
		return nil, fmt.Errorf("region %q is unknown for api = \"graph\": use %s, or set endpoint_url", m.Region, graphRegionNames)
	}
	raw := m.EndpointURL
	if raw == "" {
		raw = "https://" + cloud.graphHost + graphAlertsPath
	}
	u, err := parseEndpoint("endpoint_url", raw)
	if err != nil {
		return nil, err
	}
	if len(m.Scopes) == 0 && m.AuthMethod != methodAccessToken {
		// The scope's host must be the Graph host the requests go to.
		m.Scopes = []string{u.Scheme + "://" + u.Host + "/.default"}
	}
	return u, nil
}

func (m *MicrosoftDefender) siemEndpoint() (*url.URL, error) {
	if m.Region == "" {
		m.Region = defaultSIEMRegion
	}
	raw, known := siemRegions[m.Region]
	if _, graph := graphRegions[m.Region]; graph && !known {
		return nil, fmt.Errorf("region %q is a region of api = \"graph\": for api = \"siem\" use %s", m.Region, siemRegionNames)
	}
	if m.EndpointURL != "" {
		raw = m.EndpointURL
	} else if !known {
		return nil, fmt.Errorf("region %q is unknown for api = \"siem\": use %s, or set endpoint_url", m.Region, siemRegionNames)
	}
	return parseEndpoint("endpoint_url", raw)
}

// parseEndpoint accepts https URLs, and plain http only on loopback, so that
// no token ever crosses a network in the clear.
func parseEndpoint(key, raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("%s %q is not a URL: %w", key, raw, err)
	}
	switch {
	case u.Host == "":
		return nil, fmt.Errorf("%s %q has no host", key, raw)
	case u.Scheme == "https":
	case u.Scheme == "http" && isLoopback(u.Hostname()):
	case u.Scheme == "http":
		return nil, fmt.Errorf("%s %q uses plain http to a host that is not loopback: use https", key, raw)
	default:
		return nil, fmt.Errorf("%s %q must be an https URL", key, raw)
	}
	if u.User != nil {
		return nil, fmt.Errorf("%s must not carry credentials in the URL", key)
	}
	return u, nil
}

func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func (m *MicrosoftDefender) httpClient() (*http.Client, error) {
	tlsCfg, err := m.ClientConfig.TLSConfig()
	if err != nil {
		return nil, fmt.Errorf("tls settings: %w", err)
	}
	proxyFunc, err := m.HTTPProxy.Proxy()
	if err != nil {
		// Telegraf's message repeats the URL, password included.
		return nil, errors.New("http_proxy_url is not a valid URL")
	}
	transport := http.DefaultTransport.(*http.Transport).Clone()
	transport.TLSClientConfig = tlsCfg
	transport.Proxy = proxyFunc
	client := &http.Client{Transport: transport, Timeout: time.Duration(m.Timeout)}
	if u, err := url.Parse(m.HTTPProxyURL); err == nil && u.User != nil {
		if password, ok := u.User.Password(); ok {
			// The second form is the Proxy-Authorization header's.
			client.Transport = &proxyTransport{RoundTripper: transport, secrets: []string{password,
				base64.StdEncoding.EncodeToString([]byte(u.User.Username() + ":" + password))}}
		}
	}
	return client, nil
}

// configKey is a configuration key and whether it is set.
type configKey struct {
	name string
	set  bool
}

// setKeys returns the names of the keys that are set, in the given order,
// for messages that name them.
func setKeys(keys ...configKey) []string {
	var names []string
	for _, k := range keys {
		if k.set {
			names = append(names, k.name)
		}
	}
	return names
}

func init() {
	inputs.Add("microsoft_defender", func() telegraf.Input {
		return newMicrosoftDefender()
	})
}
