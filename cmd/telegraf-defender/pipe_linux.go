package main

import (
	"os"

	"golang.org/x/sys/unix"
)

// unreadBytes is how many bytes written to the pipe f its reader has not
// read yet; false when f is no pipe.
func unreadBytes(f *os.File) (int, bool) {
	info, err := f.Stat()
	if err != nil || info.Mode()&os.ModeNamedPipe == 0 {
		return 0, false
	}
	conn, err := f.SyscallConn() // unlike Fd, leaves the file's mode as it is
	if err != nil {
		return 0, false
	}
	n, ioctlErr := 0, error(nil)
	if err := conn.Control(func(fd uintptr) { n, ioctlErr = unix.IoctlGetInt(int(fd), unix.TIOCINQ) }); err != nil {
		return 0, false
	}
	return n, ioctlErr == nil
}
