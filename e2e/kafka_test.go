//go:build e2e

package e2e

import (
	"errors"
	"fmt"
	"net/http/httptest"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/stretchr/testify/require"

	"github.com/influxdata/telegraf"
	"github.com/influxdata/telegraf/plugins/parsers/influx"
	"github.com/influxdata/telegraf/testutil"

	simulator "github.com/sectelemetry/telegraf-defender/internal/sim"
)

// kafkaNode is a real single-node KRaft Kafka 4.4 broker (tools/kafka-node,
// started by scripts/kafka-node.sh) on loopback, with its data in a
// temporary directory that outlives a restart.
type kafkaNode struct {
	script   string
	home     string
	settings []string // further lines of server.properties
	ports    [2]int   // the broker's and the controller's
	addr     string
	cmd      *exec.Cmd
	done     chan struct{}
	log      *syncBuffer
}

// startKafka starts a broker, or skips the test where Java or the broker's
// build is missing, except under CI=true, where a skip would hide a missing
// install step. The broker is stopped when the test ends.
func startKafka(t *testing.T, settings ...string) *kafkaNode {
	t.Helper()
	k := newKafka(t, settings...)
	k.start(t)
	return k
}

// newKafka is startKafka without the start: the broker's ports are chosen.
func newKafka(t *testing.T, settings ...string) *kafkaNode {
	t.Helper()
	script, err := filepath.Abs(filepath.Join("..", "scripts", "kafka-node.sh"))
	require.NoError(t, err)
	requireJVMNode(t, "Kafka broker", filepath.Join(filepath.Dir(script), "..", "tools", "kafka-node", "target", "lib", "kafka-node.pom"), "kafka-node")
	k := &kafkaNode{script: script, home: filepath.Join(t.TempDir(), "home"), settings: settings, ports: [2]int{freePort(t), freePort(t)}}
	k.addr = fmt.Sprintf("127.0.0.1:%d", k.ports[0])
	t.Cleanup(func() {
		k.stop(t)
		if t.Failed() && k.log != nil {
			t.Logf("the Kafka broker's log:\n%s", k.log.String())
		}
	})
	return k
}

// start starts the broker on its home and ports and waits until it says it
// has started: its listeners are open and it has registered with its
// controller.
func (k *kafkaNode) start(t *testing.T) {
	t.Helper()
	k.done, k.log = make(chan struct{}), &syncBuffer{}
	k.cmd = exec.Command(k.script, append([]string{k.home, strconv.Itoa(k.ports[0]), strconv.Itoa(k.ports[1])}, k.settings...)...)
	k.cmd.Stdout, k.cmd.Stderr = k.log, k.log
	started := time.Now()
	require.NoError(t, k.cmd.Start())
	go func(cmd *exec.Cmd, done chan struct{}) {
		cmd.Wait() //nolint:errcheck // the exit is reported through done and the log
		close(done)
	}(k.cmd, k.done)
	deadline := time.After(time.Minute)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for !strings.Contains(k.log.String(), "] Kafka Server started") {
		select {
		case <-k.done:
			t.Fatalf("the Kafka broker exited before it started: %v; its log:\n%s", k.cmd.ProcessState, k.log.String())
		case <-deadline:
			t.Fatalf("the Kafka broker did not start within a minute; its log:\n%s", k.log.String())
		case <-tick.C:
		}
	}
	t.Logf("Kafka broker at %s up in %s", k.addr, time.Since(started).Round(time.Millisecond))
}

// stop stops the broker with SIGTERM, a controlled shutdown.
func (k *kafkaNode) stop(t *testing.T) {
	t.Helper()
	if k.cmd == nil || k.cmd.Process == nil {
		return
	}
	// A paused broker takes no SIGTERM.
	k.signal(syscall.SIGCONT)
	k.signal(syscall.SIGTERM)
	stopping := time.Now()
	select {
	case <-k.done:
		t.Logf("Kafka broker stopped in %s", time.Since(stopping).Round(time.Millisecond))
	case <-time.After(30 * time.Second):
		k.cmd.Process.Kill() //nolint:errcheck // it did not stop on SIGTERM
		<-k.done
		t.Errorf("the Kafka broker did not stop on SIGTERM")
	}
}

