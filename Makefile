# paystream — see README.md. Every target works on a fresh machine with Go and
# the PostgreSQL server binaries; nothing else needs to be running.
SHELL := /bin/bash
GO ?= go
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2
BIN := bin
CMDS := worker publisher gatewaysim

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
FUZZTIME ?= 5s

.PHONY: fuzz
fuzz: ## run each fuzz target for $(FUZZTIME) (make fuzz FUZZTIME=1m)
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
