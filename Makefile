# Build, run and test the microsoft_defender Telegraf input.

GO        ?= go
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -s -w -X main.version=$(VERSION)
# A slim Telegraf: only the plugins the demo and the end-to-end tests use.
TELEGRAF_TAGS := custom,inputs.execd,outputs.elasticsearch,outputs.file,outputs.influxdb,outputs.kafka,outputs.opensearch,parsers.influx,serializers.influx

.PHONY: all build run test fuzz lint dist bench bench-sections clean opensearch-node kafka-node upstream-check

all: build

build: bin/telegraf-defender bin/defender-sim bin/telegraf

# The Go build cache decides what is stale; these rules always ask it.
.PHONY: bin/telegraf-defender bin/defender-sim bin/telegraf
bin/telegraf-defender:
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $@ ./cmd/telegraf-defender

bin/defender-sim:
	$(GO) build -trimpath -o $@ ./cmd/defender-sim

# Built from its own module (tools/telegraf) so that Telegraf's dependencies
# stay out of the plugin's go.mod.
bin/telegraf:
	cd tools/telegraf && $(GO) build -trimpath -tags '$(TELEGRAF_TAGS)' -o ../../$@ github.com/influxdata/telegraf/cmd/telegraf

# Telegraf with the plugin in its own tree, as the README's "Built into
# Telegraf" describes: the slim one with the plugin instead of execd. Built
# from a copy of Telegraf's module in build/ (see scripts/telegraf-intree.sh).
INTREE_TAGS := $(subst inputs.execd,inputs.microsoft_defender,$(TELEGRAF_TAGS))
.PHONY: telegraf-intree bin/telegraf-intree
telegraf-intree: bin/telegraf-intree
bin/telegraf-intree:
	GO='$(GO)' TAGS='$(INTREE_TAGS)' OUT='$(CURDIR)/$@' scripts/telegraf-intree.sh