// signal sends sig to the broker, which may have exited.
func (k *kafkaNode) signal(sig syscall.Signal) {
	k.cmd.Process.Signal(sig) //nolint:errcheck // a broker already gone is fine
}

// createTopic creates a topic of the given partitions, as an operator
// would before pointing Telegraf at it.
func (k *kafkaNode) createTopic(t *testing.T, topic string, partitions int32) {
	t.Helper()
	admin, err := sarama.NewClusterAdmin([]string{k.addr}, sarama.NewConfig())
	require.NoError(t, err)
	defer admin.Close()
	require.NoError(t, admin.CreateTopic(topic, &sarama.TopicDetail{NumPartitions: partitions, ReplicationFactor: 1}, false))
}

// kafkaMessage is one message of a topic, its value parsed as the one
// metric in influx line protocol that outputs.kafka writes per message.
type kafkaMessage struct {
	partition int32
	offset    int64
	key       string
	value     string
	metric    telegraf.Metric
}

// kafkaReader reads a topic from its start, each call the messages written
// since the one before, through a new client, so that it works across a
// restart of the broker.
type kafkaReader struct {
	addr, topic string
	next        map[int32]int64
	messages    []kafkaMessage
}

func newKafkaReader(k *kafkaNode, topic string) *kafkaReader {
	return &kafkaReader{addr: k.addr, topic: topic, next: make(map[int32]int64)}
}

// read returns every message up to the partitions' high-water marks at the
// time of the call; none while the topic does not exist yet.
func (r *kafkaReader) read(t *testing.T) []kafkaMessage {
	t.Helper()
	client, err := sarama.NewClient([]string{r.addr}, sarama.NewConfig())
	require.NoError(t, err)
	defer client.Close()
	partitions, err := client.Partitions(r.topic)
	if errors.Is(err, sarama.ErrUnknownTopicOrPartition) {
		return nil
	}
	require.NoError(t, err)
	consumer, err := sarama.NewConsumerFromClient(client)
	require.NoError(t, err)
	defer consumer.Close()
	parser := &influx.Parser{}
	require.NoError(t, parser.Init())
	for _, p := range partitions {
		end, err := client.GetOffset(r.topic, p, sarama.OffsetNewest)
		require.NoError(t, err)
		if r.next[p] >= end {
			continue
		}
		pc, err := consumer.ConsumePartition(r.topic, p, r.next[p])
		require.NoError(t, err)
		timeout := time.After(30 * time.Second)
		for r.next[p] < end {
			select {
			case m := <-pc.Messages():
				metrics, err := parser.Parse(m.Value)
				require.NoError(t, err, "partition %d offset %d: %q", p, m.Offset, m.Value)
				require.Len(t, metrics, 1, "partition %d offset %d: %q", p, m.Offset, m.Value)
				r.messages = append(r.messages, kafkaMessage{partition: p, offset: m.Offset, key: string(m.Key), value: string(m.Value),
					metric: metrics[0]})
				r.next[p] = m.Offset + 1
			case err := <-pc.Errors():
				require.NoError(t, err)
			case <-timeout:
				t.Fatalf("partition %d: no message at offset %d of %d within 30s", p, r.next[p], end)
			}
		}
		require.NoError(t, pc.Close())
	}
	return r.messages
}

var (
	kafkaBrokers   = regexp.MustCompile(`(?m)^  brokers = .*$`)
	kafkaTopicLine = regexp.MustCompile(`(?m)^  topic = .*$`)
)

