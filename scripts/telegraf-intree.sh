#!/usr/bin/env bash
# Builds bin/telegraf-intree: the Telegraf release that tools/telegraf pins,
# with plugins/inputs/microsoft_defender in its own tree, as the README's
# "Built into Telegraf" describes. Telegraf's module is copied from the
# module cache into build/ (go build -overlay refuses files inside the
# module cache), the plugin is registered in plugins/inputs/all, and this
# checkout is required and replaced in the copy's go.mod. The copy is kept
# between builds and is never committed (build/ is ignored). TAGS are the
# build tags (custom,inputs.microsoft_defender,...).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
go=${GO:-go}
tags=${TAGS:?TAGS must name the build tags}
out=${OUT:-$root/bin/telegraf-intree}

src=$(cd tools/telegraf && "$go" list -m -f '{{.Dir}}' github.com/influxdata/telegraf)
version=$(cd tools/telegraf && "$go" list -m -f '{{.Version}}' github.com/influxdata/telegraf)
module=$("$go" list -m)
dir="$root/build/telegraf-$version"

# A fresh copy when there is none yet or the pinned release changed.
if [ "$(cat "$dir/.copied-from" 2>/dev/null)" != "$src" ]; then
  rm -rf "$root"/build/telegraf-*
  mkdir -p "$root/build"
  cp -R "$src" "$dir"
  chmod -R u+w "$dir"
  echo "$src" > "$dir/.copied-from"
fi

cat > "$dir/plugins/inputs/all/microsoft_defender.go" <<GO
//go:build !custom || inputs.microsoft_defender

package all

import _ "$module/plugins/inputs/microsoft_defender" // register plugin
GO

cd "$dir"
"$go" mod edit -require="$module@v0.0.0" -replace="$module=$root"
# The plugin's dependencies may be newer than Telegraf's: the build raises
# them in the copy's go.mod, with the checksums this checkout already has.
sort -u -o go.sum go.sum "$root/go.sum"
"$go" build -mod=mod -trimpath -tags "$tags" \
  -ldflags "-X github.com/influxdata/telegraf/internal.Version=${version#v}" \
  -o "$out" ./cmd/telegraf
