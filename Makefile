# caddy-iap: build the Rust library, build Caddy with the module through xcaddy, run, test.
#   make caddy   builds bin/caddy (Rust staticlib + Go module, CGO_ENABLED=1)
#   make run     runs Caddy on Caddyfile.example (embedded demo issuer, no outside service)
#   make test    lint + Rust tests + Go tests + end-to-end tests (real IdP, PostgreSQL, Cosmos DB emulator)
#                + fuzz smoke + leak check
#   make bench   criterion benchmarks of the core and the FFI call, then make bench-peers
#   make bench-peers   caddy-iap vs plain Caddy, caddy-jwt and caddy-security (wrk, vegeta, h2load); writes docs/benchmarks.md
#   make bench-postgres   the PostgreSQL gateway vs direct logins (setup time, pgbench)
#   make bench-cosmos     Cosmos DB point reads: direct to the emulator, plain Caddy, the gateway (wrk)
#   make soak    wrk through bin/caddy during 50 `caddy reload --force`: failed requests, RSS, fds
#   make leakcheck   the C ABI's tests under valgrind (part of make test)

SHELL := /bin/bash
GOBIN := $(shell go env GOPATH)/bin
XCADDY ?= $(GOBIN)/xcaddy
CBINDGEN ?= $(HOME)/.cargo/bin/cbindgen
CADDY_VERSION ?= v2.11.9
# caddy-l4 serves the PostgreSQL front (layer4 app, postgres matcher, postgres_tls and tls).
CADDY_L4_VERSION ?= v0.1.2
GO_MODULE := github.com/caddy-iap/caddy-iap/go-module
# A fixed version for the local replacement, so xcaddy does not ask the module proxy for "latest".
GO_MODULE_VERSION := v0.0.0-00010101000000-000000000000
RUST_LIB := target/release/libcaddy_iap.a
# Go's build cache does not notice a changed static library behind #cgo LDFLAGS; a stamp of
# the library in CGO_CFLAGS makes every cgo build (go test, xcaddy) relink when it changes.
LIB_STAMP = $(shell sha256sum $(RUST_LIB) | cut -c1-16)
CGO_ENV = CGO_ENABLED=1 CGO_CFLAGS="-O2 -g -DIAP_LIB_STAMP=$(LIB_STAMP)"
RUST_SOURCES := $(shell find rust -name '*.rs' -o -name Cargo.toml) Cargo.toml Cargo.lock
GO_SOURCES := $(shell find go-module -name '*.go' -o -name go.mod -o -name go.sum)

.PHONY: all caddy lib header header-check run test lint test-rust test-go test-e2e fuzz leakcheck bench bench-peers bench-miss-profile bench-hit-profile bench-postgres bench-cosmos soak clean

all: caddy

# Build tools, installed on first use from the Go module proxy and crates.io.
$(XCADDY):
	go install github.com/caddyserver/xcaddy/cmd/xcaddy@v0.4.5

$(CBINDGEN):
	cargo install cbindgen --version 0.29.4 --locked

lib: $(RUST_LIB)

$(RUST_LIB): $(RUST_SOURCES)
	cargo build --release --locked -p caddy-iap-ffi

# The C header is generated, committed, and checked for drift by `make lint`.
header: $(CBINDGEN)
	$(CBINDGEN) --quiet --config rust/ffi/cbindgen.toml --crate caddy-iap-ffi rust/ffi -o include/caddy_iap.h

header-check: $(CBINDGEN)
	@tmp=$$(mktemp); $(CBINDGEN) --quiet --config rust/ffi/cbindgen.toml --crate caddy-iap-ffi rust/ffi -o $$tmp; \
	  if ! diff -u include/caddy_iap.h $$tmp; then echo "include/caddy_iap.h is stale: run make header" >&2; rm -f $$tmp; exit 1; fi; rm -f $$tmp

caddy: bin/caddy

bin/caddy: $(XCADDY) $(RUST_LIB) $(GO_SOURCES) include/caddy_iap.h
	@mkdir -p bin
	$(CGO_ENV) $(XCADDY) build $(CADDY_VERSION) --output bin/caddy \
	  --with $(GO_MODULE)@$(GO_MODULE_VERSION)=./go-module \
	  --with github.com/mholt/caddy-l4@$(CADDY_L4_VERSION)
	bin/caddy list-modules | grep -q '^http.handlers.iap$$'
	bin/caddy list-modules | grep -q '^layer4.handlers.iap_postgres$$'
	bin/caddy list-modules | grep -q '^http.handlers.iap_cosmos$$'

run: bin/caddy
	bin/caddy run --config Caddyfile.example --adapter caddyfile

lint: header-check
	cargo fmt --all --check
	cd fuzz && cargo fmt --check
	cargo clippy --locked --all-targets -- -D warnings
	@out=$$(gofmt -l go-module); if [ -n "$$out" ]; then echo "gofmt needed: $$out" >&2; exit 1; fi
	cd go-module && CGO_ENABLED=0 go vet ./...
	cd go-module && $(CGO_ENV) go vet ./...

test-rust:
	cargo test --locked --workspace

test-go: $(RUST_LIB)
	cd go-module && CGO_ENABLED=0 go test ./...
	cd go-module && $(CGO_ENV) go test -race -tags iapdebug ./...

test-e2e: bin/caddy
	bash tests/run-e2e.sh

