package microsoft_defender

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
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

// source names the stream read: API, address, tenant and filters, no secret.
func (m *MicrosoftDefender) source() string {
	groups := slices.Sorted(slices.Values(m.MachineGroups))
	source := fmt.Sprintf("api=%s endpoint=%s tenant=%s machine_groups=%s device_created_machine_tags=%s cloud_created_machine_tags=%s",
		m.API, m.endpoint.String(), m.TenantID, strings.Join(groups, ","), m.DeviceCreatedMachineTags, m.CloudCreatedMachineTags)
	if m.API != "siem" {
		source += fmt.Sprintf(" service_sources=%s severities=%s", strings.Join(m.ServiceSources, ","), strings.Join(m.Severities, ","))
	}
	return source
}

// state is what the state file holds: with delivery, only what the outputs confirmed.
func (m *MicrosoftDefender) state() pluginState {
	s := pluginState{Version: stateVersion, Source: m.source(), Watermark: m.cursor.watermark, Pending: m.cursor.pending, Seen: m.cursor.seen}
	if m.delivery != nil {
		unconfirmed := make(map[string]bool)
		for _, b := range m.delivery.queue {
			if b.ok { // confirmed behind an unconfirmed batch: read again, it is dropped
				continue
			}
			for _, id := range b.ids {
				unconfirmed[id] = true
			}
		}
		s.Watermark, s.Pending = m.delivery.confirmed.watermark, m.delivery.confirmed.pending
		s.Seen = make(map[string]time.Time, len(m.cursor.seen))
		for id, t := range m.cursor.seen {
			if !unconfirmed[id] {
				s.Seen[id] = t
			}
		}
	}
	return s
}

// checkState refuses a state of another version or stream, or an inconsistent one.
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

// maxStateFileSize caps state_file: some 500,000 ids, 800 a second over the default overlap.
var maxStateFileSize int64 = 64 << 20

// openStateFile locks state_file and restores the cursor from it. It refuses what is not a regular file (a
// FIFO would hang) or holds no JSON object; a corrupt file is moved aside, as refusing to start loses more.
func (m *MicrosoftDefender) openStateFile() error {
	m.releaseStateLock() // when Init runs again
	m.statePath = resolvePath(m.StateFile)
	info, err := os.Stat(m.statePath)
	switch {
	case err != nil && !errors.Is(err, os.ErrNotExist):
		return fmt.Errorf("state_file %q: %w", m.StateFile, err)
	case err == nil && !info.Mode().IsRegular():
		return fmt.Errorf("state_file %q is %s, not a regular file: point it at a file of its own", m.StateFile, describeFileMode(info.Mode()))
	}
	lock, err := lockState(m.statePath)
	if err != nil {
		return err
	}
	if err := m.loadStateFile(); err != nil {
		lock.Close()
		return err
	}
	m.stateLock = lock
	return nil
}

// resolvePath follows links to where a state file is, or would be: two names of one file share its lock, and
// a save replaces the file, not the link. 40 links end a loop.
func resolvePath(path string) string {
	for range 40 {
		target, err := os.Readlink(path)
		if err != nil {
			break
		}
		if !filepath.IsAbs(target) {
			target = filepath.Join(filepath.Dir(path), target)
		}
		path = target
	}
	if dir, err := filepath.EvalSymlinks(filepath.Dir(path)); err == nil {
		return filepath.Join(dir, filepath.Base(path))
	}
	return path
}

// describeFileMode names what a file that is not a regular one is.
func describeFileMode(mode os.FileMode) string {
	switch {
	case mode.IsDir():
		return "a directory"
	case mode&os.ModeNamedPipe != 0:
		return "a named pipe (FIFO)"
	case mode&os.ModeDevice != 0:
		return "a device"
	}
	return "a special file (" + mode.Type().String() + ")"
}

// releaseStateLock lets another instance use state_file. The lock file stays: removed, it would let a third
// instance lock a new file while a second holds the old one.
func (m *MicrosoftDefender) releaseStateLock() {
	if m.stateLock != nil {
		m.stateLock.Close()
		m.stateLock = nil
	}
}

