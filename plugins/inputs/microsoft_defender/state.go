package microsoft_defender

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/gofrs/flock"
)

// stateVersion is the state format's version; another is not trusted.
const stateVersion = 1

// pluginState is the cursor and its stream, so that it is never applied to another tenant.
type pluginState struct {
	Version   int                  `json:"version"`
	Source    string               `json:"source"`
	Watermark time.Time            `json:"watermark"`
	Pending   *chunk               `json:"pending,omitempty"`
	Seen      map[string]time.Time `json:"seen"`
}

// source names the stream this instance reads: API, address, tenant and
// filters, no secret.
func (m *MicrosoftDefender) source() string {
	groups := append([]string(nil), m.MachineGroups...)
	sort.Strings(groups)
	source := fmt.Sprintf("api=%s endpoint=%s tenant=%s machine_groups=%s device_created_machine_tags=%s cloud_created_machine_tags=%s",
		m.API, m.endpoint.String(), m.TenantID, strings.Join(groups, ","), m.DeviceCreatedMachineTags, m.CloudCreatedMachineTags)
	if m.API != "siem" {
		source += fmt.Sprintf(" service_sources=%s severities=%s", strings.Join(m.ServiceSources, ","), strings.Join(m.Severities, ","))
	}
	return source
}

func (m *MicrosoftDefender) state() pluginState {
	seen := make(map[string]time.Time, len(m.cursor.seen))
	maps.Copy(seen, m.cursor.seen)
	var pending *chunk
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
	maps.Copy(m.cursor.seen, s.Seen)
}

// maxStateFileSize caps state_file: some 500,000 detection ids, 800 a second
// over the default ten-minute overlap.
var maxStateFileSize int64 = 64 << 20

// openStateFile locks state_file and restores the cursor from it. It refuses
// a path that is not a regular file (a FIFO would hang) and a file without
// JSON, which it would overwrite. A corrupt file is moved aside and the
// plugin starts afresh: refusing to start would lose every detection.
func (m *MicrosoftDefender) openStateFile() error {
	m.releaseStateLock() // when Init runs again
	info, err := os.Stat(m.StateFile)
	switch {
	case errors.Is(err, os.ErrNotExist):
		info = nil
	case err != nil:
		return fmt.Errorf("state_file %q: %w", m.StateFile, err)
	case !info.Mode().IsRegular():
		return fmt.Errorf("state_file %q is %s, not a regular file: point it at a file of its own", m.StateFile, describeFileMode(info.Mode()))
	}
	lock, err := lockState(m.StateFile)
	if err != nil {
		return err
	}
	if err := m.loadStateFile(info != nil); err != nil {
		lock.release()
		return err
	}
	m.stateLock = lock
	return nil
}

// releaseStateLock lets another instance use state_file.
func (m *MicrosoftDefender) releaseStateLock() {
	m.stateLock.release()
	m.stateLock = nil
}

func describeFileMode(mode os.FileMode) string {
	switch {
	case mode.IsDir():
		return "a directory"
	case mode&os.ModeNamedPipe != 0:
		return "a named pipe (FIFO)"
	case mode&os.ModeSocket != 0:
		return "a socket"
	case mode&os.ModeDevice != 0:
		return "a device"
	default:
		return "not a regular file (" + mode.Type().String() + ")"
	}
}

var errStateTooLarge = errors.New("the state file is too large")