// kafkaOutput is the [[outputs.kafka]] section the README's "Into Kafka"
// shows (one topic, "defender", each tenant's events under its own key),
// writing to the broker at addr.
func kafkaOutput(t *testing.T, addr string) string {
	t.Helper()
	_, section, found := strings.Cut(string(repoFile(t, "README.md")), "\n## Into Kafka\n")
	require.True(t, found, "the README has no section Into Kafka")
	_, block, found := strings.Cut(section, "```toml\n")
	require.True(t, found, "Into Kafka shows no TOML")
	block, _, _ = strings.Cut(block, "```\n")
	_, output, found := strings.Cut(block, "[[outputs.kafka]]\n")
	require.True(t, found, "Into Kafka shows no [[outputs.kafka]]")
	require.Regexp(t, kafkaBrokers, output)
	return "\n[[outputs.kafka]]\n" + kafkaBrokers.ReplaceAllString(output, fmt.Sprintf("  brokers = [%q]", addr))
}

// kafkaOutputTo is kafkaOutput writing to topic, with further lines.
func kafkaOutputTo(t *testing.T, addr, topic string, lines ...string) string {
	t.Helper()
	output := kafkaOutput(t, addr)
	require.Regexp(t, kafkaTopicLine, output)
	var b strings.Builder
	b.WriteString(kafkaTopicLine.ReplaceAllString(output, fmt.Sprintf("  topic = %q", topic)))
	for _, l := range lines {
		b.WriteString("  " + l + "\n")
	}
	return b.String()
}

// offsets returns the log start offset (the first message kept) of a
// topic's partition 0 and its high-water mark (one past the last written).
func (k *kafkaNode) offsets(t *testing.T, topic string) (start, end int64) {
	t.Helper()
	client, err := sarama.NewClient([]string{k.addr}, sarama.NewConfig())
	require.NoError(t, err)
	defer client.Close()
	start, err = client.GetOffset(topic, 0, sarama.OffsetOldest)
	require.NoError(t, err)
	end, err = client.GetOffset(topic, 0, sarama.OffsetNewest)
	require.NoError(t, err)
	return start, end
}

// tenantSection is a plugin section whose events carry a tenant tag.
func tenantSection(section, tenant string) string {
	return section + "  [inputs.microsoft_defender.tags]\n" + fmt.Sprintf("    tenant = %q\n", tenant)
}

// settledAfter reports whether each tenant's section wrote a poll without
// backlog after since to the agent's file output.
func settledAfter(t *testing.T, a *agent, since time.Time, tenants int) bool {
	t.Helper()
	settled := make(map[string]bool)
	for _, m := range byName(a.metrics(t), "defender_poll") {
		if backlog, ok := m.GetField("backlog"); ok && !backlog.(bool) && m.Time().After(since) {
			settled[m.Tags()["tenant"]] = true
		}
	}
	return len(settled) == tenants
}

// alertIdentity names a defender_alert metric as the tests name what the
// simulator serves: a SIEM detection by its full_id, a Graph alert's
// version by graphVersion.
func alertIdentity(m telegraf.Metric) string {
	if id, ok := m.GetField("full_id"); ok {
		return id.(string)
	}
	id, _ := m.GetField("alert_id")
	updated, _ := m.GetField("last_update_date_time")
	return graphVersion(fmt.Sprint(id), fmt.Sprint(updated))
}

