// Command telegraf-defender runs the microsoft_defender input as a Telegraf
// external plugin, for [[inputs.execd]].
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"runtime/pprof"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/influxdata/telegraf"
	"github.com/influxdata/telegraf/logger"
	"github.com/influxdata/telegraf/plugins/common/shim"

	_ "github.com/sectelemetry/telegraf-defender/plugins/inputs/microsoft_defender"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	configFile := flag.String("config", "", "path to the config file of the microsoft_defender input")
	pollInterval := flag.Duration("poll_interval", time.Minute, "how often to poll the Defender API")
	pollIntervalDisabled := flag.Bool("poll_interval_disabled", false,
		"poll only when a newline arrives on stdin (use with signal = \"STDIN\" in [[inputs.execd]])")
	showVersion := flag.Bool("version", false, "print the version and exit")
	checkOnly := flag.Bool("check", false, "check the configuration, the credentials and one request, print a diagnosis and exit")
	cpuProfile := flag.String("cpuprofile", "", "write a CPU profile (pprof) to this file until the plugin stops")
	flag.Parse()

	if *showVersion {
		fmt.Println(versionString())
		return
	}
	if *checkOnly {
		forwardLogsToExecd(os.Stderr)
		if !check(os.Stdout, *configFile) {
			os.Exit(1)
		}
		return
	}
	if *pollIntervalDisabled {
		*pollInterval = shim.PollIntervalDisabled
	}

	forwardLogsToExecd(os.Stderr)
	if err := runPlugin(*configFile, *pollInterval, *cpuProfile); err != nil {
		fmt.Fprintf(os.Stderr, "E! %s\n", oneLine(err.Error()))
		os.Exit(1)
	}
}

// runPlugin runs the input, configured as Telegraf's shim configures it,
// until stdin closes or SIGINT or SIGTERM arrives (runInput).
func runPlugin(configFile string, pollInterval time.Duration, cpuProfile string) error {
	if cpuProfile != "" {
		stop, err := startCPUProfile(cpuProfile)
		if err != nil {
			return err
		}
		defer stop()
	}
	if err := checkKeys(configFile); err != nil {
		return err
	}
	s := shim.New()
	if err := s.LoadConfig(&configFile); err != nil {
		return fmt.Errorf("loading the configuration %q failed: %w", configFile, err)
	}
	// Once Telegraf is gone, a write to stdout or stderr fails (EPIPE) instead of killing the process, Go's
	// default for fd 1 and 2 unless SIGPIPE is notified (os/signal): the run ends through Stop, which saves the state.
	signal.Notify(make(chan os.Signal, 1), syscall.SIGPIPE)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	return runInput(ctx, s.Input, pollInterval, os.Stdin, os.Stdout, os.Stderr)
}

// startCPUProfile profiles the process into path (for `go tool pprof`) until
// the returned function is called.
func startCPUProfile(path string) (func(), error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("creating the CPU profile: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("starting the CPU profile: %w", err)
	}
	return func() {
		pprof.StopCPUProfile()
		if err := f.Close(); err != nil {
			fmt.Fprintf(os.Stderr, "E! writing the CPU profile: %s\n", oneLine(err.Error()))
		}
	}, nil
}

// forwardLogsToExecd writes every log line as "<level>! message", the form
// [[inputs.execd]] reads from stderr to log at the right level. Telegraf's
// default sink starts lines with a timestamp, which execd would report as
// errors whatever their level.
func forwardLogsToExecd(w io.Writer) {
	var mu sync.Mutex
	logger.RedirectLogging(io.Discard)
	//nolint:errcheck // AddCallback fails only if no random id can be made
	logger.AddCallback(func(level telegraf.LogLevel, _ time.Time, _ string, _ map[string]interface{}, args ...interface{}) {
		line := level.Indicator() + " " + oneLine(fmt.Sprint(args...)) + "\n"
		mu.Lock()
		defer mu.Unlock()
		_, _ = io.WriteString(w, line) // nowhere left to report a failing stderr
	})
}

// oneLine keeps a message on one line, because execd reads stderr line by
// line and would log a continuation line as a separate error.
func oneLine(s string) string {
	return strings.NewReplacer("\r\n", " ", "\n", " ", "\r", " ").Replace(s)
}

func versionString() string {
	telegrafVersion := "unknown"
	if info, ok := debug.ReadBuildInfo(); ok {
		for _, dep := range info.Deps {
			if dep.Path == "github.com/influxdata/telegraf" {
				telegrafVersion = dep.Version
			}
		}
	}
	return fmt.Sprintf("telegraf-defender %s (Telegraf shim %s)", version, telegrafVersion)
}
