//go:build model

// A randomized model of delivery (too slow for the package's default run, about two minutes):
// go test -tags model -run TestAttack4 ./plugins/inputs/microsoft_defender/
// Polls with random confirmations, rejections, restarts on the state file, clock steps back
// (under a minute), request sizes, max_body_size and budgets; every record must be delivered
// once and counted once. It found TestConfirmedBehindAnUnconfirmedBatchIsNotRepeated.

package microsoft_defender

import (
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"net/http"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/influxdata/telegraf"
	"github.com/influxdata/telegraf/config"
	"github.com/influxdata/telegraf/testutil"
)

// modelRun drives a plugin through polls with random confirmations,
// rejections, restarts and clock steps, and returns how often each id was
// delivered and how many the counts counted.
type modelRun struct {
	rng        *rand.Rand
	t          *testing.T
	server     func() string
	configure  func(*MicrosoftDefender)
	stateFile  string
	idField    string
	outOfOrder bool
	restarts   bool
	clockBack  bool
	graphClock *time.Time // the Graph server's, moved with the plugin's
	logger     *testutil.CaptureLogger

	plugin    *MicrosoftDefender
	acc       *testutil.Accumulator
	seen      int
	open      [][]telegraf.Metric // sent per poll, not yet settled
	delivered map[string]int
	counted   int64
	log       []string
}

func (r *modelRun) start(now time.Time) {
	if r.logger == nil {
		r.logger = &testutil.CaptureLogger{}
	}
	logger := r.logger
	r.plugin = withDefaults(&MicrosoftDefender{
		EndpointURL: r.server(), LoginEndpoint: r.server(), TenantID: testTenant, ClientID: testClientID,
		ClientSecret: config.NewSecret([]byte(testClientSecret)), InitialLookback: config.Duration(time.Hour),
		Timeout: config.Duration(5 * time.Second), Log: logger, StateFile: r.stateFile,
		MaxRequestsPerMinute: 15000,
	})
	r.configure(r.plugin)
	r.plugin.now = func() time.Time { return now }
	if err := r.plugin.Init(); err != nil {
		r.t.Fatal(err)
	}
	r.acc = &testutil.Accumulator{}
	if err := r.plugin.Start(r.acc); err != nil {
		r.t.Fatal(err)
	}
	r.seen = 0
	r.open = nil
}

func (r *modelRun) collect() {
	ms := r.acc.GetTelegrafMetrics()
	var sent []telegraf.Metric
	for _, m := range ms[r.seen:] {
		switch m.Name() {
		case measurementAlert:
			sent = append(sent, m)
		case measurementCount:
			c, _ := m.GetField("count")
			r.counted += c.(int64)
		}
	}
	r.seen = len(ms)
	if len(sent) > 0 {
		r.open = append(r.open, sent)
	}
}

func (r *modelRun) gather(now time.Time) {
	r.plugin.now = func() time.Time { return now }
	if r.graphClock != nil {
		*r.graphClock = now
	}
	r.plugin.lastGather = now.Add(-10 * time.Millisecond) // waits for room end at once
	if err := r.plugin.Gather(r.acc); err != nil {
		r.t.Fatal(err)
	}
	r.collect()
	for _, e := range r.acc.Errors {
		r.log = append(r.log, "E "+e.Error())
	}
	r.acc.Errors = nil
}

// settle confirms (all), rejects or leaves each poll's alerts.
func (r *modelRun) settle(all bool) {
	var keep [][]telegraf.Metric
	for i, group := range r.open {
		if !r.outOfOrder && len(keep) > 0 {
			keep = append(keep, group)
			continue
		}
		switch x := r.rng.IntN(10); {
		case all || x < 5:
			for _, m := range group {
				id, _ := m.GetField(r.idField)
				key := id.(string)
				if at, ok := m.GetField("last_update_date_time"); ok {
					key += "@" + at.(string)
				}
				r.delivered[key]++
				m.Accept()
			}
			r.log = append(r.log, fmt.Sprintf("accept %d (%d) %v", i, len(group), groupIDs(group, r.idField)))
		case x < 7:
			for _, m := range group {
				m.Reject()
			}
			r.log = append(r.log, fmt.Sprintf("reject %d (%d) %v", i, len(group), groupIDs(group, r.idField)))
		default:
			keep = append(keep, group)
		}
	}
	r.open = keep
}