// Built into Telegraf, two tenants (one reading SIEM, one Graph) into one
// Kafka topic of three partitions through [[outputs.kafka]] with
// routing_tag = "tenant", as the README's "Many tenants" says: every
// detection and Graph version the simulator served, once, as a
// defender_alert message keyed by its tenant, each tenant in one partition,
// and the topic holds exactly what Telegraf's file output wrote.
func TestKafkaOutputKeepsEveryDetectionPerTenant(t *testing.T) {
	t.Parallel()
	node := startKafka(t)
	node.createTopic(t, "defender", 3)
	sim, clock, url := newStillSimulator(t, 67, 12)
	a := startInTree(t, t.TempDir(), "telegraf", `
[agent]
  interval = "2s"
  flush_interval = "1s"
`+tenantSection(siemSection(url, "e2e-secret", `delay = "0s"`), "contoso")+
		tenantSection(graphSection(url, `delay = "0s"`, "page_size = 1000"), "fabrikam")+kafkaOutput(t, node.addr))

	waitFor(t, a, "both tenants to read the simulator's hour", func() bool { return settledAfter(t, a, time.Time{}, 2) })
	// The simulator's time jumps to now: new detections and later versions
	// of Graph alerts arrive late, and are read by the next polls.
	graphVersions := currentGraph(sim)
	moved := time.Now()
	clock.Set(moved)
	for version, alert := range currentGraph(sim) {
		graphVersions[version] = alert
	}
	waitFor(t, a, "both tenants to read what appeared", func() bool { return settledAfter(t, a, moved, 2) })
	a.stop(t)

	messages := newKafkaReader(node, "defender").read(t)
	written := a.metrics(t)
	got := make([]telegraf.Metric, 0, len(messages))
	partitions := make(map[string]map[int32]bool)
	alerts := map[string]map[string]int{"contoso": {}, "fabrikam": {}}
	for _, m := range messages {
		tenant := m.metric.Tags()["tenant"]
		require.Equal(t, tenant, m.key, "the key of partition %d offset %d: %s", m.partition, m.offset, m.value)
		if partitions[m.key] == nil {
			partitions[m.key] = make(map[int32]bool)
		}
		partitions[m.key][m.partition] = true
		if m.metric.Name() == "defender_alert" {
			alerts[tenant][alertIdentity(m.metric)]++
		}
		got = append(got, m.metric)
	}
	testutil.RequireMetricsEqual(t, written, got, testutil.SortMetrics())
	for tenant, in := range partitions {
		require.Len(t, in, 1, "tenant %s spread over partitions %v", tenant, in)
	}

	siem := make(map[string]int)
	for _, d := range sim.All() {
		siem[d.FullID] = 1
	}
	graph := make(map[string]int)
	for version := range graphVersions {
		graph[version] = 1
	}
	require.Equal(t, siem, alerts["contoso"])
	require.Equal(t, graph, alerts["fabrikam"])
	t.Logf("%d messages: %d SIEM detections, %d Graph versions; partitions %v", len(messages), len(siem), len(graph), partitions)
}

