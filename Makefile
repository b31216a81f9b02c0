# paystream — see README.md. Every target works on a fresh machine with Go and
# the PostgreSQL server binaries; nothing else needs to be running.
SHELL := /bin/bash
GO ?= go
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2
BIN := bin
CMDS := worker publisher gatewaysim paystreamctl

.PHONY: all build test test-short lint fmt vet demo dev bench clean

all: build

build: ## build the binaries into ./bin
	@mkdir -p $(BIN)
	$(GO) build -trimpath -o $(BIN)/ $(addprefix ./cmd/,$(CMDS))

test: vet ## vet, then every test with the race detector against real NATS and Postgres
	$(GO) test -race -count=1 -timeout 20m ./...

test-short: ## quick run without -race
	$(GO) test -count=1 -short ./...

vet:
	$(GO) vet ./...

lint: vet ## gofmt, go vet, staticcheck
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) run $(STATICCHECK) ./...

fmt:
	gofmt -w $$(git ls-files '*.go')

clean:
	rm -rf $(BIN) .tmp

# fuzz runs every fuzz target of the module (func FuzzX in a _test.go file)
# for FUZZTIME each, one at a time: go test takes one -fuzz target per run.
# A failing input is saved under the package's testdata/fuzz/ for a commit.
# The default budget is a count of executions, not a duration: with a
# duration, Go's fuzz coordinator (go1.26, golang/go#75804, fixed in go1.27)
# can report a spurious "context deadline exceeded" at the deadline on a busy
# machine, with no failing input. A count has no deadline to race.
FUZZTIME ?= 50000x

.PHONY: fuzz
fuzz: ## run each fuzz target for $(FUZZTIME) executions (make fuzz FUZZTIME=1000000x; a duration such as 1m also works)
	@set -euo pipefail; n=0; \
	for file in $$(grep -rl --include='*_test.go' '^func Fuzz[A-Z0-9_]' . | sort); do \
		pkg=./$$(dirname "$${file#./}"); \
		for target in $$(sed -n 's/^func \(Fuzz[A-Za-z0-9_]*\)(.*/\1/p' "$$file"); do \
			echo "$(GO) test -run='^$$' -fuzz='^$$target\$$' -fuzztime=$(FUZZTIME) $$pkg"; \
			$(GO) test -run='^$$' -fuzz="^$$target\$$" -fuzztime=$(FUZZTIME) "$$pkg"; \
			n=$$((n+1)); \
		done; \
	done; \
	if [ "$$n" -eq 0 ]; then echo "no fuzz targets found"; exit 1; fi; \
	echo "$$n fuzz targets passed"

# The local system as real processes (internal/testenv/localstack): NATS from the
# nats-server version pinned in go.mod, a throwaway Postgres (or
# PAYSTREAM_DATABASE_URL), the gateway simulator and three workers.
.PHONY: nats-server chaos demo-upstream

nats-server: ## build the nats-server pinned in go.mod into ./bin
	@mkdir -p $(BIN)
	$(GO) build -trimpath -o $(BIN)/nats-server github.com/nats-io/nats-server/v2

demo: build nats-server ## the whole system on one machine: 20,000 payments, a summary and a verdict
	$(GO) build -trimpath -o $(BIN)/demo ./cmd/demo
	$(BIN)/demo --bin $(BIN)

dev: build nats-server ## the same system left running until Ctrl-C, with commands to publish and inspect
	$(GO) build -trimpath -o $(BIN)/demo ./cmd/demo
	$(BIN)/demo --dev --bin $(BIN)

demo-upstream: build nats-server ## the outbox from an upstream's side: a relay process and the example order service (examples/orders)
	$(GO) build -trimpath -o $(BIN)/demo ./cmd/demo
	$(BIN)/demo --upstream --bin $(BIN)

# SCENARIOS selects: main, outbox and gateways (the default), the infrastructure
# scenarios by name (bin/chaos --list), infra for all of those, ci for the
# five-scenario subset (docs/reliability.md).
SCENARIOS ?= main,outbox,gateways
chaos: build nats-server ## fault-injection suite: kills, restarts, outages; exits 1 when an invariant fails (SCENARIOS=… selects)
	$(GO) build -trimpath -o $(BIN)/chaos ./cmd/chaos
	$(BIN)/chaos --bin $(BIN) --scenarios $(SCENARIOS)