func (r *modelRun) run(polls int) {
	now := fixedNow
	r.start(now)
	back := false
	for i := range polls {
		step := time.Duration(r.rng.IntN(12)) * time.Minute
		if i == 0 {
			step = 0 // the first window begins initial_lookback before the oldest record
		}
		if r.clockBack && back && r.rng.IntN(3) == 0 { // never a minute behind a time it showed
			step = -time.Duration(r.rng.IntN(50)) * time.Second
		}
		back = step >= time.Minute
		now = now.Add(step)
		r.log = append(r.log, "gather at "+now.Format("15:04:05"))
		r.gather(now)
		r.settle(false)
		if r.restarts && r.rng.IntN(6) == 0 {
			r.log = append(r.log, fmt.Sprintf("restart, open %d", len(r.open)))
			r.plugin.Stop()
			r.collect()
			r.start(now)
		}
	}
	for quiet := 0; quiet < 3; { // calm: everything confirmed, until polls send nothing
		now = now.Add(10 * time.Minute)
		before := r.seen
		r.gather(now)
		if len(alerts(r.acc, before)) == 0 && len(r.open) == 0 {
			quiet++
		} else {
			quiet = 0
		}
		r.settle(true)
	}
	r.plugin.Stop()
	r.collect()
}

func siemModel(t *testing.T, seed uint64, outOfOrder, restarts, clockBack bool, bodySize ...int) (*modelRun, []string) {
	rng := rand.New(rand.NewPCG(seed, 1))
	sim := &placedSIEM{}
	ids := make([]string, 0, 40)
	minutes := rng.Perm(160)
	for i := range 40 {
		at := fixedNow.Add(-50*time.Minute + time.Duration(minutes[i])*time.Minute)
		if rng.IntN(3) == 0 && i > 0 && len(bodySize) == 0 { // shares an instant
			at = sim.detections[rng.IntN(i)].at
		}
		id := "d" + strconv.Itoa(i)
		sim.detections = append(sim.detections, placedDetection{id: id, at: at})
		ids = append(ids, id)
	}
	server := stub(t, sim.handler(t))
	pageSize, maxUndelivered, budget := 1+rng.IntN(4), 1+rng.IntN(8), 1+rng.IntN(12)
	return &modelRun{
		rng: rng, t: t, server: func() string { return server.URL + "/api/alerts" }, idField: "full_id",
		stateFile: filepath.Join(t.TempDir(), "state.json"), delivered: make(map[string]int),
		outOfOrder: outOfOrder, restarts: restarts, clockBack: clockBack,
		configure: func(m *MicrosoftDefender) {
			m.LoginEndpoint = server.URL
			m.PageSize, m.MaxUndeliveredAlerts, m.MaxAlertsPerGather = pageSize, maxUndelivered, budget
			m.MaxWindow = config.Duration(20 * time.Minute)
			m.Overlap = config.Duration(5 * time.Minute)
			if len(bodySize) > 0 {
				m.MaxBodySize = config.Size(bodySize[0])
			}
		},
	}, ids
}

func TestAttack4Model(t *testing.T) {
	for _, tc := range []struct {
		name                            string
		outOfOrder, restarts, clockBack bool
	}{
		{"in order", false, false, false},
		{"restarts", false, true, false},
		{"clock back", false, false, true},
		{"out of order", true, false, false},
		{"out of order restarts", true, true, false},
		{"small bodies", false, true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bad := 0
			for seed := range uint64(60) {
				var sizes []int
				if tc.name == "small bodies" {
					sizes = []int{260 + int(seed%5)*60}
				}
				r, ids := siemModel(t, seed, tc.outOfOrder, tc.restarts, tc.clockBack, sizes...)
				r.run(25)
				var wrong []string
				for _, id := range ids {
					if r.delivered[id] != 1 {
						wrong = append(wrong, fmt.Sprintf("%s:%d", id, r.delivered[id]))
					}
				}
				if len(wrong) > 0 || r.counted != int64(len(ids)) {
					bad++
					if bad <= 3 {
						t.Errorf("seed %d: delivered %v counted %d of %d", seed, wrong, r.counted, len(ids))
					}
				}
			}
			t.Logf("%d bad seeds", bad)
		})
	}
}

// graphVersions serves alerts whose latest version at the server's clock
// was last updated in the $filter's [from, to), $top a page with $skip next
// links.
type graphVersions struct {
	versions map[string][]time.Time // per alert, ascending
	clock    *time.Time
}

