package main

import (
	"errors"
	"io"
	"os"
)

// coalesceStdout gives the shim a pipe in place of os.Stdout and copies
// what arrives on it to the real stdout in as few writes as it can. The
// shim writes each metric with a write of its own, and each write wakes
// Telegraf's execd to read one line; while Telegraf is busy, the pipe
// fills and the next copy carries up to 64 KiB at once. Nothing waits for
// more: what the copy has read goes out at once. The returned function
// restores os.Stdout, closes the pipe and waits until everything written
// to it has been copied.
func coalesceStdout() (func() error, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	out := os.Stdout
	os.Stdout = w
	copied := make(chan error, 1)
	go func() {
		_, err := io.CopyBuffer(writerOnly{out}, readerOnly{r}, make([]byte, 256*1024))
		// Unblocks the shim's writes if stdout broke: they fail instead
		// of waiting for a reader that is gone.
		r.Close()
		copied <- err
	}()
	return func() error {
		os.Stdout = out
		return errors.Join(w.Close(), <-copied)
	}, nil
}

// readerOnly and writerOnly hide the files' ReadFrom and WriteTo, which
// would splice the pipe in chunks as small as each write.
type readerOnly struct{ io.Reader }

type writerOnly struct{ io.Writer }
