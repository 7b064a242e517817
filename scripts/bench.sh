#!/usr/bin/env bash
# Measures, as whole processes, the pipeline simulator -> Telegraf -> file for
# (a) [[inputs.execd]] running bin/telegraf-defender, (b) Telegraf's own
# [[inputs.http]] with the json_v2 parser and (c) bin/telegraf-intree, the
# plugin built into Telegraf, on the same payload of N SIEM detections
# (BENCH_SIZES, default "20000 200000"). Prints CPU seconds, wall seconds and
# peak RSS of each process and the ratios, and checks that all outputs hold
# the same number of events. Telegraf gathers once at start;
# the interval is long enough that no second gather adds to the figures, and
# each Telegraf is stopped once its output holds the N events.
# BENCH_PROFILE=DIR writes CPU profiles per size into DIR: plugin-N.pprof of
# (a)'s plugin process and intree-N.pprof of (c) as a whole, taken through
# Telegraf's --pprof-addr for BENCH_PROFILE_SECONDS (default N / 4000 + 2),
# which must outlast (c)'s run; its CPU figure then includes the profiler's.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
sizes="${BENCH_SIZES:-20000 200000}"
# shellcheck source=scripts/lib.sh
. scripts/lib.sh

tck=$(getconf CLK_TCK)
cpu_seconds() { awk -v t="$tck" '{printf "%.2f", ($14 + $15) / t}' "/proc/$1/stat" 2>/dev/null || echo 0; }
peak_rss_mb() { awk '/VmHWM/ {printf "%.0f", $2 / 1024}' "/proc/$1/status" 2>/dev/null || echo 0; }
events() { if [ -f "$1" ]; then grep -c '^defender_alert[ ,]' "$1" || true; else echo 0; fi; }

# agent_section N: the [agent] table of both Telegrafs: one gather at
# start, room for N events.
agent_section() {
  cat <<CONF
[agent]
  interval = "300s"
  round_interval = false
  flush_interval = "1s"
  metric_buffer_limit = $(($1 * 2))
  omit_hostname = true
CONF
}

