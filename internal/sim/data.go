package sim

import (
	"crypto/sha1" //nolint:gosec // the simulator only needs realistic-looking hashes
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"sort"
	"strings"
	"time"
)

// TimeLayout is how the SIEM API writes timestamps: UTC, 7 fractional digits.
const TimeLayout = "2006-01-02T15:04:05.0000000Z"

// Detection is one SIEM API detection in the service's newest (2020) shape,
// where empty values are "" rather than absent or null.
type Detection struct {
	AlertTime                 string `json:"AlertTime"`
	ComputerDNSName           string `json:"ComputerDnsName"`
	AlertTitle                string `json:"AlertTitle"`
	Category                  string `json:"Category"`
	Severity                  string `json:"Severity"`
	AlertID                   string `json:"AlertId"`
	Actor                     string `json:"Actor"`
	LinkToWDATP               string `json:"LinkToWDATP"`
	IocName                   string `json:"IocName"`
	IocValue                  string `json:"IocValue"`
	CreatorIocName            string `json:"CreatorIocName"`
	CreatorIocValue           string `json:"CreatorIocValue"`
	Sha1                      string `json:"Sha1"`
	FileName                  string `json:"FileName"`
	FilePath                  string `json:"FilePath"`
	IPAddress                 string `json:"IpAddress"`
	URL                       string `json:"Url"`
	IoaDefinitionID           string `json:"IoaDefinitionId"`
	UserName                  string `json:"UserName"`
	AlertPart                 int    `json:"AlertPart"`
	FullID                    string `json:"FullId"`
	LastProcessedTimeUtc      string `json:"LastProcessedTimeUtc"`
	ThreatCategory            string `json:"ThreatCategory"`
	ThreatFamily              string `json:"ThreatFamily"`
	ThreatName                string `json:"ThreatName"`
	RemediationAction         string `json:"RemediationAction"`
	RemediationIsSuccess      *bool  `json:"RemediationIsSuccess"`
	Source                    string `json:"Source"`
	Md5                       string `json:"Md5"`
	Sha256                    string `json:"Sha256"`
	WasExecutingWhileDetected *bool  `json:"WasExecutingWhileDetected"`
	UserDomain                string `json:"UserDomain"`
	LogOnUsers                string `json:"LogOnUsers"`
	MachineDomain             string `json:"MachineDomain"`
	MachineName               string `json:"MachineName"`
	InternalIPv4List          string `json:"InternalIPv4List"`
	InternalIPv6List          string `json:"InternalIPv6List"`
	FileHash                  string `json:"FileHash"`
	DeviceID                  string `json:"DeviceID"`
	MachineGroup              string `json:"MachineGroup"`
	Description               string `json:"Description"`
	DeviceCreatedMachineTags  string `json:"DeviceCreatedMachineTags"`
	CloudCreatedMachineTags   string `json:"CloudCreatedMachineTags"`
	CommandLine               string `json:"CommandLine"`
	IncidentLinkToWDATP       string `json:"IncidentLinkToWDATP"`
	ReportID                  int64  `json:"ReportID"`
	LinkToMTP                 string `json:"LinkToMTP"`
	IncidentLinkToMTP         string `json:"IncidentLinkToMTP"`
	ExternalID                string `json:"ExternalId"`
	IocUniqueID               string `json:"IocUniqueId"`

	// VisibleAt is when the API starts returning the detection; zero means
	// at its LastProcessedTimeUtc.
	VisibleAt time.Time `json:"-"`
}

type stored struct {
	Detection
	lastProcessed time.Time
	visibleAt     time.Time
}

// Add stores detections. LastProcessedTimeUtc must be set in TimeLayout
// (or any RFC 3339 form).
func (s *Server) Add(detections ...Detection) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := range detections {
		if err := s.addLocked(&detections[i]); err != nil {
			return err
		}
	}
	return nil
}

func (s *Server) addLocked(d *Detection) error {
	lpt, err := time.Parse(time.RFC3339Nano, d.LastProcessedTimeUtc)
	if err != nil {
		return fmt.Errorf("detection %q: LastProcessedTimeUtc: %w", d.FullID, err)
	}
	visible := d.VisibleAt
	if visible.IsZero() {
		visible = lpt
	}
	i := sort.Search(len(s.detections), func(i int) bool { return s.detections[i].lastProcessed.After(lpt) })
	s.detections = append(s.detections, stored{})
	copy(s.detections[i+1:], s.detections[i:])
	s.detections[i] = stored{Detection: *d, lastProcessed: lpt.UTC(), visibleAt: visible.UTC()}
	return nil
}

// All returns every detection stored or generated up to now, visible or
// not, in LastProcessedTimeUtc order: the ground truth tests compare with.
func (s *Server) All() []Detection {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.generateLocked(s.now())
	out := make([]Detection, 0, len(s.detections))
	for i := range s.detections {
		out = append(out, s.detections[i].Detection)
	}
	return out
}

