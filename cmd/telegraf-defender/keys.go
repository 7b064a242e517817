package main

import (
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"

	"github.com/BurntSushi/toml"
	influxtoml "github.com/influxdata/toml"
	"github.com/influxdata/toml/ast"

	"github.com/influxdata/telegraf/plugins/inputs"
)

const pluginName = "microsoft_defender"

// shimConfig is the shape Telegraf's shim decodes a configuration file
// into (plugins/common/shim/config.go).
type shimConfig struct {
	Inputs     map[string][]toml.Primitive
	Processors map[string][]toml.Primitive
	Outputs    map[string][]toml.Primitive
}

// shimEnvEscaper is the shim's escaping of environment values, so that the
// file is parsed here exactly as the shim parses it.
var shimEnvEscaper = strings.NewReplacer(`"`, `\"`, `\`, `\\`)

// checkKeys refuses a configuration holding keys or sections that the shim
// would silently ignore, such as a misspelt client_secret, which would leave
// the plugin running with the defaults in force; a Telegraf with the plugin
// built in refuses such keys at start-up itself. It decodes the file as the
// shim does, with the TOML library the shim uses, so that a key counts as
// unknown exactly when the shim would leave it unused: the known keys are
// those of the plugin's struct, embedded TLS and proxy settings included, as
// that library's reflection finds them, not a list kept here. Line numbers
// come from Telegraf's TOML parser, whose syntax tree has them. A file that
// does not parse is left to the shim, which reports that itself.
func checkKeys(configFile string) error {
	if configFile == "" {
		return nil // the shim then loads the plugin with its defaults
	}
	raw, err := os.ReadFile(configFile)
	if err != nil {
		return nil //nolint:nilerr // the shim reports the same error
	}
	data := os.Expand(string(raw), func(key string) string { return shimEnvEscaper.Replace(os.Getenv(key)) })

	var conf shimConfig
	md, err := toml.Decode(data, &conf)
	if err != nil {
		return nil //nolint:nilerr // the shim reports the same error
	}
	creator, ok := inputs.Inputs[pluginName]
	if !ok {
		return errors.New("the " + pluginName + " input is not registered")
	}
	if tables := conf.Inputs[pluginName]; len(tables) > 0 {
		if err := md.PrimitiveDecode(tables[0], creator()); err != nil {
			return nil //nolint:nilerr // the shim reports the same error
		}
	}
	lines := lineIndex(data)

	var problems []string
	if n := len(conf.Inputs[pluginName]); n > 1 {
		problems = append(problems, fmt.Sprintf(
			"%d [[inputs.%s]] sections%s: the external plugin runs only the first; use one file and one [[inputs.execd]] per instance",
			n, pluginName, lines.at([]string{"inputs", pluginName}, 1)))
	}
	for _, kind := range []struct {
		name     string
		sections map[string][]toml.Primitive
	}{{"inputs", conf.Inputs}, {"processors", conf.Processors}, {"outputs", conf.Outputs}} {
		for _, name := range sortedKeys(kind.sections) {
			if kind.name != "inputs" || name != pluginName {
				problems = append(problems, fmt.Sprintf("section [[%s.%s]]%s: telegraf-defender runs only [[inputs.%s]]",
					kind.name, name, lines.at([]string{kind.name, name}, 0), pluginName))
			}
		}
	}
	if len(problems) == 0 {
		keys := topmostUndecoded(md.Undecoded())
		unknown := make([]string, 0, len(keys))
		for _, key := range keys {
			unknown = append(unknown, describeKey(key)+lines.at(key, 0))
		}
		if len(unknown) > 0 {
			problems = append(problems, "unknown "+plural(len(unknown), "key", "keys")+" "+strings.Join(unknown, ", ")+
				", which the external plugin would ignore: check the spelling against the plugin's README"+
				" (Telegraf's own options of a plugin, such as interval or tags, belong in [[inputs.execd]] in telegraf.conf)")
		}
	}
	if len(problems) > 0 {
		return fmt.Errorf("%s: %s", configFile, strings.Join(problems, "; "))
	}
	return nil
}

// topmostUndecoded keeps, of the keys the decoder left unused, those not
// inside another unused one: an unknown table is reported once, not with
// each of its keys.
func topmostUndecoded(keys []toml.Key) []toml.Key {
	var out []toml.Key
	for _, key := range keys {
		inside := false
		for _, other := range out {
			if len(other) < len(key) && strings.HasPrefix(key.String()+".", other.String()+".") {
				inside = true
				break
			}
		}
		if !inside {
			out = append(out, key)
		}
	}
	return out
}

// describeKey names a key as a user finds it in the file: relative to the
// plugin's section when it is inside it.
func describeKey(key toml.Key) string {
	if len(key) > 2 && key[0] == "inputs" && key[1] == pluginName {
		return fmt.Sprintf("%q in [[inputs.%s]]", strings.Join(key[2:], "."), pluginName)
	}
	return fmt.Sprintf("%q outside [[inputs.%s]]", key.String(), pluginName)
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

func sortedKeys(m map[string][]toml.Primitive) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// lines finds where keys and tables are in the file; without a syntax
// tree (a file Telegraf's parser does not read) no line is named.
type lines struct {
	root *ast.Table
}

func lineIndex(data string) lines {
	root, err := influxtoml.Parse([]byte(data))
	if err != nil {
		return lines{}
	}
	return lines{root: root}
}

// at is " (line N)" for the key at path, the index-th of an array of
// tables when the path ends in one, or "" when it cannot be found.
func (l lines) at(path []string, index int) string {
	if l.root == nil || len(path) == 0 {
		return ""
	}
	if line := lineOf(l.root, path, index); line > 0 {
		return fmt.Sprintf(" (line %d)", line)
	}
	return ""
}

// lineOf is the line of the key at path below t, or 0. Within an array of
// tables the first table holding the rest of the path counts, except at
// the path's end, where index picks the table.
func lineOf(t *ast.Table, path []string, index int) int {
	field := t.Fields[path[0]]
	last := len(path) == 1
	switch v := field.(type) {
	case *ast.KeyValue:
		if last {
			return v.Line
		}
		if inline, ok := v.Value.(*ast.Table); ok {
			return lineOf(inline, path[1:], index)
		}
	case *ast.Table:
		if last {
			return v.Line
		}
		return lineOf(v, path[1:], index)
	case []*ast.Table:
		if last {
			if index < len(v) {
				return v[index].Line
			}
			return 0
		}
		for _, table := range v {
			if line := lineOf(table, path[1:], index); line > 0 {
				return line
			}
		}
	}
	return 0
}
