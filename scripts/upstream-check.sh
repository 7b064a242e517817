#!/usr/bin/env bash
# The check a Telegraf maintainer would make before taking the plugin:
# plugins/inputs/microsoft_defender copied into Telegraf's own tree (the
# release tools/telegraf pins), only its own import path rewritten, then
# go vet and go test there. It fails when the directory depends on anything
# of this module outside it. The copy lives in build/ (never committed) and
# is refreshed from the module cache when the pinned release changes.
# TESTFLAGS are passed to go test (for example -race or -run).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
go=${GO:-go}
plugin=plugins/inputs/microsoft_defender

src=$(cd tools/telegraf && "$go" list -m -f '{{.Dir}}' github.com/influxdata/telegraf)
version=$(cd tools/telegraf && "$go" list -m -f '{{.Version}}' github.com/influxdata/telegraf)
module=$("$go" list -m)
dir="$root/build/upstream-telegraf-$version"

if [ "$(cat "$dir/.copied-from" 2>/dev/null)" != "$src" ]; then
  rm -rf "$root"/build/upstream-telegraf-*
  mkdir -p "$root/build"
  cp -R "$src" "$dir"
  chmod -R u+w "$dir"
  echo "$src" > "$dir/.copied-from"
  # Restored before every check, so that a dependency the plugin added to a
  # previous copy does not hide a missing one.
  cp "$dir/go.mod" "$dir/go.mod.release"
  cp "$dir/go.sum" "$dir/go.sum.release"
fi
cp "$dir/go.mod.release" "$dir/go.mod"
cp "$dir/go.sum.release" "$dir/go.sum"

rm -rf "${dir:?}/$plugin"
cp -R "$plugin" "$dir/$plugin"
find "$dir/$plugin" -name '*.test' -delete
find "$dir/$plugin" -name '*.go' -exec sed -i "s#$module/$plugin#github.com/influxdata/telegraf/$plugin#g" {} +
cat > "$dir/plugins/inputs/all/microsoft_defender.go" <<'GO'
//go:build !custom || inputs.microsoft_defender

package all

import _ "github.com/influxdata/telegraf/plugins/inputs/microsoft_defender" // register plugin
GO

if leftover=$(grep -rln "$module" "$dir/$plugin"); then
  echo "upstream-check: still refers to $module after the rewrite:" >&2
  echo "$leftover" >&2
  exit 1
fi

cd "$dir"
# A dependency Telegraf lacks is added to the copy's go.mod (as a pull
# request would), with the checksums this checkout has; it is listed.
sort -u -o go.sum go.sum "$root/go.sum"
"$go" mod edit -json go.mod.release > /dev/null
"$go" vet -mod=mod -tags "custom,inputs.microsoft_defender" "./$plugin/..." ./plugins/inputs/all
if ! diff -q go.mod.release go.mod > /dev/null; then
  echo "upstream-check: the plugin adds or raises these requirements of Telegraf $version:"
  diff go.mod.release go.mod | grep '^>' || true
fi
# shellcheck disable=SC2086 # TESTFLAGS is a list of flags
"$go" test -mod=mod -count=1 ${TESTFLAGS:-} "./$plugin/..."
echo "upstream-check: $plugin vets and tests inside Telegraf $version's tree"
