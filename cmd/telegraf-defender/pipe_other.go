//go:build !linux

package main

import "os"

// unreadBytes cannot tell what a pipe's reader read here: every line flushed
// counts as read.
func unreadBytes(*os.File) (int, bool) { return 0, false }