// generateLocked extends the generated stream up to now. Event times are
// multiples of the step since the Unix epoch and each event's content
// follows from its time and the seed, so a restarted simulator serves the
// same detections for the same times.
func (s *Server) generateLocked(now time.Time) {
	from := s.generated
	if !now.After(from) {
		return
	}
	s.generated = now
	if s.cfg.Rate > 0 {
		step := int64(float64(time.Minute) / s.cfg.Rate)
		if step <= 0 {
			step = 1
		}
		for n := from.UnixNano()/step + 1; n <= now.UnixNano()/step; n++ {
			generated := s.generate(uint64(n), time.Unix(0, n*step).UTC(), 3)
			for i := range generated {
				s.addLocked(&generated[i]) //nolint:errcheck // generated timestamps always parse
			}
			versions := s.graphVersionsOf(uint64(n), generated)
			for i := range versions {
				s.addGraphLocked(&versions[i]) //nolint:errcheck // generated timestamps always parse
			}
			if len(versions) > 0 {
				s.generateIncidentLocked(uint64(n), versions)
			}
		}
	}
	if every := int64(s.cfg.BurstEvery); every > 0 && s.cfg.BurstSize > 0 {
		for n := from.UnixNano()/every + 1; n <= now.UnixNano()/every; n++ {
			at := time.Unix(0, n*every).UTC()
			for j := range s.cfg.BurstSize {
				// A separate index space, so bursts never repeat an event.
				d := s.generate(1<<62+uint64(n)*uint64(s.cfg.BurstSize)+uint64(j), at, 1)[0]
				s.addLocked(&d) //nolint:errcheck // generated timestamps always parse
			}
		}
	}
}

var (
	severities = []struct {
		name   string
		weight int
	}{{"Informational", 20}, {"Low", 30}, {"Medium", 35}, {"High", 15}}
	categories = []struct{ name, title, ioa string }{
		{"Malware", "'Emotet' malware was detected", ""},
		{"SuspiciousActivity", "Suspicious PowerShell commandline", "7f1c3609-a3ff-40e2-995b-c01770161d68"},
		{"Execution", "Suspicious process executed PowerShell command", "a8e6d7c2-4b1f-4a8e-9b6c-1d2e3f4a5b6c"},
		{"DefenseEvasion", "Suspicious Task Scheduler activity", "0b9e4f5a-2c3d-4e6f-8a1b-7c9d0e2f3a4b"},
		{"CredentialAccess", "Suspicious access to LSASS service", "3c5d7e9f-1a2b-4c6d-8e0f-2a4b6c8d0e1f"},
		{"LateralMovement", "Suspicious remote WMI execution", "5e7f9a1b-3c4d-4e8f-a0b2-c4d6e8f0a1b3"},
		{"Ransomware", "Ransomware behavior detected in the file system", "9a1b3c5d-7e8f-4a0b-b2c4-d6e8f0a2b4c6"},
		{"UnwantedSoftware", "'Presenoker' unwanted software was detected", ""},
		{"Persistence", "Anomaly detected in ASEP registry", "1d3f5a7b-9c0e-4b2d-8f4a-6b8c0d2e4f6a"},
		{"Discovery", "Suspicious account discovery", "2e4a6c8e-0b1d-4f3a-9c5e-7d9f1b3d5f7a"},
		{"CommandAndControl", "Connection to a custom network indicator", ""},
		{"Exfiltration", "Suspicious data exfiltration over web service", "4f6b8d0f-2a3c-4e5b-a7d9-f1b3d5f7b9d1"},
	}
	sources = []string{"EDR", "Antivirus", "Microsoft Defender ATP", "SmartScreen", "CustomDetection"}
	groups  = []string{"Servers-EU", "Workstations-UK", "Domain Controllers", "Finance", "Lab", ""}
	files   = []struct{ name, path, cmd string }{
		{"powershell.exe", `C:\Windows\System32\WindowsPowerShell\v1.0`, `powershell.exe -NoP -W Hidden -Enc SQBFAFgA`},
		{"rundll32.exe", `C:\Windows\System32`, `rundll32.exe C:\Users\Public\x.dll,DllRegisterServer`},
		{"invoice.docm", `C:\Users\alice\Downloads`, ``},
		{"svch0st.exe", `C:\ProgramData\Temp`, `svch0st.exe -k netsvcs`},
		{"schtasks.exe", `C:\Windows\System32`, `schtasks.exe /create /tn Updater /tr C:\ProgramData\u.exe /sc minute`},
	}
	users = []string{"alice", "bob", "svc_backup", "administrator", "carol"}
)

