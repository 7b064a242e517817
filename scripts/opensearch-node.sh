#!/usr/bin/env bash
# Starts the single-node OpenSearch of tools/opensearch-node (built by
# `make opensearch-node`) in the foreground: opensearch-node.sh HOME ADDR_FILE
# [setting=value ...]. HOME holds its data; its HTTP base URL is written to
# ADDR_FILE once it answers. The java process replaces this script, so the
# caller's PID is the node's, and SIGTERM stops it cleanly. JAVA picks the
# JVM (java on PATH), OPENSEARCH_HEAP its heap (512m), OPENSEARCH_JAVA_OPTS
# adds JVM options.
set -euo pipefail
lib="$(cd "$(dirname "$0")/.." && pwd)/tools/opensearch-node/target/lib"
[ -f "$lib/opensearch-node.jar" ] || { echo "opensearch-node: $lib/opensearch-node.jar is missing: run make opensearch-node" >&2; exit 1; }
home=$1
mkdir -p "$home/tmp"
heap="${OPENSEARCH_HEAP:-512m}"
# The JVM options of OpenSearch's distribution (config/jvm.options) that
# matter for one small node on Java 17, and C1 alone: for a node that lives
# a minute, C2's compiling never pays back (it halves the CPU time of a
# start, see scripts/opensearch-node-figures.sh).
# shellcheck disable=SC2086 # OPENSEARCH_JAVA_OPTS is a list of options
exec "${JAVA:-java}" \
  -Xms"$heap" -Xmx"$heap" -Xss1m \
  -XX:+UseG1GC -XX:-OmitStackTraceInFastThrow -XX:TieredStopAtLevel=1 \
  -Djava.io.tmpdir="$home/tmp" \
  -Djava.locale.providers=SPI,COMPAT \
  -Dfile.encoding=UTF-8 -Djna.nosys=true \
  -Dio.netty.noUnsafe=true -Dio.netty.noKeySetOptimization=true \
  -Dio.netty.recycler.maxCapacityPerThread=0 -Dio.netty.allocator.numDirectArenas=0 \
  -Dlog4j.shutdownHookEnabled=false -Dlog4j2.disable.jmx=true \
  ${OPENSEARCH_JAVA_OPTS:-} \
  -cp "$lib/*" com.sectelemetry.opensearchnode.OpenSearchNode "$@"
