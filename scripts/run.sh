#!/usr/bin/env bash
# Runs a real Telegraf whose [[inputs.execd]] runs bin/telegraf-defender and
# prints the metrics to stdout. Without DEFENDER_TENANT_ID it starts the
# bundled simulator and pulls from it; with DEFENDER_TENANT_ID,
# DEFENDER_CLIENT_ID and DEFENDER_CLIENT_SECRET (and DEFENDER_REGION, default
# "us") it pulls from that tenant. INTERVAL sets the poll interval (10s),
# DURATION stops the run after that long (runs until Ctrl-C when unset),
# SIM_ARGS passes flags to the simulator (see bin/defender-sim -h), and
# STATE_DIR is where the plugin keeps its position between runs (.run/).
# DEFENDER_API picks the API: graph (Microsoft Graph alerts_v2, the default),
# graph_incidents (Graph security incidents) or siem. With graph, INCIDENTS=1
# (the default on the simulator; 0 on a tenant, whose app then needs
# SecurityIncident.Read.All) adds a second section reading the incidents.
# DEFENDER_AUTH picks how the plugin signs in: secret (the default),
# certificate, managed-identity or workload-identity; on the simulator each
# runs over TLS with a CA the simulator makes at start (the Azure SDK signs
# in over https only). On a tenant, certificate takes
# DEFENDER_CLIENT_CERTIFICATE (and DEFENDER_CLIENT_CERTIFICATE_PASSWORD),
# managed-identity DEFENDER_MANAGED_IDENTITY_CLIENT_ID for a user-assigned
# identity, and workload-identity the environment AKS projects.
# OUTPUT=influxdb writes to InfluxDB 1.x instead of stdout: to INFLUXDB_URL,
# or to an influxd started here with a temporary data directory, and prints
# what has landed every ten seconds. TELEGRAF=intree runs the plugin built
# into Telegraf (bin/telegraf-intree, `make telegraf-intree`) instead of
# under [[inputs.execd]].
# OUTPUT=opensearch writes to OpenSearch through the repository's index
# template and ECS pipeline: to OPENSEARCH_URL, or to the single-node
# OpenSearch of tools/opensearch-node started here with a temporary data
# directory, and prints what has landed every ten seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

# shellcheck source=scripts/lib.sh
. scripts/lib.sh
state_dir="${STATE_DIR:-$root/.run}"
mkdir -p "$state_dir"
trap 'exit 130' INT TERM

api="${DEFENDER_API:-graph}"
case "$api" in
  siem|graph|graph_incidents) ;;
  *) echo "run: DEFENDER_API must be siem, graph or graph_incidents, not $api" >&2; exit 2 ;;
esac
if [ -n "${DEFENDER_TENANT_ID:-}" ]; then incidents="${INCIDENTS:-0}"; else incidents="${INCIDENTS:-1}"; fi
# Graph's path of what api reads, on the simulator.
graph_path=/v1.0/security/alerts_v2
[ "$api" != graph_incidents ] || graph_path=/v1.0/security/incidents
case "${TELEGRAF:-execd}" in
  execd|intree) ;;
  *) echo "run: TELEGRAF must be execd or intree, not $TELEGRAF" >&2; exit 2 ;;
esac

auth="${DEFENDER_AUTH:-secret}"
case "$auth" in
  secret|certificate|managed-identity|workload-identity) ;;
  *) echo "run: DEFENDER_AUTH must be secret, certificate, managed-identity or workload-identity, not $auth" >&2; exit 2 ;;
esac

