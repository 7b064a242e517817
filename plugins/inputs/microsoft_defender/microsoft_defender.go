//go:generate ../../../tools/readme_config_includer/generator
package microsoft_defender

import (
	"cmp"
	"context"
	_ "embed"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/gofrs/flock"
	"golang.org/x/time/rate"

	"github.com/influxdata/telegraf"
	"github.com/influxdata/telegraf/config"
	"github.com/influxdata/telegraf/plugins/common/proxy"
	common_tls "github.com/influxdata/telegraf/plugins/common/tls"
	"github.com/influxdata/telegraf/plugins/inputs"
)

//go:embed sample.conf
var sampleConfig string

// validTenantID matches a directory id (GUID) or domain name, which the token URL's path takes as is.
var validTenantID = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9.-]*$`)

const (
	defaultSIEMResource   = "https://graph.windows.net"
	defaultGraphPageSize  = 500 // Graph's $top when page_size is 0
	userAgent             = "Telegraf-microsoft_defender"
	defaultPollDeadline   = time.Minute     // bounds polls before an interval is known
	maxRequestRecords     = 10000           // per request, whatever the budget: its ids are held, a retry repeats it
	defaultMaxUndelivered = 5000            // with one answer more, within Telegraf's default buffer (10,000)
	maxRequestsPerMinute  = 15000           // the limit keeps each request's time a minute; 100 times Graph's budget
	stallWarning          = 5 * time.Minute // unconfirmed alerts are warned of this often
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
	IncludeIncidentAlerts    bool     `toml:"include_incident_alerts"`

	InitialLookback      config.Duration `toml:"initial_lookback"`
	Delay                config.Duration `toml:"delay"`
	Overlap              config.Duration `toml:"overlap"`
	MaxWindow            config.Duration `toml:"max_window"`
	MaxAlertsPerGather   int             `toml:"max_alerts_per_gather"`
	MaxUndeliveredAlerts int             `toml:"max_undelivered_alerts"` // sent, not yet confirmed by the outputs
	StateFile            string          `toml:"state_file"`

	MaxRetries           int             `toml:"max_retries"`
	MaxRequestsPerMinute int             `toml:"max_requests_per_minute"`
	MaxBodySize          config.Size     `toml:"max_body_size"`
	Timeout              config.Duration `toml:"timeout"`
	common_tls.ClientConfig
	proxy.HTTPProxy

	Log telegraf.Logger `toml:"-"`

	reader   reader // reads the configured API at endpoint
	endpoint *url.URL
	client   *apiClient // sends the reader's requests
	tokens   tokenSource
	cursor   *cursor
	limiter  *rateLimit
	now      func() time.Time // with sleep, the plugin's clock, which tests replace
	sleep    func(ctx context.Context, d time.Duration) error

	// acc is Start's: Gather's rounds to the agent's precision, merging events eventTime keeps apart.
	acc telegraf.Accumulator
	// ctx ends at Interrupt or Stop; set in Init only, so Interrupt may cancel while Gather runs.
	ctx            context.Context
	cancel         context.CancelFunc
	lastGather     time.Time     // when the previous poll started
	lastEnd        time.Time     // when it ended
	lastGap        time.Duration // the latest gap between polls that shows the interval
	interval       time.Duration // Telegraf's, as the gaps show it: the poll's deadline; 0 before one is known
	throttledUntil time.Time     // when the API allows the next request, after a Retry-After longer than a poll
	service        serviceLimits // what the reader learned of the API, kept across polls
	stateDirty     bool          // the state file is to be written
	savedWatermark time.Time     // the watermark the state file holds
	stateLock      *flock.Flock  // keeps other instances off state_file until Stop
	statePath      string        // state_file, its links followed
	delivery       *delivery     // follows what the outputs confirmed; nil before Start
	stallWarned    time.Time     // when unconfirmed alerts were last warned of
}

// newMicrosoftDefender returns a plugin with the documented defaults.
func newMicrosoftDefender() *MicrosoftDefender {
	return &MicrosoftDefender{
		API:                   "graph",
		AuthMethod:            methodClientSecret,
		InitialLookback:       config.Duration(2 * time.Hour),
		Overlap:               config.Duration(10 * time.Minute),
		MaxWindow:             config.Duration(time.Hour),
		MaxAlertsPerGather:    10000,
		MaxUndeliveredAlerts:  defaultMaxUndelivered,
		IncludeIncidentAlerts: true,
		MaxRetries:            3,
		MaxRequestsPerMinute:  60,
		MaxBodySize:           config.Size(32 * 1024 * 1024),
		Timeout:               config.Duration(30 * time.Second),
	}
}

func (*MicrosoftDefender) SampleConfig() string {
	return sampleConfig
}

func (m *MicrosoftDefender) Init() error {
	m.API = cmp.Or(m.API, "graph")
	m.AuthMethod = cmp.Or(m.AuthMethod, methodClientSecret)
	if err := m.checkSettings(); err != nil {
		return err
	}
	switch {
	case m.API == "graph" && m.PageSize == 0:
		m.PageSize = defaultGraphPageSize
	case m.API == "graph_incidents" && (m.PageSize == 0 || m.PageSize > maxIncidentTop):
		if m.PageSize > maxIncidentTop {
			m.Log.Warnf("page_size %d is lowered to %d, the most incidents Graph sends on a page", m.PageSize, maxIncidentTop)
		}
		m.PageSize = maxIncidentTop
	}
	m.MaxUndeliveredAlerts = cmp.Or(m.MaxUndeliveredAlerts, defaultMaxUndelivered)
	if d := time.Duration(m.InitialLookback); d > apiRetention {
		m.Log.Warnf("initial_lookback %s is longer than the %d days (%s) the API keeps alerts: lowered to %s", d, apiRetention/(24*time.Hour),
			apiRetention, apiRetention)
		m.InitialLookback = config.Duration(apiRetention)
	}
	if m.now == nil {
		m.now = time.Now
	}
	tokenClient, apiHTTP, err := m.httpClients()
	if err != nil {
		return err
	}
	if m.endpoint, err = m.apiEndpoint(); err != nil {
		return err
	}
	if m.tokens, err = m.tokenSource(tokenClient); err != nil {
		return err
	}
	m.client = &apiClient{client: apiHTTP, tokens: m.tokens, maxBodySize: int64(m.MaxBodySize), now: m.now, statusMeaning: statusMeaning(m.API)}
	if m.API != "siem" {
		m.client.name = "Graph API"
		m.client.header = http.Header{"Prefer": {"include-unknown-enum-members"}}
		if m.reader = newGraphReader(m, m.endpoint); m.API == "graph_incidents" {
			m.reader = newIncidentReader(m, m.endpoint)
		}
	} else {
		m.client.name = "SIEM API"
		m.reader = &siemReader{endpoint: m.endpoint, machineGroups: m.MachineGroups,
			deviceCreatedMachineTags: m.DeviceCreatedMachineTags, cloudCreatedMachineTags: m.CloudCreatedMachineTags}
	}
	m.cursor = &cursor{seen: make(map[string]time.Time), unreadable: make(map[time.Time]bool),
		plan: windowPlan{lookback: time.Duration(m.InitialLookback), overlap: time.Duration(m.Overlap),
			maxWindow: time.Duration(m.MaxWindow), delay: time.Duration(m.Delay)}}
	if m.sleep == nil {
		m.sleep = sleepContext
	}
	// A tenth of a minute's requests may go at once, the rest spread evenly.
	m.limiter = &rateLimit{Limiter: rate.NewLimiter(rate.Limit(float64(m.MaxRequestsPerMinute)/60), max(1, m.MaxRequestsPerMinute/10)),
		sent: make([]time.Time, m.MaxRequestsPerMinute)}
	m.ctx, m.cancel = context.WithCancel(context.Background())
	if m.StateFile != "" {
		return m.openStateFile()
	}
	return nil
}

// checkSettings refuses invalid values, and keys the API does not use: a filter is never silently ignored.
func (m *MicrosoftDefender) checkSettings() error {
	var foreign []string
	for _, k := range []struct {
		name, apis string
		set        bool
	}{
		{"service_sources", "graph", len(m.ServiceSources) > 0},
		{"severities", "graph graph_incidents", len(m.Severities) > 0},
		{"include_evidence", "graph", m.IncludeEvidence},
		{"machine_groups", "siem graph", len(m.MachineGroups) > 0},
		{"device_created_machine_tags", "siem", m.DeviceCreatedMachineTags != ""},
		{"cloud_created_machine_tags", "siem", m.CloudCreatedMachineTags != ""},
		{`auth_method = "refresh_token" (the SIEM portal's)`, "siem", m.AuthMethod == methodRefreshToken},
	} {
		if k.set && !slices.Contains(strings.Fields(k.apis), m.API) {
			foreign = append(foreign, k.name)
		}
	}
	for _, c := range []struct {
		bad bool
		msg string
	}{
		{!slices.Contains([]string{"graph", "graph_incidents", "siem"}, m.API),
			fmt.Sprintf(`api %q is not supported: use "graph", "graph_incidents" or "siem"`, m.API)},
		{m.API == "graph" && m.PageSize > 1000, fmt.Sprintf(`page_size must be from 1 to 1000 for api = "graph", got %d`, m.PageSize)},
		{len(foreign) > 0, fmt.Sprintf("%s: not used by api = %q", strings.Join(foreign, ", "), m.API)},
		{m.PageSize < 0, fmt.Sprintf("page_size must not be negative, got %d", m.PageSize)},
		{m.InitialLookback <= 0, "initial_lookback must be positive"},
		{m.Delay < 0, "delay must not be negative"},
		{m.Overlap < 0, "overlap must not be negative"},
		{m.MaxWindow < config.Duration(time.Second), fmt.Sprintf("max_window must be at least 1s, got %s", time.Duration(m.MaxWindow))},
		{m.MaxWindow <= m.Overlap, fmt.Sprintf("max_window (%s) must be longer than overlap (%s), or no chunk would advance the cursor",
			time.Duration(m.MaxWindow), time.Duration(m.Overlap))},
		{m.MaxAlertsPerGather <= 0, fmt.Sprintf("max_alerts_per_gather must be positive, got %d", m.MaxAlertsPerGather)},
		{m.MaxUndeliveredAlerts < 0, fmt.Sprintf("max_undelivered_alerts must not be negative, got %d", m.MaxUndeliveredAlerts)},
		{m.MaxRetries < 0, fmt.Sprintf("max_retries must not be negative, got %d", m.MaxRetries)},
		{m.MaxRequestsPerMinute <= 0 || m.MaxRequestsPerMinute > maxRequestsPerMinute,
			fmt.Sprintf("max_requests_per_minute must be from 1 to %d, got %d", maxRequestsPerMinute, m.MaxRequestsPerMinute)},
		{m.MaxBodySize <= 0, "max_body_size must be positive"},
		{m.Timeout <= 0, "timeout must be positive"},
	} {
		if c.bad {
			return errors.New(c.msg)
		}
	}
	return nil
}

