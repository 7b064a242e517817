package microsoft_defender

import (
	"errors"
	"fmt"
	"os"
)

// errLockHeld: another open file holds the lock.
var errLockHeld = errors.New("the lock is held")

// stateLock is an exclusive lock on the file beside state_file, so that two
// processes or plugin instances never read and write one state, each
// emitting everything. The state file itself cannot carry the lock: each
// save replaces it by a rename. The operating system drops the lock when
// its holder ends, a crash included, so a stale lock never blocks a
// restart; the lock file stays, as removing it would let a third instance
// lock a new file while a second still holds the old one.
type stateLock struct {
	file *os.File
}

// lockStatePath is the lock file of a state file.
func lockStatePath(stateFile string) string {
	return stateFile + ".lock"
}

// lockState takes the lock of stateFile without waiting for it.
func lockState(stateFile string) (*stateLock, error) {
	path := lockStatePath(stateFile)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("state_file %q: cannot open its lock file: %w", stateFile, err)
	}
	if err := lockFile(f); err != nil {
		f.Close()
		if errors.Is(err, errLockHeld) {
			return nil, fmt.Errorf("state_file %q is in use by another process or plugin instance, which holds its lock %q: "+
				"give each instance a state file of its own", stateFile, path)
		}
		return nil, fmt.Errorf("state_file %q: cannot lock %q: %w", stateFile, path, err)
	}
	return &stateLock{file: f}, nil
}

// release gives the lock up; releasing no lock does nothing.
func (l *stateLock) release() {
	if l == nil || l.file == nil {
		return
	}
	unlockFile(l.file) //nolint:errcheck // closing the file releases it anyway
	l.file.Close()
	l.file = nil
}