.PHONY: chaos-infra
chaos-infra: ## every infrastructure fault: Postgres failover, network faults, full JetStream store, Postgres out of connections
	$(MAKE) chaos SCENARIOS=infra

# bench: the hot-path micro-benchmarks, then end-to-end throughput of worker
# processes on real NATS and Postgres with production durability (Postgres
# fsync, synchronous_commit, full_page_writes on; JetStream file store, and
# one line with sync_interval: always), against raw JetStream fetch-and-ack
# and the floor (fetch, one INSERT, one UPDATE, ack) on the same messages,
# with CPU µs, WAL bytes, commits and allocations per payment
# (docs/performance.md). Sized for a developer: BENCH_N payments per line
# (default 20000) on a table of BENCH_PREFILL final rows (default 100000);
# BENCH_GROW=N measures again at N rows; BENCH_FLAGS adds cmd/bench flags
# (-fsync-off, -two, -tracing, -pg-stat-statements, -profile FILE). `make bench-full`
# is the bigger variant. The store lines compare the batched claim+complete
# path without the attempt history, with it (-attempts), and with neither it
# nor the listing index (-v3-writes); they run on pgtest's fast (fsync=off)
# cluster.
BENCH_N ?= 20000
BENCH_PREFILL ?= 100000
BENCH_GROW ?= 0
BENCH_FLAGS ?=
.PHONY: bench bench-full
bench: build nats-server ## end-to-end benchmark, durability on: one table and a last line "bench payments_per_s=… floor_per_s=…"
	$(GO) test -run='^$$' -bench=. -benchmem -count=1 ./payment/
	$(GO) test -run='^$$' -bench=BenchmarkFanOut -benchmem -count=1 ./risk/
	$(GO) test -run='^$$' -bench='BenchmarkClaimComplete/parallel64-batcher' -benchtime=20000x -count=1 ./store/
	$(GO) test -run='^$$' -bench='BenchmarkFairness' -benchtime=1x -count=1 ./consumer/
	$(GO) test -run='^$$' -bench='BenchmarkStore|BenchmarkHandle' -benchmem -benchtime=20000x -count=1 ./consumer/
	$(GO) test -run='^$$' -bench='BenchmarkLane' -benchmem -benchtime=100000x -count=1 ./store/
	$(GO) test -run='^$$' -bench='BenchmarkProcess$$' -benchmem -benchtime=20000x -count=1 ./processing/
	$(GO) test -run='^$$' -bench='BenchmarkJetStreamPublishFromManyGoroutines' -benchmem -benchtime=50000x -count=1 ./natsconn/
	BENCH_N=$(BENCH_N) BENCH_PREFILL=$(BENCH_PREFILL) BENCH_GROW=$(BENCH_GROW) $(GO) run ./cmd/bench -bin $(BIN) $(BENCH_FLAGS)
	$(MAKE) --no-print-directory tracing-bench

bench-full: ## the bigger benchmark: 100,000 payments per line, 1M rows then 10M, fsync=off and two-worker lines
	$(MAKE) bench BENCH_N=100000 BENCH_PREFILL=1000000 BENCH_GROW=10000000 BENCH_FLAGS="-fsync-off -two"

# tracing-bench: the cost of tracing on one delivery through processing
# (BenchmarkProcessTracing: off, on with a sampler that drops, on recording
# every span), fastest of five runs each, and a last line
# "tracing off_ns=… drop_ns=… record_ns=… drop_over_off=… record_over_off=…".
.PHONY: tracing-bench
tracing-bench: ## tracing off vs on (dropping, recording) per delivery; last line "tracing off_ns=…"
	@mkdir -p $(BIN)
	$(GO) test -run='^$$' -bench='BenchmarkProcessTracing' -benchmem -count=5 ./processing/ | tee $(BIN)/tracing-bench.txt
	@awk '/^BenchmarkProcessTracing\// { split($$1, n, "/"); sub(/-[0-9]+$$/, "", n[2]); \
		if (!(n[2] in ns) || $$3 < ns[n[2]]) { ns[n[2]] = $$3; al[n[2]] = $$7 } } \
		END { if (!("off" in ns)) exit 1; \
		printf "tracing off_ns=%d drop_ns=%d record_ns=%d drop_over_off=%.2f record_over_off=%.2f off_allocs=%d drop_allocs=%d record_allocs=%d\n", \
		ns["off"], ns["drop"], ns["record"], ns["drop"]/ns["off"], ns["record"]/ns["off"], al["off"], al["drop"], al["record"] }' $(BIN)/tracing-bench.txt