# A single-node OpenSearch 2.19 for the end-to-end tests and `make run
# OUTPUT=opensearch`: tools/opensearch-node, built by Maven from Maven
# Central, run by scripts/opensearch-node.sh. Without Java and Maven it is
# not built and those tests skip (outside CI).
OPENSEARCH_NODE     := tools/opensearch-node/target/lib/opensearch-node.jar
OPENSEARCH_NODE_SRC := tools/opensearch-node/pom.xml $(wildcard tools/opensearch-node/src/main/java/*/*/*/*.java)
opensearch-node:
	@if command -v mvn >/dev/null && command -v java >/dev/null; then \
		$(MAKE) -s --no-print-directory $(OPENSEARCH_NODE); \
	else \
		echo "make: no java or mvn: the OpenSearch tests will skip (apt-get install -y openjdk-17-jdk-headless maven)"; \
	fi

# clean first: copy-dependencies leaves the jars of older versions in lib/.
$(OPENSEARCH_NODE): $(OPENSEARCH_NODE_SRC)
	cd tools/opensearch-node && mvn -q -B -Dstyle.color=never clean package

# A single-node KRaft Kafka 4.4 broker for the end-to-end tests of
# outputs.kafka: Kafka's jars from Maven Central (tools/kafka-node), run by
# scripts/kafka-node.sh. Without Java and Maven those tests skip (outside CI).
KAFKA_NODE := tools/kafka-node/target/lib/kafka-node.pom
kafka-node:
	@if command -v mvn >/dev/null && command -v java >/dev/null; then \
		$(MAKE) -s --no-print-directory $(KAFKA_NODE); \
	else \
		echo "make: no java or mvn: the Kafka tests will skip (apt-get install -y openjdk-17-jdk-headless maven)"; \
	fi

# The copy of the pom marks a finished build; clean first as above.
$(KAFKA_NODE): tools/kafka-node/pom.xml
	cd tools/kafka-node && mvn -q -B -Dstyle.color=never clean package && cp pom.xml target/lib/kafka-node.pom

# Telegraf for the benchmark: the slim one plus inputs.http and json_v2.
BENCH_TAGS := $(TELEGRAF_TAGS),inputs.http,parsers.json_v2
.PHONY: bin/telegraf-bench
bin/telegraf-bench:
	cd tools/telegraf && $(GO) build -trimpath -tags '$(BENCH_TAGS)' -o ../../$@ github.com/influxdata/telegraf/cmd/telegraf

# Whole-process benchmark against Telegraf's inputs.http + json_v2 (see
# BENCHMARKS.md); BENCH_SIZES="20000" for a shorter run. Before it, the
# plugin's decoding benchmarks, and what a Graph backlog costs in requests
# and polls under each service behaviour (counted on the scenarios' virtual
# clock, so a test: TestGraphBacklogCosts).
bench: bin/telegraf-defender bin/defender-sim bin/telegraf-bench bin/telegraf-intree
	$(GO) test -run '^$$' -bench . -benchmem $(PLUGIN) $(SCENARIOS)
	$(GO) test -count=1 -v -run '^TestGraphBacklogCosts$$' $(SCENARIOS)
	scripts/bench.sh

# 1, 100 and 1,000 sections in one bin/telegraf-intree, idle and with a
# backlog, and the latency from a detection becoming visible in the
# simulator to its line in Telegraf's output (see BENCHMARKS.md); about 20
# minutes. BENCH_SECTIONS="100" for a shorter run.
bench-sections: bin/defender-sim bin/telegraf-intree
	scripts/bench-sections.sh

# Runs the plugin in a real Telegraf: on the bundled simulator, or on the
# tenant named by DEFENDER_TENANT_ID, DEFENDER_CLIENT_ID, DEFENDER_CLIENT_SECRET.
# TELEGRAF=intree runs it built into Telegraf (bin/telegraf-intree) instead
# of under [[inputs.execd]].
run: build $(if $(filter intree,$(TELEGRAF)),bin/telegraf-intree)
	TELEGRAF='$(TELEGRAF)' scripts/run.sh

PLUGIN       := ./plugins/inputs/microsoft_defender
SCENARIOS    := ./internal/scenario
# package:target
FUZZ_TARGETS := $(PLUGIN):FuzzDecodeDetections $(PLUGIN):FuzzTokenResponse \
                $(PLUGIN):FuzzEscapedSecrets \
                $(PLUGIN):FuzzDecodeGraphPage
FUZZTIME     ?= 2m

# The tests with a JVM (OpenSearch, Kafka) run after the others: a JVM
# starting beside the plugin's fault scenarios (200 ms timeouts under -race)
# makes those miss their deadlines on a two-core machine.
JVM_TESTS := TestOpenSearch|TestElasticsearch|TestKafka

# Every test: unit, simulator scenarios (internal/scenario) and end-to-end
# with the real Telegraf binaries (execd and in-tree; behind the build tag
# e2e, which go test ./... alone leaves out), and each fuzz target for a few
# seconds.
# The scenario package replays hours of polls on a virtual clock: CPU-bound
# and single-threaded but for Interrupt, it runs under -race only where the
# plugin is entered from a second goroutine, which keeps make test well
# inside go test's timeout on a busy two-core machine.
RACE_PACKAGES = $(shell $(GO) list -tags e2e ./... | grep -v /internal/scenario$$)

test: build bin/telegraf-intree opensearch-node kafka-node
	$(GO) test -race -count=1 -tags e2e -skip '$(JVM_TESTS)' $(RACE_PACKAGES)
	$(GO) test -count=1 $(SCENARIOS)
	$(GO) test -race -count=1 -run 'Interrupt' $(SCENARIOS)
	$(GO) test -race -count=1 -tags e2e -run '$(JVM_TESTS)' ./e2e/
	$(MAKE) --no-print-directory fuzz FUZZTIME=10s
	$(MAKE) --no-print-directory upstream-check

# The plugin directory copied into Telegraf's own tree with only its import
# path rewritten, go vet and go test there (scripts/upstream-check.sh).
upstream-check:
	GO='$(GO)' scripts/upstream-check.sh

# Each fuzz target for FUZZTIME (2m unless given).
fuzz:
	for pair in $(FUZZ_TARGETS); do \
		$(GO) test -run '^$$' -fuzz "^$${pair#*:}$$" -fuzztime $(FUZZTIME) "$${pair%%:*}" || exit 1; \
	done

GOLANGCI_LINT_VERSION := v2.11.4
GOLANGCI_LINT := $(shell $(GO) env GOPATH)/bin/golangci-lint

# gofmt, go vet, golangci-lint with Telegraf's configuration, and
# Telegraf's README linter on the plugin's README.
lint: $(GOLANGCI_LINT) bin/readme_linter
	test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); exit 1; }
	$(GO) vet -tags e2e ./...
	$(GOLANGCI_LINT) run ./...
	bin/readme_linter plugins/inputs/microsoft_defender/README.md

# Telegraf's README linter, from the pinned Telegraf module.
.PHONY: bin/readme_linter
bin/readme_linter:
	cd tools/readme_linter && $(GO) build -o ../../$@ github.com/influxdata/telegraf/tools/readme_linter

$(GOLANGCI_LINT):
	$(GO) install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$(GOLANGCI_LINT_VERSION)

# Stripped release binaries of telegraf-defender, with their checksums.
DIST_PLATFORMS := linux/amd64 linux/arm64 windows/amd64 windows/arm64 darwin/amd64 darwin/arm64
dist:
	rm -rf dist && mkdir -p dist
	for platform in $(DIST_PLATFORMS); do \
		os=$${platform%/*}; arch=$${platform#*/}; ext=; [ $$os = windows ] && ext=.exe; \
		CGO_ENABLED=0 GOOS=$$os GOARCH=$$arch $(GO) build -trimpath -ldflags '$(LDFLAGS)' \
			-o dist/telegraf-defender-$(VERSION)-$$os-$$arch$$ext ./cmd/telegraf-defender || exit 1; \
	done
	cd dist && sha256sum telegraf-defender-* > SHA256SUMS

# The Windows build alone, as CI checks it.
dist-windows:
	CGO_ENABLED=0 GOOS=windows GOARCH=amd64 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o dist/telegraf-defender-windows-amd64.exe ./cmd/telegraf-defender

clean:
	rm -rf bin dist build tools/opensearch-node/target tools/kafka-node/target