// Kafka deletes a segment once its newest message is older than the
// topic's retention.ms, by the messages' timestamps. Detections two hours
// old, into topics of defender_alert alone kept for an hour, from one
// Telegraf through the README's output and through the same output with
// Telegraf's default producer_timestamp = "metric": under the README's
// "now" every detection stays; under the default the broker deletes them
// at its next retention check, which a message stamped two hours back,
// written to a third topic after them, shows has run.
func TestKafkaRetentionCountsFromTheMessageTimestamp(t *testing.T) {
	t.Parallel()
	node := startKafka(t, "log.retention.check.interval.ms=200", "log.initial.task.delay.ms=0")
	for _, topic := range []string{"defender-now", "defender-metric", "control"} {
		hour := "3600000"
		admin, err := sarama.NewClusterAdmin([]string{node.addr}, sarama.NewConfig())
		require.NoError(t, err)
		require.NoError(t, admin.CreateTopic(topic, &sarama.TopicDetail{NumPartitions: 1, ReplicationFactor: 1,
			ConfigEntries: map[string]*string{"retention.ms": &hour}}, false))
		require.NoError(t, admin.Close())
	}
	sim := simulator.New(simulator.Config{TenantID: "e2e-tenant", ClientID: "e2e-client", ClientSecret: "e2e-secret"})
	old := time.Now().UTC().Add(-2 * time.Hour).Truncate(time.Millisecond)
	for i := range 5 {
		require.NoError(t, sim.Add(simDetection(fmt.Sprintf("da-old%d:1", i), "High", "Malware", "Finance", old.Add(time.Duration(i)*time.Second))))
	}
	server := httptest.NewServer(sim.Handler())
	t.Cleanup(server.Close)
	defaultOutput := kafkaOutputTo(t, node.addr, "defender-metric", `namepass = ["defender_alert"]`)
	require.Contains(t, defaultOutput, "  producer_timestamp = \"now\"\n")
	defaultOutput = strings.Replace(defaultOutput, "  producer_timestamp = \"now\"\n", "", 1)
	a := startInTree(t, t.TempDir(), "telegraf", "[agent]\n  interval = \"1s\"\n  flush_interval = \"1s\"\n"+
		tenantSection(siemSection(server.URL, "e2e-secret", `delay = "0s"`, `initial_lookback = "3h"`), "contoso")+
		kafkaOutputTo(t, node.addr, "defender-now", `namepass = ["defender_alert"]`)+defaultOutput)
	written := func(topic string) bool { _, end := node.offsets(t, topic); return end == 5 }
	waitFor(t, a, "five detections written to both topics", func() bool { return written("defender-now") && written("defender-metric") })

	config := sarama.NewConfig()
	config.Producer.Return.Successes = true
	producer, err := sarama.NewSyncProducer([]string{node.addr}, config)
	require.NoError(t, err)
	_, _, err = producer.SendMessage(&sarama.ProducerMessage{Topic: "control", Value: sarama.StringEncoder("old"), Timestamp: old})
	require.NoError(t, err)
	require.NoError(t, producer.Close())
	waitFor(t, a, "the broker's retention check to delete the control message", func() bool {
		start, _ := node.offsets(t, "control")
		return start == 1
	})
	a.stop(t)

	start, end := node.offsets(t, "defender-metric")
	require.Equal(t, [2]int64{5, 5}, [2]int64{start, end}, "producer_timestamp = \"metric\": the log start and end offsets")
	start, end = node.offsets(t, "defender-now")
	require.Equal(t, [2]int64{0, 5}, [2]int64{start, end}, "producer_timestamp = \"now\": the log start and end offsets")
	kept := make(map[string]int)
	for _, m := range newKafkaReader(node, "defender-now").read(t) {
		require.Equal(t, "defender_alert", m.metric.Name())
		kept[alertIdentity(m.metric)]++
	}
	require.Equal(t, map[string]int{"da-old0:1": 1, "da-old1:1": 1, "da-old2:1": 1, "da-old3:1": 1, "da-old4:1": 1}, kept)
}

// kafkaRun is a Telegraf writing to a broker's topic "defender" what the
// simulator holds.
type kafkaRun struct {
	node  *kafkaNode
	agent *agent
	want  map[string]bool // the simulator's detections
	topic *kafkaTopic
}

// kafkaBacklog starts bin/telegraf-intree with smallBuffer reading a SIEM
// backlog larger than the buffer into a new broker's topic "defender",
// with further keys in the plugin's section. With down, the broker is not
// started, and the output connects once it is (startup_error_behavior =
// "retry").
func kafkaBacklog(t *testing.T, seed uint64, down bool, keys ...string) kafkaRun {
	t.Helper()
	node := newKafka(t)
	output := kafkaOutput(t, node.addr)
	if down {
		output += "  startup_error_behavior = \"retry\"\n"
	} else {
		node.start(t)
		node.createTopic(t, "defender", 1)
	}
	sim, _, url := newStillSimulator(t, seed, 30)
	keys = append([]string{`delay = "0s"`, `initial_lookback = "2h"`, "max_requests_per_minute = 600"}, keys...)
	a := startInTree(t, t.TempDir(), "telegraf", smallBuffer+tenantSection(siemSection(url, "e2e-secret", keys...), "contoso")+output)
	want := make(map[string]bool)
	all := sim.All()
	for i := range all {
		want[all[i].FullID] = true
	}
	require.Greater(t, len(want), 3000, "a backlog larger than the buffer")
	return kafkaRun{node: node, agent: a, want: want, topic: &kafkaTopic{reader: newKafkaReader(node, "defender")}}
}