# --- Docker Compose without a registry (docs/compose.md) ----------------------
# `make images` builds the images docker-compose.yml selects through
# PAYSTREAM_IMAGE, PAYSTREAM_NATS_IMAGE and PAYSTREAM_POSTGRES_IMAGE from the
# Go module proxy and Debian's packages (deploy/images/build.sh); `make
# compose-test` runs the stack with them and audits it through faults
# (internal/testenv/composetest). Both need a Docker engine; `make test`
# does not.
PAYSTREAM_IMAGE ?= paystream:offline
PAYSTREAM_NATS_IMAGE ?= paystream-nats:offline
PAYSTREAM_POSTGRES_IMAGE ?= paystream-postgres:offline
IMAGE_VARS = PAYSTREAM_IMAGE=$(PAYSTREAM_IMAGE) PAYSTREAM_NATS_IMAGE=$(PAYSTREAM_NATS_IMAGE) PAYSTREAM_POSTGRES_IMAGE=$(PAYSTREAM_POSTGRES_IMAGE)
# The first batch of compose-test and the batch published with each fault.
COMPOSE_TEST_PAYMENTS ?= 10000
COMPOSE_TEST_BATCH ?= 1000

.PHONY: images compose-v2 compose-test compose-test-cluster compose-up compose-down

images: ## build the compose images offline: paystream and nats-server FROM scratch, PostgreSQL from debootstrap
	$(IMAGE_VARS) GO=$(GO) deploy/images/build.sh

# images-tracing: the observability profile's OpenTelemetry Collector and
# Jaeger, from the Go module proxy (deploy/images/build-tracing.sh); not part
# of `make images`, so CI's compose-test does not pay for Jaeger's build.
PAYSTREAM_OTELCOL_IMAGE ?= paystream-otelcol:offline
PAYSTREAM_JAEGER_IMAGE ?= paystream-jaeger:offline
.PHONY: images-tracing
images-tracing: ## build the observability profile's collector and Jaeger images offline
	PAYSTREAM_OTELCOL_IMAGE=$(PAYSTREAM_OTELCOL_IMAGE) PAYSTREAM_JAEGER_IMAGE=$(PAYSTREAM_JAEGER_IMAGE) GO=$(GO) deploy/images/build-tracing.sh

compose-v2: ## print the compose command (docker compose, or a compose v2 built from the Go module proxy)
	@GO=$(GO) deploy/images/compose-v2.sh

compose-test: ## run the compose stack with the offline images, publish, inject container faults, audit after each
	@set -euo pipefail; compose="$$(GO=$(GO) deploy/images/compose-v2.sh)"; \
	COMPOSE="$$compose" $(IMAGE_VARS) COMPOSE_TEST_PAYMENTS=$(COMPOSE_TEST_PAYMENTS) COMPOSE_TEST_BATCH=$(COMPOSE_TEST_BATCH) \
		$(GO) test -tags composetest -run '^TestCompose$$' -count=1 -v -timeout 40m ./internal/testenv/composetest/

compose-up: ## the stack from the offline images, left running (make compose-down removes it)
	@set -euo pipefail; compose="$$(GO=$(GO) deploy/images/compose-v2.sh)"; \
	$(IMAGE_VARS) $$compose up --detach --no-build --pull never --wait

compose-down:
	@set -euo pipefail; compose="$$(GO=$(GO) deploy/images/compose-v2.sh)"; \
	$(IMAGE_VARS) $$compose down --volumes

compose-test-cluster: ## the "cluster" profile (3 NATS nodes, R3 streams): partition the stream leader mid-run, audit
	@set -euo pipefail; compose="$$(GO=$(GO) deploy/images/compose-v2.sh)"; \
	COMPOSE="$$compose" $(IMAGE_VARS) \
		$(GO) test -tags composetest -run '^TestComposeCluster$$' -count=1 -v -timeout 30m ./internal/testenv/composetest/

# screenshots: the README's pictures of the operator console, taken by the
# browser test (console/browser_test.go) with headless Chromium
# (apt-get install chromium) against an in-process fleet.
.PHONY: screenshots
screenshots: ## regenerate docs/img/console-overview.png and console-payment.png (needs Chromium)
	$(GO) test -count=1 -run '^TestBrowser$$' -v ./console/ -args -screenshots=$(CURDIR)/docs/img
