package microsoft_defender

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// stateVersion is the version of the state format; a state of another
// version is not trusted.
const stateVersion = 1

// pluginState is what survives a restart: the cursor, and the stream it
// belongs to, so that a state file is never applied to another tenant.
type pluginState struct {
	Version   int                  `json:"version"`
	Source    string               `json:"source"`
	Watermark time.Time            `json:"watermark"`
	Pending   *span                `json:"pending,omitempty"`
	Seen      map[string]time.Time `json:"seen"`
}

// source names the stream of detections this instance reads: the API, its
// address, the tenant and the server-side filters. It holds no secret.
func (m *MicrosoftDefender) source() string {
	groups := append([]string(nil), m.MachineGroups...)
	sort.Strings(groups)
	source := fmt.Sprintf("api=%s endpoint=%s tenant=%s machine_groups=%s device_created_machine_tags=%s cloud_created_machine_tags=%s",
		m.API, m.backend.endpoint(), m.TenantID, strings.Join(groups, ","), m.DeviceCreatedMachineTags, m.CloudCreatedMachineTags)
	if m.API == "graph" {
		source += fmt.Sprintf(" service_sources=%s severities=%s", strings.Join(m.ServiceSources, ","), strings.Join(m.Severities, ","))
	}
	return source
}

// ID identifies the instance's state in Telegraf's state file; it changes
// only when the stream read changes, not on unrelated edits.
func (m *MicrosoftDefender) ID() string {
	sum := sha256.Sum256([]byte(m.source()))
	return hex.EncodeToString(sum[:16])
}

// GetState implements telegraf.StatefulPlugin.
func (m *MicrosoftDefender) GetState() interface{} {
	return m.state()
}

// SetState implements telegraf.StatefulPlugin. Telegraf's state file is
// written only on a clean shutdown, so when state_file holds a newer cursor,
// that one is kept.
func (m *MicrosoftDefender) SetState(state interface{}) error {
	var s pluginState
	switch v := state.(type) {
	case pluginState:
		s = v
	case *pluginState:
		s = *v
	default:
		return fmt.Errorf("state has the wrong type %T", state)
	}
	if err := m.checkState(&s); err != nil {
		m.Log.Warnf("Ignoring Telegraf's saved state: %v", err)
		return nil
	}
	if s.Watermark.Before(m.cursor.watermark) {
		return nil
	}
	m.applyState(&s)
	return nil
}

func (m *MicrosoftDefender) state() pluginState {
	seen := make(map[string]time.Time, len(m.cursor.seen))
	for id, t := range m.cursor.seen {
		seen[id] = t
	}
	var pending *span
	if m.cursor.pending != nil {
		p := *m.cursor.pending
		pending = &p
	}
	return pluginState{
		Version:   stateVersion,
		Source:    m.source(),
		Watermark: m.cursor.watermark,
		Pending:   pending,
		Seen:      seen,
	}
}

func (m *MicrosoftDefender) checkState(s *pluginState) error {
	switch {
	case s.Version != stateVersion:
		return fmt.Errorf("its version is %d, this plugin reads version %d", s.Version, stateVersion)
	case s.Source != m.source():
		return fmt.Errorf("it belongs to another stream (%s)", s.Source)
	case s.Pending != nil && (s.Pending.End.Before(s.Pending.Start) || s.Pending.From.Before(s.Pending.Start) || s.Pending.To.After(s.Pending.End)):
		return errors.New("its pending window is inconsistent")
	}
	return nil
}

func (m *MicrosoftDefender) applyState(s *pluginState) {
	m.cursor.watermark = s.Watermark
	m.cursor.pending = s.Pending
	m.cursor.seen = make(map[string]time.Time, len(s.Seen))
	for id, t := range s.Seen {
		m.cursor.seen[id] = t
	}
}

// loadStateFile restores the cursor from state_file. A missing file is a
// first run; an unreadable, corrupt or foreign one is reported and treated
// as a first run, because refusing to start would lose every detection
// from then on.
func (m *MicrosoftDefender) loadStateFile() {
	data, err := os.ReadFile(m.StateFile)
	if errors.Is(err, os.ErrNotExist) {
		m.Log.Infof("No state file %q yet: first run, reading the last %s", m.StateFile, time.Duration(m.InitialLookback))
		return
	}
	if err != nil {
		m.Log.Warnf("Cannot read state file %q, starting as on a first run: %v", m.StateFile, err)
		return
	}
	var s pluginState
	if err := json.Unmarshal(data, &s); err != nil {
		m.Log.Warnf("State file %q is corrupt, starting as on a first run: %v", m.StateFile, err)
		return
	}
	if err := m.checkState(&s); err != nil {
		m.Log.Warnf("Ignoring state file %q, starting as on a first run: %v", m.StateFile, err)
		return
	}
	m.applyState(&s)
	m.Log.Debugf("Resuming from state file %q at %s", m.StateFile, s.Watermark.Format(time.RFC3339Nano))
}

// saveStateFile writes the state atomically: to a temporary file in the
// same directory, synced, then renamed over the old one, so that a crash
// leaves either the old state or the new one, never a torn file.
func (m *MicrosoftDefender) saveStateFile() error {
	data, err := json.Marshal(m.state())
	if err != nil {
		return err
	}
	dir, base := filepath.Split(m.StateFile)
	if dir == "" {
		dir = "."
	}
	tmp, err := os.CreateTemp(dir, base+".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // fails harmlessly once renamed
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), m.StateFile); err != nil {
		return err
	}
	syncDir(dir)
	return nil
}

// syncDir makes the rename durable where the platform allows it; Windows
// cannot open a directory for syncing and needs no such step.
func syncDir(dir string) {
	d, err := os.Open(dir)
	if err != nil {
		return
	}
	defer d.Close()
	d.Sync() //nolint:errcheck // best effort: the file itself is synced
}
