#!/usr/bin/env bash
# Measures bin/telegraf-intree (Telegraf with the plugin built in) polling
# bin/defender-sim over https with N sections of the plugin at the default
# settings (BENCH_SECTIONS, default "1 100 1000"): Graph, client_secret,
# a state_file each, Telegraf's default interval (10 s) and flush_interval,
# each section keeping the alerts of one of the simulator's five machine
# groups, so that each is a stream of its own. For each N it prints:
#   idle     nothing to read (an empty page each poll): Telegraf's CPU per
#            poll and as a share of one core, and its memory, over
#            BENCH_IDLE_SECONDS (default 120) after 30 s of warm-up;
#   backlog  one poll of each section (interval 1 h), reading the last 10
#            minutes of a simulated tenant at BENCH_RATE events a minute
#            (default 60): Telegraf's CPU and peak memory until every
#            section's poll is in the output (at most BENCH_BACKLOG_SECONDS,
#            default 300), and the alerts written.
# Then the latency: one section at the default settings (BENCH_DELAY
# overrides delay), 2 detection events a second, one in five visible up to
# a minute late, flush_interval 1 s, for BENCH_LATENCY_SECONDS (default
# 300): the simulator (-latency-of) measures from each alert version
# becoming visible to its line in the file output (p50, p95, max).
# BENCH_SECTIONS="" skips the sections, BENCH_LATENCY_SECONDS=0 the latency;
# BENCH_TELEGRAF runs another build (e.g. of an older commit).
# CPU is utime + stime of Telegraf's process from /proc; the load average
# is printed beside each figure (the machine may be shared).
set -euo pipefail
cd "$(dirname "$0")/.."
sections="${BENCH_SECTIONS-1 100 1000}"
idle_seconds=${BENCH_IDLE_SECONDS:-120}
backlog_seconds=${BENCH_BACKLOG_SECONDS:-300}
latency_seconds=${BENCH_LATENCY_SECONDS:-300}
# shellcheck source=scripts/lib.sh
. scripts/lib.sh

tck=$(getconf CLK_TCK)
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
rss_mb() { awk -v k="$2" '$1 == k":" {printf "%.0f", $2 / 1024}' "/proc/$1/status"; }
count() { if [ -f "$2" ]; then grep -c "^$1[ ,]" "$2" || true; else echo 0; fi; }
load() { cut -d' ' -f1-3 /proc/loadavg; }
# errors: how many errors Telegraf logged; the first three go to stderr.
errors() {
  grep ' E! ' "$work/telegraf.log" | head -3 >&2 || true
  grep -c ' E! ' "$work/telegraf.log" || true
}

# telegraf_conf N INTERVAL FLUSH [KEYS]: N sections reading the simulator, one file output.
telegraf_conf() {
  local n=$1 interval=$2 flush=$3 keys=${4:-}
  cat <<CONF
[agent]
  interval = "$interval"
  round_interval = false
  flush_interval = "$flush"
  metric_buffer_limit = 2000000
  omit_hostname = true
[[outputs.file]]
  files = ["$work/out"]
  data_format = "influx"
CONF
  local groups=("Servers-EU" "Workstations-UK" "Domain Controllers" "Finance" "Lab")
  for i in $(seq "$n"); do
    cat <<CONF
[[inputs.microsoft_defender]]
  endpoint_url = "$sim/v1.0/security/alerts_v2"
  login_endpoint = "$sim"
  tenant_id = "sim-tenant"
  client_id = "sim-client"
  client_secret = "sim-secret"
  scopes = ["https://graph.microsoft.com/.default"]
  tls_ca = "$work/ca.pem"
  machine_groups = ["${groups[$((i % 5))]}"]
  state_file = "$work/state/$i.state"
  $keys
CONF
  done
}

# start_telegraf CONF: starts bin/telegraf-intree with CONF; sets tg.
start_telegraf() {
  rm -rf "$work/out" "$work/state"
  mkdir -p "$work/state"
  "${BENCH_TELEGRAF:-bin/telegraf-intree}" --config "$1" > "$work/telegraf.log" 2>&1 &
  tg=$!
  pids+=("$tg")
}

stop() {
  kill "$1"
  wait "$1" 2>/dev/null || true
}

