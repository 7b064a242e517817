// Package scenario holds, in its tests, the scenarios that drive the
// microsoft_defender input from outside, as Telegraf does, against the
// simulator (internal/sim): hundreds of polls, every fault, crashes and
// restarts, both APIs. They use only what the plugin exports: its
// configuration, Init, Start, Gather, Probe, Interrupt, Stop and its state,
// the metrics it emits, the log it writes and the requests it sends.
//
// Each scenario runs in a testing/synctest bubble: the plugin and the
// simulator share the bubble's virtual clock, which moves only when every
// goroutine waits (time.Sleep moves it at once), and they talk over
// in-memory connections, so that hours of polling take milliseconds.
package scenario
