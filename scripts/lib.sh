# Sourced by run.sh and bench.sh: a work directory and background processes
# that go away on exit, and the simulator started in the background.

work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# start_sim WHO LOG ARGS...: starts bin/defender-sim with ARGS, its output
# to the file LOG, and waits for it to listen; sets sim (its base URL) and
# sim_pid. WHO names the script in the error when it does not start.
start_sim() {
  local who=$1 log=$2
  shift 2
  rm -f "$work/sim.addr"
  bin/defender-sim -addr-file "$work/sim.addr" "$@" >"$log" 2>&1 &
  sim_pid=$!
  pids+=("$sim_pid")
  for _ in $(seq 100); do [ -s "$work/sim.addr" ] && break; sleep 0.1; done
  [ -s "$work/sim.addr" ] || { echo "$who: the simulator did not start" >&2; exit 1; }
  sim=$(cat "$work/sim.addr")
}