func (m *MicrosoftDefender) loadStateFile(exists bool) error {
	if !exists {
		m.Log.Infof("No state file %q yet: first run, reading the last %s", m.StateFile, time.Duration(m.InitialLookback))
		return nil
	}
	data, err := readStateFile(m.StateFile)
	if err == nil || errors.Is(err, errStateTooLarge) {
		content := bytes.TrimLeft(data, " \t\r\n")
		switch {
		case len(content) == 0 && err == nil:
			m.Log.Infof("State file %q is empty: first run, reading the last %s", m.StateFile, time.Duration(m.InitialLookback))
			return nil
		case len(content) == 0 || content[0] != '{':
			return fmt.Errorf("state_file %q is not a state file of this plugin (it does not hold a JSON object): "+
				"refusing to overwrite it; point state_file at a file of its own", m.StateFile)
		}
	}
	var problem string
	switch {
	case errors.Is(err, errStateTooLarge):
		problem = fmt.Sprintf("is larger than the %d bytes a state file may hold", maxStateFileSize)
	case err != nil:
		problem = fmt.Sprintf("is unreadable (%v)", err)
	}
	var s pluginState
	if err == nil {
		if err := json.Unmarshal(data, &s); err != nil {
			problem = fmt.Sprintf("is corrupt (%v)", err)
		}
	}
	if problem != "" {
		aside, err := m.moveStateFileAside()
		if err != nil {
			return fmt.Errorf("state_file %q %s and could not be moved aside, so it is not overwritten: %w", m.StateFile, problem, err)
		}
		m.Log.Warnf("State file %q %s: moved it to %q, starting as on a first run", m.StateFile, problem, aside)
		return nil
	}
	if err := m.checkState(&s); err != nil {
		m.Log.Warnf("Ignoring state file %q, starting as on a first run: %v", m.StateFile, err)
		return nil
	}
	m.applyState(&s)
	m.Log.Debugf("Resuming from state file %q at %s", m.StateFile, s.Watermark.Format(time.RFC3339Nano))
	return nil
}

// readStateFile reads the file whole, or only its start with errStateTooLarge.
func readStateFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	limit := maxStateFileSize + 1
	if info, err := f.Stat(); err == nil && info.Size() > maxStateFileSize {
		limit = 512 // enough to tell whether it is JSON
	}
	data, err := io.ReadAll(io.LimitReader(f, limit))
	if err != nil {
		return nil, err
	}
	if limit <= maxStateFileSize || int64(len(data)) > maxStateFileSize {
		return data[:min(len(data), 512)], errStateTooLarge
	}
	return data, nil
}

// moveStateFileAside renames the state file to <path>.corrupt-<UTC time>.
func (m *MicrosoftDefender) moveStateFileAside() (string, error) {
	base := m.StateFile + ".corrupt-" + m.now().UTC().Format("20060102T150405Z")
	aside := base
	for i := 2; ; i++ {
		if _, err := os.Lstat(aside); errors.Is(err, os.ErrNotExist) {
			break
		}
		aside = fmt.Sprintf("%s-%d", base, i)
	}
	return aside, os.Rename(m.StateFile, aside)
}

// saveStateFile writes a synced temporary file and renames it over the state
// file, so that a crash never leaves a torn file.
func (m *MicrosoftDefender) saveStateFile() error {
	data, err := json.Marshal(m.state())
	if err != nil {
		return err
	}
	if int64(len(data)) > maxStateFileSize {
		return fmt.Errorf("the state is %d bytes, more than the %d a state file may hold: lower overlap", len(data), maxStateFileSize)
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
	_, err = tmp.Write(data)
	if err == nil {
		err = tmp.Sync()
	}
	if closeErr := tmp.Close(); err == nil {
		err = closeErr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), m.StateFile)
	}
	if err != nil {
		return err
	}
	// Syncing the directory makes the rename durable; Windows cannot, nor needs to.
	if d, err := os.Open(dir); err == nil {
		d.Sync() //nolint:errcheck // best effort: the file itself is synced
		d.Close()
	}
	return nil
}

// stateLock is an exclusive lock on a file beside state_file, which each save
// replaces; the system drops it when its holder ends, a crash included.
type stateLock struct{ *flock.Flock }

// lockStatePath is the lock file of a state file.
func lockStatePath(stateFile string) string {
	return stateFile + ".lock"
}

// lockState takes the lock of stateFile without waiting for it.
func lockState(stateFile string) (*stateLock, error) {
	path := lockStatePath(stateFile)
	lock := flock.New(path, flock.SetPermissions(0o600))
	switch locked, err := lock.TryLock(); {
	case err != nil:
		return nil, fmt.Errorf("state_file %q: cannot lock %q: %w", stateFile, path, err)
	case !locked:
		return nil, fmt.Errorf("state_file %q is in use by another process or plugin instance, which holds its lock %q: "+
			"give each instance a state file of its own", stateFile, path)
	}
	return &stateLock{lock}, nil
}

// release gives the lock up, keeping the file: removing it would let a third
// instance lock a new file while a second holds the old one.
func (l *stateLock) release() {
	if l != nil {
		l.Close()
	}
}