func (g *graphVersions) handler(t *testing.T) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		m := filterBounds.FindStringSubmatch(r.URL.Query().Get("$filter"))
		if m == nil {
			t.Errorf("no bounds in %s", r.URL.RawQuery)
			return
		}
		from, err1 := time.Parse(time.RFC3339Nano, m[1])
		to, err2 := time.Parse(time.RFC3339Nano, m[2])
		top, err3 := strconv.Atoi(r.URL.Query().Get("$top"))
		if err := errors.Join(err1, err2, err3); err != nil {
			t.Errorf("the query %s: %v", r.URL.RawQuery, err)
		}
		var match []string
		for _, id := range slices.Sorted(maps.Keys(g.versions)) {
			var latest time.Time
			for _, v := range g.versions[id] {
				if !v.After(*g.clock) {
					latest = v
				}
			}
			if !latest.IsZero() && !latest.Before(from) && latest.Before(to) {
				match = append(match, graphAlertJSON(id, latest))
			}
		}
		body := skipPage(r, match, top)
		respond(t, w, []byte(strings.ReplaceAll(body, "{{server}}", "http://"+r.Host)))
	}
}

func graphModel(t *testing.T, seed uint64, outOfOrder, restarts, clockBack bool) (*modelRun, map[string]time.Time) {
	rng := rand.New(rand.NewPCG(seed, 2))
	clock := fixedNow
	g := &graphVersions{versions: make(map[string][]time.Time), clock: &clock}
	final := make(map[string]time.Time)
	all := make([]time.Time, 0, 60)
	for i := range 30 {
		id := "a" + strconv.Itoa(i)
		at := fixedNow.Add(-50*time.Minute + time.Duration(rng.IntN(160))*time.Minute)
		if rng.IntN(3) == 0 && i > 0 {
			at = all[rng.IntN(len(all))]
		}
		vs := []time.Time{at}
		for rng.IntN(2) == 0 {
			at = at.Add(time.Duration(1+rng.IntN(30)) * time.Minute)
			vs = append(vs, at)
		}
		all = append(all, vs...)
		g.versions[id] = vs
		final[id] = at
	}
	server := stub(t, g.handler(t))
	// A budget below an instant's versions loses the rest of its chain, as documented.
	pageSize, maxUndelivered, budget := 1+rng.IntN(4), 1+rng.IntN(8), 100
	r := &modelRun{
		rng: rng, t: t, server: func() string { return server.URL + graphAlertsPath }, idField: "alert_id",
		stateFile: filepath.Join(t.TempDir(), "state.json"), delivered: make(map[string]int),
		outOfOrder: outOfOrder, restarts: restarts, clockBack: clockBack, graphClock: &clock,
		configure: func(m *MicrosoftDefender) {
			m.API, m.LoginEndpoint = "graph", server.URL
			m.PageSize, m.MaxUndeliveredAlerts, m.MaxAlertsPerGather = pageSize, maxUndelivered, budget
			m.MaxWindow = config.Duration(20 * time.Minute)
			m.Overlap = config.Duration(5 * time.Minute)
		},
	}
	return r, final
}

func TestAttack4GraphModel(t *testing.T) {
	for _, tc := range []struct {
		name                            string
		outOfOrder, restarts, clockBack bool
	}{
		{"in order", false, false, false},
		{"restarts", false, true, false},
		{"clock back", false, false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bad := 0
			for seed := range uint64(40) {
				r, final := graphModel(t, seed, tc.outOfOrder, tc.restarts, tc.clockBack)
				r.run(25)
				var wrong []string
				for id, at := range final {
					key := id + "@" + at.Format(time.RFC3339Nano)
					if r.delivered[key] != 1 {
						wrong = append(wrong, fmt.Sprintf("%s:%d", key, r.delivered[key]))
					}
				}
				for key, n := range r.delivered {
					if n > 1 {
						wrong = append(wrong, fmt.Sprintf("%s:%d", key, n))
					}
				}
				slices.Sort(wrong)
				wrong = slices.Compact(wrong)
				if len(wrong) > 0 {
					bad++
					if bad <= 3 {
						t.Errorf("seed %d: delivered %v", seed, wrong)
					}
				}
			}
			t.Logf("%d bad seeds", bad)
		})
	}
}

func groupIDs(group []telegraf.Metric, field string) []string {
	ids := make([]string, 0, len(group))
	for _, m := range group {
		id, _ := m.GetField(field)
		ids = append(ids, id.(string))
	}
	return ids
}