for n in $sections; do
  # Idle: nothing to read.
  start_sim bench-sections /dev/null -listen 127.0.0.1:0 -rate 0 -tls-ca-file "$work/ca.pem"
  telegraf_conf "$n" 10s 10s > "$work/telegraf.conf"
  start_telegraf "$work/telegraf.conf"
  sleep 30
  polls0=$(count defender_poll "$work/out") cpu0=$(cpu_ticks "$tg") load0=$(load)
  sleep "$idle_seconds"
  polls1=$(count defender_poll "$work/out") cpu1=$(cpu_ticks "$tg") load1=$(load)
  rss=$(rss_mb "$tg" VmRSS) hwm=$(rss_mb "$tg" VmHWM)
  errors=$(errors)
  stop "$tg"; stop "$sim_pid"
  awk -v n="$n" -v p=$((polls1 - polls0)) -v c=$((cpu1 - cpu0)) -v t="$tck" -v s="$idle_seconds" -v rss="$rss" -v hwm="$hwm" \
    -v e="$errors" -v l0="$load0" -v l1="$load1" 'BEGIN {
    printf "%5d sections, idle:    %6d polls in %d s, CPU %.2f s: %.1f µs per poll, %.2f%% of a core; RSS %d MB (peak %d MB); %d errors; load %s -> %s\n",
      n, p, s, c / t, (p ? c / t / p * 1e6 : 0), c / t / s * 100, rss, hwm, e, l0, l1 }'

  # A backlog: one poll of each section, reading the last 10 minutes at
  # BENCH_RATE events a minute.
  start_sim bench-sections /dev/null -listen 127.0.0.1:0 -rate "${BENCH_RATE:-60}" -history 10m -lag-fraction 0 -tls-ca-file "$work/ca.pem"
  telegraf_conf "$n" 1h 10s > "$work/telegraf.conf"
  load0=$(load)
  start_telegraf "$work/telegraf.conf"
  start=$(date +%s.%N) deadline=$((SECONDS + backlog_seconds))
  while [ "$(count defender_poll "$work/out")" -lt "$n" ] && [ "$SECONDS" -lt "$deadline" ]; do
    sleep 0.2
  done
  wall=$(awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN {printf "%.1f", e - s}')
  cpu=$(cpu_ticks "$tg") hwm=$(rss_mb "$tg" VmHWM) load1=$(load)
  polls=$(count defender_poll "$work/out") alerts=$(count defender_alert "$work/out")
  errors=$(errors)
  stop "$tg"; stop "$sim_pid"
  awk -v n="$n" -v p="$polls" -v a="$alerts" -v c="$cpu" -v t="$tck" -v w="$wall" -v hwm="$hwm" -v e="$errors" -v l0="$load0" -v l1="$load1" 'BEGIN {
    printf "%5d sections, backlog: %d polls, %d alerts written in %s s, CPU %.2f s (%.1f ms per poll); peak RSS %d MB; %d errors; load %s -> %s\n",
      n, p, a, w, c / t, c / t / n * 1e3, hwm, e, l0, l1 }'
done

if [ "$latency_seconds" -gt 0 ]; then
  rm -f "$work/out" # the watch opens the file Telegraf creates
  start_sim bench-sections "$work/sim.log" -listen 127.0.0.1:0 -rate 120 -history 0 -lag-fraction 0.2 -max-lag 1m \
    -tls-ca-file "$work/ca.pem" -latency-of "$work/out"
  keys=""
  [ -n "${BENCH_DELAY:-}" ] && keys="delay = \"$BENCH_DELAY\""
  # One section, every machine group.
  telegraf_conf 1 10s 1s "$keys" | grep -v '^  machine_groups' > "$work/telegraf.conf"
  load0=$(load)
  start_telegraf "$work/telegraf.conf"
  sleep "$latency_seconds"
  stop "$tg"
  sleep 1 # the last lines reach the watch
  stop "$sim_pid"
  echo "latency (interval 10 s, flush_interval 1 s${BENCH_DELAY:+, delay $BENCH_DELAY}, $latency_seconds s): $(grep '^latency:' "$work/sim.log"); load $load0 -> $(load)"
fi