// kafkaTopic is what a consumer of the topic sees.
type kafkaTopic struct{ reader *kafkaReader }

// read returns the detections in the topic by identity, and the sum of the
// counts, each count point once.
func (k *kafkaTopic) read(t *testing.T) (map[string][]kafkaMessage, int64) {
	t.Helper()
	alerts := make(map[string][]kafkaMessage)
	counts := make(map[string]int64)
	for _, m := range k.reader.read(t) {
		switch m.metric.Name() {
		case "defender_alert":
			alerts[alertIdentity(m.metric)] = append(alerts[alertIdentity(m.metric)], m)
		case "defender_alert_count":
			n, _ := m.metric.GetField("count")
			counts[pointKey(m.metric)] = n.(int64)
		}
	}
	var sum int64
	for _, n := range counts {
		sum += n
	}
	return alerts, sum
}

// arrived reports whether every detection is in the topic and the counts
// add up to them: the plugin counts what the outputs confirmed, so the
// counts follow by a flush and a poll.
func (k *kafkaTopic) arrived(t *testing.T, want map[string]bool) bool {
	t.Helper()
	got, counted := k.read(t)
	return len(got) >= len(want) && counted >= int64(len(want))
}

// checkRepeats checks that the topic holds each detection of want, nothing
// else, that a detection in several messages is each time the same point
// (the same line: measurement, tags, fields and timestamp), that no two
// detections are one point to a consumer deduplicating on measurement, tags
// and timestamp, and that the counts, each count point once, add up to the
// detections. It returns the repeated detections.
func checkRepeats(t *testing.T, topic *kafkaTopic, want map[string]bool) []string {
	t.Helper()
	got, counted := topic.read(t)
	points := make(map[string]string) // measurement, tags and timestamp -> identity
	var repeats, differing, foreign []string
	for id, messages := range got {
		if !want[id] {
			foreign = append(foreign, id)
		}
		if len(messages) > 1 {
			repeats = append(repeats, fmt.Sprintf("%s %d times", id, len(messages)))
		}
		for _, m := range messages[1:] {
			if m.value != messages[0].value {
				differing = append(differing, fmt.Sprintf("%s: %q at offset %d, %q at offset %d",
					id, messages[0].value, messages[0].offset, m.value, m.offset))
			}
		}
		point := pointKey(messages[0].metric)
		require.NotContains(t, points, point, "%s and %s are one point to a consumer", points[point], id)
		points[point] = id
	}
	require.Empty(t, foreign, "never served by the simulator")
	require.Empty(t, differing, "a repeat that is not the same point")
	require.Len(t, got, len(want))
	require.Equal(t, int64(len(want)), counted, "the counts, each count point once")
	sort.Strings(repeats)
	return repeats
}