if [ -n "${DEFENDER_TENANT_ID:-}" ]; then
  # The shim expands the ${...} references from the environment.
  case "$auth" in
    secret)
      : "${DEFENDER_CLIENT_ID:?DEFENDER_CLIENT_ID must be set with DEFENDER_TENANT_ID}"
      : "${DEFENDER_CLIENT_SECRET:?DEFENDER_CLIENT_SECRET must be set with DEFENDER_TENANT_ID}"
      auth_conf='tenant_id = "${DEFENDER_TENANT_ID}"
  client_id = "${DEFENDER_CLIENT_ID}"
  client_secret = "${DEFENDER_CLIENT_SECRET}"' ;;
    certificate)
      : "${DEFENDER_CLIENT_ID:?DEFENDER_CLIENT_ID must be set with DEFENDER_TENANT_ID}"
      : "${DEFENDER_CLIENT_CERTIFICATE:?DEFENDER_AUTH=certificate needs DEFENDER_CLIENT_CERTIFICATE}"
      export DEFENDER_CLIENT_CERTIFICATE_PASSWORD="${DEFENDER_CLIENT_CERTIFICATE_PASSWORD:-}"
      auth_conf='auth_method = "client_certificate"
  tenant_id = "${DEFENDER_TENANT_ID}"
  client_id = "${DEFENDER_CLIENT_ID}"
  client_certificate = "${DEFENDER_CLIENT_CERTIFICATE}"
  client_certificate_password = "${DEFENDER_CLIENT_CERTIFICATE_PASSWORD}"' ;;
    managed-identity)
      # DEFENDER_TENANT_ID only names the state file: the identity is the host's.
      auth_conf='auth_method = "managed_identity"'
      [ -z "${DEFENDER_MANAGED_IDENTITY_CLIENT_ID:-}" ] ||
        auth_conf+=$'\n  client_id = "${DEFENDER_MANAGED_IDENTITY_CLIENT_ID}"' ;;
    workload-identity)
      auth_conf='auth_method = "workload_identity"' ;;
  esac
  if [ "$api" != siem ]; then
    export DEFENDER_REGION="${DEFENDER_REGION:-global}"
  else
    export DEFENDER_REGION="${DEFENDER_REGION:-us}"
  fi
  echo "run: pulling $api alerts from tenant $DEFENDER_TENANT_ID, region $DEFENDER_REGION, signing in with $auth" >&2
  cat > "$work/defender.conf" <<CONF
[[inputs.microsoft_defender]]
  api = "$api"
  region = "\${DEFENDER_REGION}"
  $auth_conf
  state_file = "$state_dir/$DEFENDER_TENANT_ID-$api.state"
CONF
elif [ "$auth" != secret ]; then
  # The Azure SDK's modes: the simulator over TLS, with a CA (and a client
  # certificate, or a federated token) it makes at start in $work.
  case "$auth" in
    certificate) mode_args=(-client-certificate-file "$work/client.pem")
      auth_conf="auth_method = \"client_certificate\"
  login_endpoint = \"\${SIM_URL}\"
  tenant_id = \"sim-tenant\"
  client_id = \"sim-client\"
  client_certificate = \"$work/client.pem\"" ;;
    managed-identity)
      IDENTITY_HEADER=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
      export IDENTITY_HEADER
      mode_args=(-managed-identity-header "$IDENTITY_HEADER")
      auth_conf='auth_method = "managed_identity"' ;;
    workload-identity) mode_args=(-federated-token-file "$work/federated-token")
      auth_conf='auth_method = "workload_identity"' ;;
  esac
  # shellcheck disable=SC2086 # SIM_ARGS is a list of flags
  start_sim run /dev/stderr -listen "127.0.0.1:${SIM_PORT:-18089}" -rate 6 -tls-ca-file "$work/ca.pem" "${mode_args[@]}" ${SIM_ARGS:-}
  echo "run: no DEFENDER_TENANT_ID set, pulling from the simulator at $sim, signing in with $auth" >&2
  export SIM_URL="$sim"
  # What App Service and AKS put in the environment of the process.
  export IDENTITY_ENDPOINT="$sim/msi/token"
  export AZURE_FEDERATED_TOKEN_FILE="$work/federated-token" AZURE_CLIENT_ID=sim-client AZURE_TENANT_ID=sim-tenant AZURE_AUTHORITY_HOST="$sim/"
  if [ "$api" != siem ]; then
    endpoint="$sim$graph_path"
    auth_conf+=$'\n  scopes = ["https://graph.microsoft.com/.default"]'
  else
    endpoint="$sim/api/alerts"
  fi
  cat > "$work/defender.conf" <<CONF
[[inputs.microsoft_defender]]
  api = "$api"
  endpoint_url = "$endpoint"
  $auth_conf
  tls_ca = "$work/ca.pem"
  state_file = "$state_dir/simulator-$api-$auth.state"
