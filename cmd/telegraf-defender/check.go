package main

import (
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/influxdata/telegraf"
	"github.com/influxdata/telegraf/logger"
	"github.com/influxdata/telegraf/plugins/common/shim"

	"github.com/sectelemetry/telegraf-defender/plugins/inputs/microsoft_defender"
)

// check validates the configuration, fetches a token and sends one minimal
// request, and writes a plain diagnosis: which step failed, what the
// service said and, where known, what fixes it. It reports whether a poll
// would succeed.
func check(w io.Writer, configFile string) bool {
	fmt.Fprintf(w, "Checking %s\n", configFile)
	input, err := loadInput(configFile)
	if err == nil && input == nil {
		err = errors.New("no [[inputs.microsoft_defender]] section")
	}
	var plugin *microsoft_defender.MicrosoftDefender
	if err == nil {
		var ok bool
		if plugin, ok = input.(*microsoft_defender.MicrosoftDefender); !ok {
			err = fmt.Errorf("the section is not [[inputs.microsoft_defender]] but %T", input)
		}
	}
	if err == nil {
		if plugin.Log == nil {
			// The shim sets the logger only when it runs the plugin; the
			// probe logs to stderr here.
			plugin.Log = logger.New("inputs", "microsoft_defender", "")
		}
		// The plugin may be running: it holds state_file's lock, and the
		// probe does not need the cursor. A diagnosis also must not move a
		// corrupt state file aside.
		plugin.StateFile = ""
		err = plugin.Init()
	}
	if err != nil {
		report(w, "configuration", oneLine(err.Error()))
		report(w, "token", "skipped")
		report(w, "request", "skipped")
		fmt.Fprintln(w, "Likely fix: correct the configuration key the message names; the plugin's README documents each key.")
		return false
	}
	report(w, "configuration", fmt.Sprintf("ok (api %q, %s)", plugin.API, endpointOf(plugin)))

	err = plugin.Probe()
	plugin.Stop()
	if err == nil {
		report(w, "token", "ok")
		report(w, "request", "ok")
		fmt.Fprintln(w, "A poll would succeed.")
		return true
	}
	// The probe's error is "<step>: <error>", the error saying what fixes it where that is known.
	step, cause, _ := strings.Cut(err.Error(), ": ")
	if step == "token" {
		report(w, "token", "failed: "+oneLine(cause))
		report(w, "request", "skipped")
	} else {
		report(w, "token", "ok")
		report(w, "request", "failed: "+oneLine(cause))
	}
	return false
}

// loadInput reads the configuration as the shim does, after refusing keys
// the shim would ignore.
func loadInput(configFile string) (telegraf.Input, error) {
	if err := checkKeys(configFile); err != nil {
		return nil, err
	}
	loaded, err := shim.LoadConfig(&configFile)
	return loaded.Input, err
}

func report(w io.Writer, step, outcome string) {
	fmt.Fprintf(w, "  %-14s %s\n", step, outcome)
}

func endpointOf(p *microsoft_defender.MicrosoftDefender) string {
	if p.EndpointURL != "" {
		return p.EndpointURL
	}
	return "region " + p.Region
}