// Start implements telegraf.ServiceInput, for acc (see the field) and for Stop; polling happens in Gather.
func (m *MicrosoftDefender) Start(acc telegraf.Accumulator) error {
	m.acc = acc
	// A tracked group holds at least one alert: at most so many are open.
	m.delivery = newDelivery(acc.WithTracking(m.MaxUndeliveredAlerts+m.MaxAlertsPerGather), m.MaxUndeliveredAlerts, m.cursor)
	return nil
}

// Interrupt cancels a poll in flight without waiting, from any goroutine; what it emitted is remembered.
// The execd binary calls it when stdin closes or SIGTERM arrives, as Telegraf kills it ten seconds later.
func (m *MicrosoftDefender) Interrupt() {
	if m.cancel != nil {
		m.cancel()
	}
}

// Stop saves the latest state, so that a clean stop repeats nothing, and ends the plugin: Gather sends no more requests.
func (m *MicrosoftDefender) Stop() {
	if m.cancel == nil {
		return // Init did not get as far as the cursor: nothing to stop or save
	}
	m.cancel()
	if err := m.commitState(); err != nil {
		m.Log.Errorf("Saving the state to %q failed, the next start repeats the last poll: %s", m.StateFile, err)
	}
	if m.delivery != nil {
		now := m.now().UTC()
		m.delivery.counted.emit(m.acc, now, now)
	}
	m.releaseStateLock()
}