CONF
else
  # A fixed port keeps the simulator's address, and so the state file's
  # stream, the same from run to run; its detections are the same too.
  # shellcheck disable=SC2086 # SIM_ARGS is a list of flags
  start_sim run /dev/stderr -listen "127.0.0.1:${SIM_PORT:-18089}" -rate 6 ${SIM_ARGS:-}
  echo "run: no DEFENDER_TENANT_ID set, pulling from the simulator at $sim" >&2
  export DEFENDER_CLIENT_SECRET=sim-secret
  if [ "$api" != siem ]; then
    endpoint="$sim$graph_path"
    auth_form='scopes = ["https://graph.microsoft.com/.default"]'
  else
    endpoint="$sim/api/alerts"
    auth_form='# scopes = ["https://graph.windows.net/.default"]'
  fi
  cat > "$work/defender.conf" <<CONF
[[inputs.microsoft_defender]]
  api = "$api"
  endpoint_url = "$endpoint"
  login_endpoint = "$sim"
  tenant_id = "sim-tenant"
  $auth_form
  client_id = "sim-client"
  client_secret = "\${DEFENDER_CLIENT_SECRET}"
  state_file = "$state_dir/simulator-$api.state"
CONF
fi

# The incidents of the same tenant: the section of the alerts, another API,
# path and state file.
sections=("$work/defender.conf")
if [ "$api" = graph ] && [ "$incidents" = 1 ]; then
  sed -e 's/^  api = "graph"$/  api = "graph_incidents"/' -e 's|/v1.0/security/alerts_v2|/v1.0/security/incidents|' \
    -e 's|-graph\(-[a-z-]*\)\{0,1\}\.state"$|-graph_incidents\1.state"|' "$work/defender.conf" > "$work/incidents.conf"
  sections+=("$work/incidents.conf")
  echo "run: reading the incidents too (INCIDENTS=0 leaves them out)" >&2
fi

output='[[outputs.file]]
  files = ["stdout"]
  data_format = "influx"'
if [ "${OUTPUT:-stdout}" = influxdb ]; then
  if [ -z "${INFLUXDB_URL:-}" ]; then
    command -v influxd >/dev/null || { echo "run: OUTPUT=influxdb needs influxd (apt-get install -y influxdb) or INFLUXDB_URL" >&2; exit 1; }
    port="${INFLUXDB_PORT:-18086}"
    cat > "$work/influxdb.conf" <<CONF
reporting-disabled = true
bind-address = "127.0.0.1:$((port + 1))"
[meta]
  dir = "$work/influxdb/meta"
[data]
  dir = "$work/influxdb/data"
  wal-dir = "$work/influxdb/wal"
  query-log-enabled = false
[http]
  bind-address = "127.0.0.1:$port"
  log-enabled = false
[monitor]
  store-enabled = false
CONF
    influxd -config "$work/influxdb.conf" > "$work/influxd.log" 2>&1 &
    pids+=($!)
    INFLUXDB_URL="http://127.0.0.1:$port"
    for _ in $(seq 100); do curl -sf "$INFLUXDB_URL/ping" >/dev/null && break; sleep 0.1; done
    echo "run: started influxd at $INFLUXDB_URL (data in $work/influxdb, removed on exit)" >&2
  fi
  output="[[outputs.influxdb]]
  urls = [\"$INFLUXDB_URL\"]
  database = \"defender\""
  (
    while sleep 10; do
      echo "run: detections in InfluxDB by severity ($INFLUXDB_URL, database defender):"
      curl -sG "$INFLUXDB_URL/query" --data-urlencode db=defender \
        --data-urlencode 'q=SELECT count("alert_id") FROM "defender_alert" GROUP BY "severity"' |
        grep -o '"severity":"[a-z]*"},"columns":\["time","count"\],"values":\[\["[^"]*",[0-9]*' |
        sed 's/"severity":"\([a-z]*\)".*,\([0-9]*\)$/  \1: \2/' || true
      [ "${#sections[@]}" = 1 ] && [ "$api" != graph_incidents ] && continue
      echo "run: incident versions in InfluxDB by status:"
      curl -sG "$INFLUXDB_URL/query" --data-urlencode db=defender \
        --data-urlencode 'q=SELECT count("incident_id") FROM "defender_incident" GROUP BY "status"' |
        grep -o '"status":"[A-Za-z]*"},"columns":\["time","count"\],"values":\[\["[^"]*",[0-9]*' |
        sed 's/"status":"\([A-Za-z]*\)".*,\([0-9]*\)$/  \1: \2/' || true
    done
  ) &
  pids+=($!)
fi

case "${TELEGRAF:-execd}" in
  execd)
    telegraf=bin/telegraf
    input=
    for section in "${sections[@]}"; do
      input+=$(cat <<CONF

[[inputs.execd]]
  command = ["$root/bin/telegraf-defender", "-config", "$section", "-poll_interval_disabled"]
  signal = "STDIN"
  restart_delay = "10s"
  data_format = "influx"
CONF
)
    done
    ;;
  intree)
    # The same sections, in telegraf.conf: Telegraf expands the ${...}.
    telegraf=bin/telegraf-intree
    input=$(cat "${sections[@]}")
    ;;