// generate returns the detections of generated event number i: one alert
// with one to maxParts detections (AlertPart), all processed at lpt.
func (s *Server) generate(i uint64, lpt time.Time, maxParts int) []Detection {
	rng := rand.New(rand.NewPCG(s.cfg.Seed, i)) //nolint:gosec // reproducible fake data, not security
	severity := pickWeighted(rng)
	cat := categories[rng.IntN(len(categories))]
	machine := rng.IntN(40)
	group := groups[machine%len(groups)]
	name := fmt.Sprintf("%s-%03d", []string{"srv", "wks", "dc", "fin", "lab", "kiosk"}[machine%len(groups)], machine)
	domain := "contoso.local"
	alertTime := lpt.Add(-time.Duration(rng.Int64N(int64(30 * time.Minute))))
	alertID := fmt.Sprintf("%d_%d", alertTime.UnixNano()/100+621355968000000000, -int64(rng.Uint32()>>1))
	if pad := s.cfg.IDBytes - len(alertID); pad > 0 {
		alertID += strings.Repeat("x", pad)
	}
	incident := 1000 + i
	source := sources[rng.IntN(len(sources))]
	file := files[rng.IntN(len(files))]
	user := users[rng.IntN(len(users))]
	visible := lpt
	if rng.Float64() < s.cfg.LagFraction && s.cfg.MaxLag > 0 {
		visible = lpt.Add(time.Duration(rng.Int64N(int64(s.cfg.MaxLag))))
	}

	parts := 1 + rng.IntN(maxParts)
	out := make([]Detection, 0, parts)
	for part := range parts {
		fileKey := fmt.Appendf(nil, "%d/%d/file", i, part)
		fileSha1 := hex.EncodeToString(sha1Sum(fileKey))
		ioc := strings.ToUpper(hex.EncodeToString(sha256Sum(fmt.Appendf(nil, "%d/%d/ioc", s.cfg.Seed, i*4+uint64(part)))))
		d := Detection{
			AlertTime:            alertTime.UTC().Format(TimeLayout),
			ComputerDNSName:      name + "." + domain,
			AlertTitle:           cat.title,
			Category:             cat.name,
			Severity:             severity,
			AlertID:              alertID,
			LinkToWDATP:          "https://securitycenter.windows.com/alert/" + alertID,
			Sha1:                 fileSha1,
			Sha256:               hex.EncodeToString(sha256Sum(fileKey)),
			FileName:             file.name,
			FilePath:             file.path,
			IoaDefinitionID:      cat.ioa,
			UserName:             user,
			UserDomain:           "CONTOSO",
			AlertPart:            part,
			FullID:               alertID + ":" + ioc,
			LastProcessedTimeUtc: lpt.UTC().Format(TimeLayout),
			Source:               source,
			LogOnUsers:           "CONTOSO\\" + user,
			MachineDomain:        domain,
			MachineName:          name,
			InternalIPv4List:     fmt.Sprintf("10.%d.%d.%d", machine%6, machine, 10+machine),
			InternalIPv6List:     fmt.Sprintf("fe80::%x", 0x1000+machine),
			FileHash:             fileSha1,
			DeviceID:             hex.EncodeToString(sha1Sum(fmt.Appendf(nil, "device-%d", machine))),
			MachineGroup:         group,
			Description:          cat.title + " on " + name + ". Investigate the process tree and the files it wrote.",
			CommandLine:          file.cmd,
			IncidentLinkToWDATP:  fmt.Sprintf("https://securitycenter.windows.com/incidents/%d", incident),
			ReportID:             int64(20000 + i*4 + uint64(part)),
			LinkToMTP:            "https://security.microsoft.com/alerts/" + alertID,
			IncidentLinkToMTP:    fmt.Sprintf("https://security.microsoft.com/incidents/%d?tid=%s", incident, s.cfg.TenantID),
			IocUniqueID:          ioc,
			VisibleAt:            visible,
		}
		if machine%3 == 0 {
			d.DeviceCreatedMachineTags = "VIP"
		}
		if machine%4 == 0 {
			d.CloudCreatedMachineTags = "Critical,PCI"
		}
		if source == "Antivirus" {
			success := rng.IntN(4) != 0
			executing := rng.IntN(3) == 0
			d.ThreatCategory = "Trojan"
			d.ThreatFamily = "Emotet"
			d.ThreatName = "Trojan:Win32/Emotet.A"
			d.RemediationAction = "quarantine"
			d.RemediationIsSuccess = &success
			d.WasExecutingWhileDetected = &executing
		}
		if cat.name == "CommandAndControl" {
			d.IPAddress = fmt.Sprintf("203.0.113.%d", rng.IntN(250)+1)
			d.URL = "http://malicious.example/beacon"
		}
		out = append(out, d)
	}
	return out
}

func pickWeighted(rng *rand.Rand) string {
	n := rng.IntN(100)
	for _, s := range severities {
		if n < s.weight {
			return s.name
		}
		n -= s.weight
	}
	return severities[len(severities)-1].name
}

func sha1Sum(b []byte) []byte {
	sum := sha1.Sum(b) //nolint:gosec // fake data
	return sum[:]
}

func sha256Sum(b []byte) []byte {
	sum := sha256.Sum256(b)
	return sum[:]
}