// Gather reads [watermark - overlap, now - delay], emits the records not emitted before and moves the cursor
// past each chunk read whole, starting no request after its deadline, one interval on. The state is written at
// the next poll's start: this poll's metrics may still sit in a pipe that execd drops when the process dies.
func (m *MicrosoftDefender) Gather(acc telegraf.Accumulator) error {
	if m.acc != nil {
		acc = m.acc
	}
	if err := m.commitState(); err != nil {
		acc.AddError(fmt.Errorf("saving the state to %q failed, a restart would repeat detections: %w", m.StateFile, err))
	}
	started := time.Now()
	now := m.now().UTC()
	end := now.Add(-time.Duration(m.Delay))
	// Telegraf's interval shows in a gap after a poll that ended early: one that overran is followed at once, or a
	// skipped tick later. The shorter of the last two such gaps passes over a host suspend or a double start.
	if gap := now.Sub(m.lastGather); !m.lastGather.IsZero() && gap > 0 && now.Sub(m.lastEnd) > gap/2 {
		m.interval = min(gap, cmp.Or(m.lastGap, gap))
		m.lastGap = gap
	}
	interval := cmp.Or(m.interval, defaultPollDeadline)
	m.lastGather = now
	defer func() { m.lastEnd = m.now() }()
	switch at, oldest := m.cursor.position(), now.Add(-apiRetention); {
	case at.After(now.Add(maxClockSkew)):
		m.cursor.watermark, m.cursor.pending = time.Time{}, nil
		if m.delivery != nil {
			m.delivery.confirmed = position{} // as on a first run, below: a rejection comes back to where this poll begins
		}
		m.stateDirty = true
		acc.AddError(fmt.Errorf("the saved position %s lies after now (%s): the host clock ran ahead when it was saved, or the state was edited; "+
			"reading again from initial_lookback (%s) before now, detections already emitted in that stretch are dropped as duplicates where still remembered",
			at.Format(time.RFC3339), now.Format(time.RFC3339), time.Duration(m.InitialLookback)))
	case !at.IsZero() && at.Before(oldest.Add(-24*time.Hour)): // a walk begun at the edge (initial_lookback) falls behind it
		m.cursor.watermark, m.cursor.pending = oldest, nil
		m.stateDirty = true
		acc.AddError(fmt.Errorf("the saved position %s is older than the %d days the API keeps alerts: the host clock was wrong when it was saved, "+
			"or the state was edited; reading on from %s, the oldest time the API holds", at.Format(time.RFC3339), apiRetention/(24*time.Hour),
			oldest.Format(time.RFC3339)))
	}
	if d := m.delivery; d != nil && d.confirmed == (position{}) && m.cursor.next(end) != nil {
		d.confirmed = positionOf(m.cursor) // a first run goes back to where it began, not to a later initial_lookback
	}
	p := &poll{
		reader: m.reader, client: m.client, cursor: m.cursor, limiter: m.limiter,
		log: m.Log, acc: acc, now: m.now, sleep: m.sleep, maxRetries: m.MaxRetries,
		known: known{perRequest: m.perRequest(), service: m.service, unreadable: m.cursor.newestUnreadable,
			maxBodySize: int64(m.MaxBodySize), log: m.Log},
		budget: m.MaxAlertsPerGather, deadline: now.Add(interval), delivery: m.delivery,
	}
	var countsAt time.Time
	if now.Before(m.throttledUntil) {
		m.Log.Warnf("The API asked to wait until %s (Retry-After): no request in this poll", m.throttledUntil.Format(time.RFC3339))
		p.stop(stoppedDeadline, nil)
	} else {
		countsAt = p.run(m.ctx, end)
	}
	if n := m.cursor.trim(); n > 0 {
		p.stats.forgottenIDs = int64(n)
		m.Log.Warnf("The identities held to drop repeats passed %d bytes: forgot the %d oldest, which a later poll may emit again "+
			"onto the same points (defender_poll: forgotten_ids)", maxRememberedBytes, n)
	}
	if !p.throttledUntil.IsZero() {
		m.throttledUntil = p.throttledUntil
	}
	m.service = p.known.service
	if d := m.delivery; d == nil {
		p.counter.emit(acc, countsAt, now)
	} else {
		d.send(m.cursor, now)
		p.stats.unconfirmed = int64(d.undelivered)
		if len(d.queue) > 0 && d.queue[0].sentAt.Before(now.Add(-stallWarning)) && now.Sub(m.stallWarned) >= stallWarning {
			m.stallWarned = now
			m.Log.Warnf("The outputs have not confirmed the alerts sent at %s (%s unconfirmed): an output is down, or refuses a document "+
				"of them; reading pauses at max_undelivered_alerts and goes on once they are confirmed, nothing is lost",
				d.queue[0].sentAt.Format(time.RFC3339), countOf(d.undelivered, "alert"))
		}
		d.drain() // counted once confirmed, at this poll's time
		d.counted.emit(acc, now, now)
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
	lag := max(now.Sub(readUpTo), 0) // a watermark up to maxClockSkew ahead is believed: no lag
	acc.AddMetric(pollMetric(m.API, p.status(), &p.stats, time.Since(started), lag, now))
	// Emitted alerts are saved (with delivery, once confirmed). A quiet move is saved once overlap ahead, as an
	// older one repeats nothing; and at once when none is saved, so a late restart begins where the first poll did.
	m.stateDirty = m.stateDirty || m.delivery == nil && p.stats.emitted > 0 ||
		m.stateWatermark().Sub(m.savedWatermark) >= time.Duration(m.Overlap) ||
		m.savedWatermark.IsZero() && (m.cursor.pending != nil || !m.cursor.watermark.IsZero())
	return nil
}

// stateWatermark is the watermark the state file holds once written: with delivery, the confirmed one.
func (m *MicrosoftDefender) stateWatermark() time.Time {
	if m.delivery != nil {
		return m.delivery.confirmed.watermark
	}
	return m.cursor.watermark
}

// perRequest is the number of records one request asks for.
func (m *MicrosoftDefender) perRequest() int {
	n := min(m.MaxAlertsPerGather, maxRequestRecords)
	if m.API == "siem" && m.PageSize > 0 {
		n = min(n, m.PageSize)
	}
	if m.delivery != nil {
		n = min(n, max(1, m.delivery.limit/2)) // one answer more may be in flight than the limit
	}
	return n
}

// commitState takes what the outputs confirmed, going back to the last confirmed position when they did not
// take everything, and writes the state file when it is dirty.
func (m *MicrosoftDefender) commitState() error {
	if d := m.delivery; d != nil {
		d.drain()
		// Only once every batch has its outcome: earlier would resend what an output may still take.
		if d.failed && len(d.sent) == 0 {
			m.Log.Warnf("An output did not take %s (rejected, or dropped from Telegraf's full buffer): reading them again",
				countOf(d.rollback(m.cursor), "alert"))
			m.stateDirty = true
		}
		m.stateDirty, d.moved = m.stateDirty || d.moved, false
	}
	if m.StateFile == "" || !m.stateDirty {
		return nil
	}
	err := m.saveStateFile()
	if m.stateDirty = err != nil; !m.stateDirty {
		m.savedWatermark = m.stateWatermark()
	}
	return err
}

// region is where one region of an API and its sign-in are.
type region struct{ apiHost, loginHost string }

var (
	graphRegions = map[string]region{
		"global":   {"graph.microsoft.com", "login.microsoftonline.com"},
		"gcc":      {"graph.microsoft.com", "login.microsoftonline.com"},
		"gcc-high": {"graph.microsoft.us", "login.microsoftonline.us"},
		"dod":      {"dod-graph.microsoft.us", "login.microsoftonline.us"},
		"china":    {"microsoftgraph.chinacloudapi.cn", "login.partner.microsoftonline.cn"},
	}
	// The documented hosts of the SIEM alerts API.
	siemRegions = map[string]region{
		"eu":       {"wdatp-alertexporter-eu.windows.com", "login.microsoftonline.com"},
		"us":       {"wdatp-alertexporter-us.windows.com", "login.microsoftonline.com"},
		"uk":       {"wdatp-alertexporter-uk.windows.com", "login.microsoftonline.com"},
		"gcc":      {"wdatp-alertexporter-us.gcc.securitycenter.windows.us", "login.microsoftonline.com"},
		"gcc-high": {"wdatp-alertexporter-us.securitycenter.windows.us", "login.microsoftonline.us"},
	}
	graphRegionNames = `"global" (the default), "gcc", "gcc-high", "dod" or "china"`
)

const (
	graphAlertsPath    = "/v1.0/security/alerts_v2"
	graphIncidentsPath = "/v1.0/security/incidents"
)

// apiSite is where the answers of one value of api are.
type apiSite struct {
	regions       map[string]region
	defaultRegion string
	regionNames   string // for messages, the default first
	path          string // on a region's API host
	other         string // the API whose regions are not this one's
}

var apiSites = map[string]apiSite{
	"graph":           {graphRegions, "global", graphRegionNames, graphAlertsPath, "siem"},
	"graph_incidents": {graphRegions, "global", graphRegionNames, graphIncidentsPath, "siem"},
	"siem":            {siemRegions, "us", `"us" (the default), "eu", "uk", "gcc" or "gcc-high"`, "/api/alerts", "graph"},
}

// apiEndpoint is endpoint_url, or the API's address in region; for Graph it also fills an unset scope.
func (m *MicrosoftDefender) apiEndpoint() (*url.URL, error) {
	site := apiSites[m.API]
	m.Region = cmp.Or(m.Region, site.defaultRegion)
	r, known := site.regions[m.Region]
	if _, theirs := apiSites[site.other].regions[m.Region]; theirs && !known {
		return nil, fmt.Errorf("region %q is a region of api = %q: for api = %q use %s", m.Region, site.other, m.API, site.regionNames)
	}
	raw := "https://" + r.apiHost + site.path
	if m.EndpointURL != "" {
		raw = m.EndpointURL
	} else if !known {
		return nil, fmt.Errorf("region %q is unknown for api = %q: use %s, or set endpoint_url", m.Region, m.API, site.regionNames)
	}
	u, err := parseEndpoint("endpoint_url", raw)
	if err != nil {
		return nil, err
	}
	if m.API != "siem" && len(m.Scopes) == 0 && m.AuthMethod != methodAccessToken {
		m.Scopes = []string{u.Scheme + "://" + u.Host + "/.default"} // Graph's host, where the requests go
	}
	return u, m.refuseProxyInClear("endpoint_url", u, "bearer token")
}

// parseEndpoint accepts https URLs, and plain http only on loopback: no token crosses a network in the clear.
func parseEndpoint(key, raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("%s %q is not a URL: %w", key, raw, err)
	}
	host := u.Hostname()
	switch {
	case u.Host == "":
		return nil, fmt.Errorf("%s %q has no host", key, raw)
	case u.Scheme == "https":
	case u.Scheme == "http" && (strings.EqualFold(host, "localhost") || net.ParseIP(host).IsLoopback()):
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

// httpClients are the clients of token and of API requests: one transport, each request's redirect policy.
func (m *MicrosoftDefender) httpClients() (tokens, api *http.Client, err error) {
	tlsCfg, err := m.ClientConfig.TLSConfig()
	if err != nil {
		return nil, nil, fmt.Errorf("tls settings: %w", err)
	}
	proxyFunc, err := m.HTTPProxy.Proxy()
	if err != nil {
		return nil, nil, errors.New("http_proxy_url is not a valid URL") // Telegraf's message repeats the password
	}
	transport := http.DefaultTransport.(*http.Transport).Clone()
	transport.TLSClientConfig, transport.Proxy = tlsCfg, proxyFunc
	var rt http.RoundTripper = proxyTransport{transport}
	timeout := time.Duration(m.Timeout)
	signIn := rt
	if m.AuthMethod == methodManagedIdentity {
		// The identity endpoint is local and its request carries a secret header: no proxy may see it.
		direct := transport.Clone()
		direct.Proxy = nil
		signIn = direct
	}
	return &http.Client{Transport: signIn, Timeout: timeout, CheckRedirect: refuseRedirects},
		&http.Client{Transport: rt, Timeout: timeout, CheckRedirect: sameOriginRedirects}, nil
}

func init() {
	inputs.Add("microsoft_defender", func() telegraf.Input {
		return newMicrosoftDefender()
	})
}