// Built into Telegraf with a buffer smaller than the backlog and
// max_undelivered_alerts well below it, the broker stopped while the backlog
// flows, until Telegraf reports the write failed, and started again on the
// same data: every detection reaches the topic. Kafka keeps every write: a
// batch partly written when the broker stopped and sent again after it
// came back arrives twice, each time the same point, so that a consumer
// deduplicating on measurement, tags and timestamp is left with each
// detection once. Telegraf drops nothing, so only what its buffer held can
// repeat.
func TestKafkaBrokerRestartLosesNothing(t *testing.T) {
	t.Parallel()
	const buffer = 1000 // smallBuffer's metric_buffer_limit
	// At most 1.5 times the limit in flight (a request asks for half of it
	// at most): 600 alerts, and room in the buffer for the polls of a minute
	// of outage.
	run := kafkaBacklog(t, 71, false, "max_undelivered_alerts = 400")
	node, a, want, topic := run.node, run.agent, run.want, run.topic
	waitFor(t, a, "the first detections in Kafka", func() bool { got, _ := topic.read(t); return len(got) >= 500 })
	before, _ := topic.read(t)
	logged := len(a.stderr.String())
	stopped := time.Now()
	node.stop(t)
	// sarama retries each message and the metadata before Telegraf's write
	// fails: 30 to 60 s on this machine.
	waitFor(t, a, "Telegraf to fail writing to the stopped broker", func() bool {
		return strings.Contains(a.stderr.String()[logged:], "E! [agent] Error writing to outputs.kafka")
	})
	down := time.Since(stopped)
	node.start(t)
	waitFor(t, a, "every detection in Kafka, and the counts to add up to them", func() bool { return topic.arrived(t, want) })
	a.stop(t)
	t.Logf("the broker down for %s, every detection in Kafka %s after it stopped", down.Round(time.Millisecond),
		time.Since(stopped).Round(time.Millisecond))

	repeats := checkRepeats(t, topic, want)
	require.NotContains(t, a.stderr.String(), "metrics have been dropped")
	require.LessOrEqual(t, len(repeats), buffer, "repeated: %v", repeats)
	t.Logf("%d detections, %d in Kafka when the broker stopped; %d repeated: %.300v", len(want), len(before), len(repeats), repeats)
}

// Built into Telegraf with max_undelivered_alerts above a buffer smaller
// than the backlog, the broker down at start until more detections than the
// buffer holds were emitted (Telegraf reports its drops only at the next
// write that succeeds): the plugin reads again each group of up to 1,000
// alerts it tracked the dropped ones in, the ones still in the buffer
// included. Every detection reaches the topic; one sent again is each time
// the same point, and only what the plugin read again repeats.
func TestKafkaBufferOverflowLosesNothing(t *testing.T) {
	t.Parallel()
	const buffer = 1000 // smallBuffer's metric_buffer_limit
	run := kafkaBacklog(t, 73, true, "max_undelivered_alerts = 5000")
	node, a, want, topic := run.node, run.agent, run.want, run.topic
	waitFor(t, a, "more detections than Telegraf's buffer holds emitted", func() bool {
		return len(byName(a.metrics(t), "defender_alert")) > buffer
	})
	node.start(t) // the topic is created as Telegraf writes to it
	waitFor(t, a, "every detection in Kafka, and the counts to add up to them", func() bool { return topic.arrived(t, want) })
	a.stop(t)

	repeats := checkRepeats(t, topic, want)
	// Only what the plugin read again can repeat: no write to the broker
	// failed once it was up.
	reread := 0
	for _, m := range readAgain.FindAllStringSubmatch(a.stderr.String(), -1) {
		n, err := strconv.Atoi(m[1])
		require.NoError(t, err)
		reread += n
	}
	require.Contains(t, a.stderr.String(), "W! [outputs.kafka] Metric buffer overflow;")
	require.Positive(t, reread, "Telegraf dropped metrics, and the plugin read nothing again")
	require.LessOrEqual(t, len(repeats), reread)
	t.Logf("%d detections; %d read again, %d repeated: %.300v", len(want), reread, len(repeats), repeats)
}

// readAgain is the plugin's warning that it reads again what an output did
// not take.
var readAgain = regexp.MustCompile(`W! \[inputs\.microsoft_defender\] An output did not take (\d+) alerts? ` +
	`\(rejected, or dropped from Telegraf's full buffer\): reading them again`)

// pointKey is what a consumer deduplicates on: the measurement, the tags
// and the timestamp.
func pointKey(m telegraf.Metric) string {
	return fmt.Sprintf("%s %v %d", m.Name(), m.Tags(), m.Time().UnixNano())
}