// loadStateFile restores the cursor, or moves aside a file it cannot use.
func (m *MicrosoftDefender) loadStateFile() error {
	data, whole, err := readStateFile(m.statePath)
	content := bytes.TrimLeft(data, " \t\r\n")
	var s pluginState
	var problem string
	switch {
	case errors.Is(err, os.ErrNotExist):
		m.Log.Infof("No state file %q yet: first run, reading the last %s", m.StateFile, time.Duration(m.InitialLookback))
		return nil
	case err != nil:
		problem = fmt.Sprintf("is unreadable (%v)", err)
	case whole && len(content) == 0:
		m.Log.Infof("State file %q is empty: first run, reading the last %s", m.StateFile, time.Duration(m.InitialLookback))
		return nil
	case len(content) == 0 || content[0] != '{':
		return fmt.Errorf("state_file %q is not a state file of this plugin (it does not hold a JSON object): "+
			"refusing to overwrite it; point state_file at a file of its own", m.StateFile)
	case !whole:
		problem = fmt.Sprintf("is larger than the %d bytes a state file may hold", maxStateFileSize)
	default:
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
	m.cursor.watermark, m.cursor.pending = s.Watermark, s.Pending
	if s.Seen != nil {
		m.cursor.seen = s.Seen
	}
	m.Log.Debugf("Resuming from state file %q at %s", m.StateFile, s.Watermark.Format(time.RFC3339Nano))
	return nil
}

// readStateFile reads the file whole or, past maxStateFileSize, its start.
func readStateFile(path string) (data []byte, whole bool, err error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, false, err
	}
	defer f.Close()
	limit := maxStateFileSize + 1
	if info, err := f.Stat(); err == nil && info.Size() > maxStateFileSize {
		limit = 512
	}
	data, err = io.ReadAll(io.LimitReader(f, limit))
	return data, limit > maxStateFileSize && int64(len(data)) <= maxStateFileSize, err
}

// moveStateFileAside renames the state file to <path>.corrupt-<UTC time>.
func (m *MicrosoftDefender) moveStateFileAside() (string, error) {
	base := m.statePath + ".corrupt-" + m.now().UTC().Format("20060102T150405Z")
	aside := base
	for i := 2; ; i++ {
		if _, err := os.Lstat(aside); errors.Is(err, os.ErrNotExist) {
			return aside, os.Rename(m.statePath, aside)
		}
		aside = fmt.Sprintf("%s-%d", base, i)
	}
}

// saveStateFile renames a synced temporary file over the state file: a crash never leaves a torn file.
func (m *MicrosoftDefender) saveStateFile() error {
	data, err := json.Marshal(m.state())
	if err != nil {
		return err
	}
	if int64(len(data)) > maxStateFileSize {
		return fmt.Errorf("the state is %d bytes, more than the %d a state file may hold: lower overlap", len(data), maxStateFileSize)
	}
	dir := filepath.Dir(m.statePath)
	tmp, err := os.CreateTemp(dir, filepath.Base(m.statePath)+".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // fails harmlessly once renamed
	_, err = tmp.Write(data)
	if err := errors.Join(err, tmp.Sync(), tmp.Close()); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), m.statePath); err != nil {
		return err
	}
	// Syncing the directory makes the rename durable; Windows cannot, nor needs to.
	if d, err := os.Open(dir); err == nil {
		d.Sync() //nolint:errcheck // best effort: the file itself is synced
		d.Close()
	}
	return nil
}

// lockStatePath is the lock's file: beside state_file, which each save replaces.
func lockStatePath(stateFile string) string {
	return stateFile + ".lock"
}

// lockState takes the lock of stateFile without waiting; the system drops it when its holder ends.
func lockState(stateFile string) (*flock.Flock, error) {
	path := lockStatePath(stateFile)
	lock := flock.New(path, flock.SetPermissions(0o600))
	switch locked, err := lock.TryLock(); {
	case err != nil:
		return nil, fmt.Errorf("state_file %q: cannot lock %q: %w", stateFile, path, err)
	case !locked:
		return nil, fmt.Errorf("state_file %q is in use by another process or plugin instance, which holds its lock %q: "+
			"give each instance a state file of its own", stateFile, path)
	}
	return lock, nil
}