esac

if [ "${OUTPUT:-stdout}" = opensearch ]; then
  if [ -z "${OPENSEARCH_URL:-}" ]; then
    make --no-print-directory opensearch-node >&2
    [ -f tools/opensearch-node/target/lib/opensearch-node.jar ] || { echo "run: OUTPUT=opensearch needs Java 17 and Maven (apt-get install -y openjdk-17-jdk-headless maven) or OPENSEARCH_URL" >&2; exit 1; }
    scripts/opensearch-node.sh "$work/opensearch" "$work/opensearch.addr" > "$work/opensearch.log" 2>&1 &
    pids+=($!)
    for _ in $(seq 1200); do [ -s "$work/opensearch.addr" ] && break; kill -0 "${pids[-1]}" 2>/dev/null || break; sleep 0.1; done
    [ -s "$work/opensearch.addr" ] || { echo "run: OpenSearch did not start; its log:" >&2; cat "$work/opensearch.log" >&2; exit 1; }
    OPENSEARCH_URL=$(cat "$work/opensearch.addr")
    echo "run: started OpenSearch at $OPENSEARCH_URL (data in $work/opensearch, removed on exit)" >&2
  fi
  for item in _index_template/defender:defender-index-template _ingest/pipeline/defender-ecs:defender-ecs-pipeline; do
    curl -sSf -o /dev/null -XPUT "$OPENSEARCH_URL/${item%%:*}" -H 'Content-Type: application/json' \
      --data-binary "@dashboards/${item#*:}.json" || { echo "run: installing dashboards/${item#*:}.json into $OPENSEARCH_URL failed" >&2; exit 1; }
  done
  output="[[outputs.opensearch]]
  urls = [\"$OPENSEARCH_URL\"]
  index_name = 'defender-{{.Time.Format \"2006.01.02\"}}'
  manage_template = false
  template_name = \"defender\"
  ## A batch of 1000 through the pipeline can take longer than the
  ## default 5s on a busy machine.
  timeout = \"30s\"
  force_document_id = true
  use_pipeline = \"defender-ecs\""
  (
    while sleep 10; do
      echo "run: detections in OpenSearch by severity ($OPENSEARCH_URL, defender-*):"
      curl -s -XPOST "$OPENSEARCH_URL/defender-2*/_search?filter_path=aggregations.s.buckets" -H 'Content-Type: application/json' \
        -d '{"size": 0, "query": {"term": {"measurement_name": "defender_alert"}}, "aggs": {"s": {"terms": {"field": "tag.severity"}}}}' |
        grep -o '"key":"[a-z]*","doc_count":[0-9]*' | sed 's/"key":"\([a-z]*\)","doc_count":\([0-9]*\)/  \1: \2/' || true
    done
  ) &
  pids+=($!)
fi

cat > "$work/telegraf.conf" <<CONF
[agent]
  interval = "${INTERVAL:-10s}"
  flush_interval = "1s"
  omit_hostname = true

$input

$output
CONF

"$telegraf" --config "$work/telegraf.conf" &
pids+=($!)
if [ -n "${DURATION:-}" ]; then
  sleep "$DURATION"
else
  wait "${pids[-1]}"
fi
