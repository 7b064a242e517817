#!/usr/bin/env bash
# Figures of the test node (tools/opensearch-node): the size of its jars,
# and for RUNS starts (3) the time until it answers HTTP and its resident
# memory and CPU time then, and its memory after indexing 5000 documents through defender-ecs.
# Run after `make opensearch-node`.
set -euo pipefail
cd "$(dirname "$0")/.."
lib=tools/opensearch-node/target/lib
echo "jars: $(find "$lib" -name '*.jar' | wc -l) files, $(du -sh "$lib" | cut -f1) ($(du -sh "$lib/opensearch-2"*.jar | cut -f1) the server jar)"
work=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT
doc='{"@timestamp":"2026-01-01T00:00:00Z","measurement_name":"defender_alert","tag":{"severity":"high","category":"Execution"},"defender_alert":{"alert_id":"da1","alert_title":"t","sha1":"aa","command_line":"cmd.exe"}}'
for _ in $(seq 1000); do printf '{"index":{}}\n%s\n' "$doc"; done > "$work/bulk.ndjson"
for run in $(seq "${RUNS:-3}"); do
  rm -rf "$work/node" "$work/addr"
  start=$(date +%s%N)
  scripts/opensearch-node.sh "$work/node" "$work/addr" > "$work/log" 2>&1 &
  pid=$!
  until [ -s "$work/addr" ]; do kill -0 "$pid" || { cat "$work/log"; exit 1; }; sleep 0.05; done
  up=$(( ($(date +%s%N) - start) / 1000000 ))
  url=$(cat "$work/addr")
  rss=$(awk '/VmRSS/ {print int($2 / 1024)}' "/proc/$pid/status")
  # CPU time says more than wall time on a shared machine.
  cpu=$(awk -v hz="$(getconf CLK_TCK)" '{printf "%.1f", ($14 + $15) / hz}' "/proc/$pid/stat")
  curl -sf -o /dev/null -XPUT "$url/_index_template/defender" -H 'Content-Type: application/json' --data-binary @dashboards/defender-index-template.json
  curl -sf -o /dev/null -XPUT "$url/_ingest/pipeline/defender-ecs" -H 'Content-Type: application/json' --data-binary @dashboards/defender-ecs-pipeline.json
  t0=$(date +%s%N)
  for _ in 1 2 3 4 5; do
    curl -sf -o /dev/null -XPOST "$url/defender-figures/_bulk?pipeline=defender-ecs" -H 'Content-Type: application/x-ndjson' --data-binary @"$work/bulk.ndjson"
  done
  ingest=$(( ($(date +%s%N) - t0) / 1000000 ))
  rss2=$(awk '/VmRSS/ {print int($2 / 1024)}' "/proc/$pid/status")
  echo "run $run: answers after $up ms ($cpu s of CPU) with $rss MB resident; 5000 documents through defender-ecs in $ingest ms, then $rss2 MB resident"
  kill "$pid"; wait "$pid" || true
done
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