# Each fuzz target for FUZZ_SECONDS on its checked-in corpus (a crash fails), and the Go
# fuzzers (Caddyfile, PostgreSQL startup) likewise. With a fixed seed (FUZZ_SEED) CI replays the same inputs on every
# run; exploring is for longer runs: FUZZ_SECONDS=3600 FUZZ_SEED= make fuzz.
FUZZ_SECONDS ?= 30
FUZZ_SEED ?= 1
fuzz:
	SEED=$(FUZZ_SEED) bash fuzz/run.sh $(FUZZ_SECONDS)
	cd go-module && CGO_ENABLED=0 go test -run '^$$' -fuzz FuzzCaddyfile -fuzztime $(FUZZ_SECONDS)s -fuzzminimizetime 1s .
	cd go-module && CGO_ENABLED=0 go test -run '^$$' -fuzz FuzzStartup -fuzztime $(FUZZ_SECONDS)s -fuzzminimizetime 1s ./internal/pgfront

# The C ABI's tests under valgrind: a leak or an invalid access fails (tests/leakcheck.sh).
leakcheck:
	bash tests/leakcheck.sh

test: lint test-rust test-go test-e2e fuzz leakcheck

bench:
	cargo bench --locked -p caddy-iap-core --bench core
	cargo bench --locked -p caddy-iap-ffi --bench ffi
	$(MAKE) bench-peers BENCH_ARGS="--criterion-read $(BENCH_ARGS)"

# caddy-iap against plain Caddy, ggicci/caddy-jwt and greenpau/caddy-security on loopback, side by
# side; the peers are built into bin/peers/ with xcaddy (CGO_ENABLED=0). The Go module proxy does
# not serve ggicci/caddy-jwt: CADDY_JWT_SRC=<checkout of its v1.1.1 tag> builds it, without it that
# row says it was not built. BENCH_ARGS=--quick for a short smoke run.
BENCH_ARGS ?=
# Where a cache miss's CPU goes inside the running proxy (perf; docs/profiling.md). Needs a
# binary with symbols: xcaddy strips unless its go build flags are given.
bench-miss-profile: bin/caddy-symbols
	@command -v perf >/dev/null || { echo "perf is missing: apt-get install -y linux-perf" >&2; exit 1; }
	bash tests/run-e2e.sh --collect-only -q >/dev/null  # installs the test venv
	tests/.venv/bin/python tests/bench/miss_profile.py --caddy bin/caddy-symbols $(BENCH_ARGS)

# Where a cache hit's added CPU goes against plain Caddy inside the running proxy (perf).
bench-hit-profile: bin/caddy-symbols
	@command -v perf >/dev/null || { echo "perf is missing: apt-get install -y linux-perf" >&2; exit 1; }
	bash tests/run-e2e.sh --collect-only -q >/dev/null  # installs the test venv
	tests/.venv/bin/python tests/bench/hit_profile.py --caddy bin/caddy-symbols $(BENCH_ARGS)

# bin/caddy with symbols, for profiles (perf, callgrind) that name functions: xcaddy strips
# unless its go build flags are given.
bin/caddy-symbols: $(XCADDY) $(RUST_LIB) $(GO_SOURCES) include/caddy_iap.h
	@mkdir -p bin
	$(CGO_ENV) XCADDY_GO_BUILD_FLAGS=-trimpath $(XCADDY) build $(CADDY_VERSION) --output bin/caddy-symbols \
	  --with $(GO_MODULE)@$(GO_MODULE_VERSION)=./go-module \
	  --with github.com/mholt/caddy-l4@$(CADDY_L4_VERSION)

bench-peers: bin/caddy bin/caddy-symbols $(XCADDY)
	@command -v wrk >/dev/null || { echo "wrk is missing: apt-get install -y wrk" >&2; exit 1; }
	@test -x $(GOBIN)/vegeta || go install github.com/tsenart/vegeta/v12@v12.13.0
	bash tests/run-e2e.sh --collect-only -q >/dev/null  # installs the test venv
	tests/.venv/bin/python tests/bench/peers.py $(BENCH_ARGS)

# Cosmos DB point reads with wrk, side by side: straight to the emulator with the key, through a
# plain Caddy reverse_proxy, through the iap_cosmos gateway (tests/bench/cosmos_bench.py).
bench-cosmos: bin/caddy
	@command -v wrk >/dev/null || { echo "wrk is missing: apt-get install -y wrk" >&2; exit 1; }
	bash tests/run-e2e.sh --collect-only -q >/dev/null  # the test venv, the IdP, the emulator
	cargo bench --locked -p caddy-iap-cosmos --bench cosmos
	tests/.venv/bin/python tests/bench/cosmos_bench.py

# Reloads under load: no failed request, no leaked descriptors or memory (tests/bench/reload_soak.py).
soak: bin/caddy
	@command -v wrk >/dev/null || { echo "wrk is missing: apt-get install -y wrk" >&2; exit 1; }
	bash tests/run-e2e.sh --collect-only -q >/dev/null
	tests/.venv/bin/python tests/bench/reload_soak.py

# The PostgreSQL gateway against direct logins, side by side (connection setup, pgbench -S).
bench-postgres: bin/caddy
	bash tests/run-e2e.sh --collect-only -q >/dev/null  # installs the test venv and the IdP
	tests/.venv/bin/python tests/bench/pg_bench.py

clean:
	cargo clean
	rm -rf bin