# run_case NAME N CONF OUT [TELEGRAF [PROFILE]]: starts TELEGRAF
# (bin/telegraf-bench) with CONF, waits until its file output OUT holds N
# events, and prints the measurements of Telegraf and of its child process
# (the plugin, under execd), taken just before they are stopped. With
# PROFILE, a CPU profile of Telegraf is written there (see BENCH_PROFILE).
run_case() {
  local name=$1 n=$2 conf=$3 out=$4 telegraf=${5:-bin/telegraf-bench} profile=${6:-}
  local start end tg child="" tg_cpu tg_rss ch_cpu=0 ch_rss=0 prof="" flags=()
  local addr=127.0.0.1:6061
  [ -n "$profile" ] && flags=(--pprof-addr "$addr")
  start=$(date +%s.%N)
  "$telegraf" --config "$conf" "${flags[@]}" > "$work/$name.log" 2>&1 &
  tg=$!
  pids+=("$tg")
  if [ -n "$profile" ]; then
    # As soon as the server listens: Telegraf starts it before its inputs.
    (until curl -sf -o "$profile" "http://$addr/debug/pprof/profile?seconds=${BENCH_PROFILE_SECONDS:-$((n / 4000 + 2))}"; do
      kill -0 "$tg" 2>/dev/null || exit 1; sleep 0.01; done) &
    prof=$!
  fi
  local deadline=$(( $(date +%s) + ${BENCH_TIMEOUT:-600} ))
  while [ "$(events "$out")" -lt "$n" ]; do
    if ! kill -0 "$tg" 2>/dev/null; then echo "bench: $name: telegraf died:"; tail -20 "$work/$name.log"; exit 1; fi
    # A plugin that cannot start leaves Telegraf waiting for ever.
    if [ "$(date +%s)" -gt "$deadline" ]; then echo "bench: $name: no $n events after ${BENCH_TIMEOUT:-600} s:"; tail -20 "$work/$name.log"; exit 1; fi
    [ -z "$child" ] && child=$(cat /proc/"$tg"/task/*/children 2>/dev/null | tr ' ' '\n' | grep -m1 . || true)
    if [ -n "$child" ]; then ch_cpu=$(cpu_seconds "$child"); ch_rss=$(peak_rss_mb "$child"); fi
    sleep 0.2
  done
  end=$(date +%s.%N)
  tg_cpu=$(cpu_seconds "$tg"); tg_rss=$(peak_rss_mb "$tg")
  if [ -n "$child" ]; then ch_cpu=$(cpu_seconds "$child"); ch_rss=$(peak_rss_mb "$child"); fi
  [ -n "$prof" ] && { wait "$prof" || echo "bench: $name: no profile written" >&2; }
  kill "$tg"; wait "$tg" 2>/dev/null || true
  wall=$(awk -v s="$start" -v e="$end" 'BEGIN {printf "%.2f", e - s}')
  echo "$name $n $(events "$out") $tg_cpu $tg_rss $ch_cpu $ch_rss $wall"
}

for n in $sizes; do
  # Over N detections (about two per generated event) within the last hour;
  # both read the N newest.
  rate=$(( n * 11 / 20 / 60 + 1 ))
  start_sim bench /dev/null -listen 127.0.0.1:0 -rate "$rate" -history 60m -lag-fraction 0
  token=$(curl -s -d grant_type=client_credentials -d client_id=sim-client -d client_secret=sim-secret \
    -d resource=https://graph.windows.net "$sim/sim-tenant/oauth2/token" | sed 's/.*"access_token":"\([^"]*\)".*/\1/')
  until=$(date -u +%Y-%m-%dT%H:%M:%S.0000000Z)
  since=$(date -u -d '-70 minutes' +%Y-%m-%dT%H:%M:%S.0000000Z)
  url="$sim/api/alerts?sinceTimeUtc=$since&untilTimeUtc=$until"
  have=$(curl -s -H "Authorization: Bearer $token" "$url&limit=$n" | grep -o '"FullId"' | wc -l)
  [ "$have" -ge "$n" ] || { echo "bench: the simulator holds $have detections, fewer than $n"; exit 1; }
  url="$url&limit=$n"

  cat > "$work/defender.conf" <<CONF
[[inputs.microsoft_defender]]
  api = "siem"
  endpoint_url = "$sim/api/alerts"
  auth_method = "access_token"
  access_token = "$token"
  initial_lookback = "70m"
  max_window = "2h"
  delay = "0s"
  page_size = $n
  max_alerts_per_gather = $n
  max_body_size = "2GiB"
  timeout = "600s"
CONF
  profile="" intree_profile=""
  if [ -n "${BENCH_PROFILE:-}" ]; then
    mkdir -p "$BENCH_PROFILE"
    profile=", \"-cpuprofile\", \"$(cd "$BENCH_PROFILE" && pwd)/plugin-$n.pprof\""
    intree_profile="$(cd "$BENCH_PROFILE" && pwd)/intree-$n.pprof"
  fi
  cat > "$work/execd.conf" <<CONF
$(agent_section "$n")
[[inputs.execd]]
  command = ["$root/bin/telegraf-defender", "-config", "$work/defender.conf", "-poll_interval_disabled"$profile]
  signal = "STDIN"
  data_format = "influx"
[[outputs.file]]
  files = ["$work/execd.out"]
  data_format = "influx"
CONF
  cat > "$work/http.conf" <<CONF
$(agent_section "$n")
[[inputs.http]]
  urls = ["$url"]
  headers = {"Authorization" = "Bearer $token"}
  timeout = "600s"
  data_format = "json_v2"
  [[inputs.http.json_v2]]
    measurement_name = "defender_alert"
    [[inputs.http.json_v2.object]]
      path = "@this"
      timestamp_key = "AlertTime"
      timestamp_format = "2006-01-02T15:04:05.9999999Z"
      tags = ["Severity", "Category", "MachineGroup", "Source"]
      disable_prepend_keys = true
[[outputs.file]]
  files = ["$work/http.out"]
  data_format = "influx"
CONF
  # (c): the plugin's section as it is, in telegraf.conf.
  cat > "$work/intree.conf" <<CONF
$(agent_section "$n")
$(cat "$work/defender.conf")
[[outputs.file]]
  files = ["$work/intree.out"]
  data_format = "influx"
CONF
  a=$(run_case execd "$n" "$work/execd.conf" "$work/execd.out")
  b=$(run_case http "$n" "$work/http.conf" "$work/http.out")
  c=$(run_case intree "$n" "$work/intree.conf" "$work/intree.out" bin/telegraf-intree "$intree_profile")
  kill "$sim_pid"; wait "$sim_pid" 2>/dev/null || true
  rm -f "$work/execd.out" "$work/http.out" "$work/intree.out"
  echo "$a" | awk -v b="$b" -v c="$c" 'BEGIN {split(b, h, " "); split(c, i, " ")} {
    equal = ($3 == h[3] && $3 == i[3])
    printf "\n%d detections (events written: execd %d, http %d, intree %d%s)\n", $2, $3, h[3], i[3], (equal ? ", equal" : ", DIFFERENT")
    printf "  %-34s %8s %8s %9s\n", "", "CPU s", "wall s", "peak RSS"
    printf "  %-34s %8.2f %8.2f %6d MB\n", "(a) telegraf with inputs.execd", $4, $8, $5
    printf "  %-34s %8.2f %8s %6d MB\n", "    telegraf-defender (the plugin)", $6, "", $7
    printf "  %-34s %8.2f %8s\n", "    whole pipeline", $4 + $6, ""
    printf "  %-34s %8.2f %8.2f %6d MB\n", "(b) telegraf with inputs.http+json_v2", h[4], h[8], h[5]
    printf "  %-34s %8.2f %8.2f %6d MB\n", "(c) telegraf-intree (plugin built in)", i[4], i[8], i[5]
    printf "  CPU ratio (b)/(a): %.1fx, (b)/(c): %.1fx; plugin CPU per detection: %.1f µs (a), %.1f µs (c, whole Telegraf)\n",
      h[4] / ($4 + $6), h[4] / i[4], $6 / $2 * 1e6, i[4] / $2 * 1e6
    if (!equal) exit 1
  }'
done
