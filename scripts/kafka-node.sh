#!/usr/bin/env bash
# Starts the single-node KRaft Kafka broker of tools/kafka-node (built by
# `make kafka-node`) in the foreground: kafka-node.sh HOME PORT CONTROLLER_PORT
# [setting=value ...], each setting a line of its server.properties.
# The broker listens on 127.0.0.1:PORT (PLAINTEXT), its controller on
# 127.0.0.1:CONTROLLER_PORT; HOME holds its data and configuration, formatted
# on the first start and kept across restarts on the same HOME. The java
# process replaces this script, so the caller's PID is the broker's, and
# SIGTERM stops it cleanly. JAVA picks the JVM (java on PATH), KAFKA_HEAP its
# heap (256m), KAFKA_JAVA_OPTS adds JVM options, KAFKA_LOG_LEVEL sets the
# level of its log on stdout (WARN).
set -euo pipefail
lib="$(cd "$(dirname "$0")/.." && pwd)/tools/kafka-node/target/lib"
[ -f "$lib/kafka-node.pom" ] || { echo "kafka-node: $lib/kafka-node.pom is missing: run make kafka-node" >&2; exit 1; }
[ $# -ge 3 ] || { echo "usage: kafka-node.sh HOME PORT CONTROLLER_PORT [setting=value ...]" >&2; exit 2; }
home=$1 port=$2 cport=$3
shift 3
mkdir -p "$home/tmp"
cat >"$home/server.properties" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$cport
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport
advertised.listeners=PLAINTEXT://127.0.0.1:$port
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=$home/data
num.partitions=1
auto.create.topics.enable=true
offsets.topic.replication.factor=1
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
PROPS
[ $# -eq 0 ] || printf '%s\n' "$@" >>"$home/server.properties"
cat >"$home/log4j2.properties" <<PROPS
appender.out.type=Console
appender.out.name=out
appender.out.layout.type=PatternLayout
appender.out.layout.pattern=[%d] %p %m (%c)%n
rootLogger.level=${KAFKA_LOG_LEVEL:-WARN}
rootLogger.appenderRef.out.ref=out
logger.started.name=kafka.server.KafkaRaftServer
logger.started.level=INFO
PROPS
heap="${KAFKA_HEAP:-256m}"
# C1 alone: for a broker that lives a minute, C2's compiling never pays back.
# shellcheck disable=SC2086 # KAFKA_JAVA_OPTS is a list of options
opts=(-Xms"$heap" -Xmx"$heap" -XX:+UseG1GC -XX:TieredStopAtLevel=1 -XX:-OmitStackTraceInFastThrow
  -Djava.io.tmpdir="$home/tmp" -Djava.awt.headless=true -Dlog4j2.configurationFile="$home/log4j2.properties"
  -Dlog4j.shutdownHookEnabled=false -Dlog4j2.disable.jmx=true ${KAFKA_JAVA_OPTS:-} -cp "$lib/*")
# A fixed cluster id: each HOME is a cluster of its own.
[ -f "$home/data/meta.properties" ] || "${JAVA:-java}" "${opts[@]}" kafka.tools.StorageTool format \
  --cluster-id 4L6g3nShT-eMCtK--X86sw --config "$home/server.properties" >&2
exec "${JAVA:-java}" "${opts[@]}" kafka.Kafka "$home/server.properties"
