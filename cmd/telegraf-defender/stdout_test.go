package main

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"syscall"
	"testing"

	"github.com/stretchr/testify/require"
)

// replaceStdout points os.Stdout at a new pipe for one test and returns its
// read end.
func replaceStdout(t *testing.T) *os.File {
	t.Helper()
	r, w, err := os.Pipe()
	require.NoError(t, err)
	saved := os.Stdout
	os.Stdout = w
	t.Cleanup(func() {
		os.Stdout = saved
		w.Close()
		r.Close()
	})
	return r
}

// Everything written to the coalesced stdout arrives, in order, by the
// time the flush returns.
func TestCoalescedStdoutDeliversEverythingInOrder(t *testing.T) {
	stdout := replaceStdout(t)
	original := os.Stdout
	received := make(chan []byte)
	go func() {
		all, _ := io.ReadAll(stdout) //nolint:errcheck // the comparison below shows what is missing
		received <- all
	}()

	flush, err := coalesceStdout()
	require.NoError(t, err)
	require.NotSame(t, original, os.Stdout)
	var want bytes.Buffer
	for i := range 20000 {
		line := fmt.Sprintf("defender_alert,severity=high alert_part=%di 1\n", i)
		want.WriteString(line)
		_, err := os.Stdout.WriteString(line)
		require.NoError(t, err)
	}
	require.NoError(t, flush())
	require.Same(t, original, os.Stdout)
	require.NoError(t, original.Close())
	require.Equal(t, want.String(), string(<-received))
}

// When the original stdout breaks, writes to the coalesced one fail instead of
// blocking for ever, and the flush reports why.
func TestCoalescedStdoutFailsWhenStdoutBreaks(t *testing.T) {
	stdout := replaceStdout(t)
	require.NoError(t, stdout.Close())

	flush, err := coalesceStdout()
	require.NoError(t, err)
	line := bytes.Repeat([]byte("x"), 1024)
	var writeErr error
	for range 10000 { // far more than the pipes hold
		if _, writeErr = os.Stdout.Write(line); writeErr != nil {
			break
		}
	}
	require.ErrorIs(t, writeErr, syscall.EPIPE)
	require.ErrorIs(t, flush(), syscall.EPIPE)
}
