#!/usr/bin/env bash
# Compare requests/s and latency of the same chat-completion POST sent
#   (a) straight to a fixed nginx upstream                     direct (upstream)
#   (b) through nginx as a plain keep-alive reverse proxy      nginx proxy
#   (c) through sluice with no policy configured               sluice
#   (d) through sluice with PII masking of requests and answers
#       (every built-in entity; the body holds one email)      sluice+pii
#   (e) through sluice with every policy on                    sluice (all policies)
#       (loadtest/sluice-all-policies.toml: API key and team, model allow-list,
#       rpm/tpm/max_concurrent, a priced budget, PII mask with scan_responses,
#       prompt-injection block and a deny pattern, hash-chained audit log with
#       fsync = "batch", exact cache present but bypassed: the request has no
#       temperature), none of which refuses a request of the load
#   (f) optional: (e) with "temperature": 0 in the body, so that the cache
#       answers (CACHE_HITS=1)                                 sluice (all policies, cache hits)
#   (g) through the LiteLLM proxy and (h) the Portkey gateway, when installed,
#       both with the upstream as an OpenAI-compatible provider  LiteLLM, Portkey
# on the "fair rig" for 2 cores: upstream nginx and the load generator pinned
# to CPU 0, the proxy under test alone on CPU 1 (one worker/process), each
# proxy started, measured and stopped alone. All rows in one table.
# See loadtest/README.md for how to install the peers and read the output;
# bench/side-by-side.sh is the entry point for the full table (PEERS=1).
#
# Usage (from anywhere):
#   cargo build --release && loadtest/compare.sh
#   QUICK=1 loadtest/compare.sh                  # 2 s per measurement
#   SKIP_SLUICE=1 loadtest/compare.sh            # no sluice row at all
#   SKIP_PII=1 loadtest/compare.sh               # without (d)
#   SKIP_POLICIES=1 loadtest/compare.sh          # without (e) and (f)
#   CACHE_HITS=1 loadtest/compare.sh             # with (f)
#   PEERS=1 loadtest/compare.sh                  # (g) and (h) required; 0 = never; auto = when installed
#   RUNS=3 DURATION=10s loadtest/compare.sh      # 3 interleaved rounds, medians
#   LATENCY_AT_HALF=1 loadtest/compare.sh        # + fixed-rate latency (needs oha; not for peers)
#
# Settings (environment):
#   DURATION=8s  CONNECTIONS=32  RUNS=1  QUICK=0 (1 = 2s per measurement)
#   WARMUP=1s (0 = none)  THREADS=1 (wrk threads)  WRK_TIMEOUT=2s (wrk --timeout)
#   SLUICE_BIN=target/release/sluice (relative: to the current dir, else the repo root)
#   SKIP_SLUICE=0  SKIP_PII=0  SKIP_POLICIES=0  CACHE_HITS=0
#   SLUICE_POLICIES_CONFIG=loadtest/sluice-all-policies.toml (the all-policies config; its
#     ports and upstream are rewritten as for the committed one)
#   LATENCY_AT_HALF=0  OHA_BIN=(oha on PATH or ~/.cargo/bin/oha)
#   PEERS=auto (auto | 1 | 0)  PEERS_DIR=<repo>/../peers (where --install-peers of
#     bench/side-by-side.sh puts them)
#   LITELLM_BIN=(litellm on PATH, else $PEERS_DIR/litellm/bin/litellm, else
#     `python3 -m litellm.proxy.proxy_cli` when python3 has litellm[proxy])
#   PORTKEY_DIR=$PEERS_DIR/portkey (holds node_modules/@portkey-ai/gateway)  NODE_BIN=node
#   PEER_CONNECTIONS=$CONNECTIONS  PEER_DURATION=$DURATION  PEER_WARMUP=2s
#   PEER_TIMEOUT=10s (wrk --timeout for the peers)  PEER_READY_TIMEOUT=120 (seconds)
#   UPSTREAM_PORT=18080 PROXY_PORT=18081 SLUICE_PORT=18082 SLUICE_METRICS_PORT=19092
#   LITELLM_PORT=18083 PORTKEY_PORT=18084
#   LOADGEN_CPU=0 PROXY_CPU=1  READY_TIMEOUT=20 (seconds)  RESULTS_DIR=loadtest/results

set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/.." && pwd)"

QUICK=${QUICK:-0}
if [[ $QUICK == 1 ]]; then
    DURATION=2s
else
    DURATION=${DURATION:-8s}
fi
CONNECTIONS=${CONNECTIONS:-32}
RUNS=${RUNS:-1}
THREADS=${THREADS:-1}
WARMUP=${WARMUP:-1s}
WRK_TIMEOUT=${WRK_TIMEOUT:-2s}
SKIP_SLUICE=${SKIP_SLUICE:-0}
SKIP_PII=${SKIP_PII:-0}
SKIP_POLICIES=${SKIP_POLICIES:-0}
CACHE_HITS=${CACHE_HITS:-0}
LATENCY_AT_HALF=${LATENCY_AT_HALF:-0}
SLUICE_BIN=${SLUICE_BIN:-target/release/sluice}
PEERS=${PEERS:-auto}
PEERS_DIR=${PEERS_DIR:-$REPO_ROOT/../peers}
[[ ! -d $PEERS_DIR ]] || PEERS_DIR=$(cd "$PEERS_DIR" && pwd)
LITELLM_BIN=${LITELLM_BIN:-}
PORTKEY_DIR=${PORTKEY_DIR:-$PEERS_DIR/portkey}
NODE_BIN=${NODE_BIN:-node}
PEER_CONNECTIONS=${PEER_CONNECTIONS:-$CONNECTIONS}
PEER_DURATION=${PEER_DURATION:-$DURATION}
PEER_WARMUP=${PEER_WARMUP:-2s}
PEER_TIMEOUT=${PEER_TIMEOUT:-10s}
PEER_READY_TIMEOUT=${PEER_READY_TIMEOUT:-120}
UPSTREAM_PORT=${UPSTREAM_PORT:-18080}
PROXY_PORT=${PROXY_PORT:-18081}
SLUICE_PORT=${SLUICE_PORT:-18082}
SLUICE_METRICS_PORT=${SLUICE_METRICS_PORT:-19092}
LITELLM_PORT=${LITELLM_PORT:-18083}
PORTKEY_PORT=${PORTKEY_PORT:-18084}
LOADGEN_CPU=${LOADGEN_CPU:-0}
PROXY_CPU=${PROXY_CPU:-1}
READY_TIMEOUT=${READY_TIMEOUT:-20}
RESULTS_DIR=${RESULTS_DIR:-$SCRIPT_DIR/results}

# 229 bytes with one email in it (masked by sluice+pii and sluice (all
# policies)); the upstream answers with a 283-byte JSON body. BODY_HIT is the
# same request with "temperature": 0, which the cache may answer (CACHE_HITS=1).
BODY='{"model":"bench-model","messages":[{"role":"user","content":"Tell anna@example.org, briefly, why a gateway placed in front of a language model should add as little latency as possible to each request it forwards upstream, ok?"}]}'
BODY_HIT='{"model":"bench-model","temperature":0,"messages":[{"role":"user","content":"Tell anna@example.org, briefly, why a gateway placed in front of a language model should add as little latency as possible to each request it forwards upstream, ok?"}]}'
AUTH_HEADER='Authorization: Bearer sk-bench'
REQ_PATH=/v1/chat/completions
UPSTREAM_TEXT='Hello from the fixed upstream.'
POLICIES_TOML=${SLUICE_POLICIES_CONFIG:-$SCRIPT_DIR/sluice-all-policies.toml}
LITELLM_YAML=$SCRIPT_DIR/peers/litellm.yaml
LITELLM_LOG_CONFIG=$SCRIPT_DIR/peers/litellm-log.json
PORTKEY_SCRIPT_REL=node_modules/@portkey-ai/gateway/build/start-server.js

log() { printf '[compare] %s\n' "$*" >&2; }
die() {
    printf '[compare] ERROR: %s\n' "$*" >&2
    exit 1
}

# ---------------------------------------------------------------- checks ----
duration_re='^[0-9]+(s|m|h)?$'
for v in DURATION PEER_DURATION WRK_TIMEOUT PEER_TIMEOUT; do
    [[ ${!v} =~ $duration_re ]] || die "$v must look like 8s, 1m or 30 (got '${!v}')"
done
for v in WARMUP PEER_WARMUP; do
    [[ ${!v} == 0 || ${!v} =~ $duration_re ]] || die "$v must look like 1s or 0 (got '${!v}')"
done
for v in CONNECTIONS PEER_CONNECTIONS RUNS THREADS READY_TIMEOUT PEER_READY_TIMEOUT UPSTREAM_PORT PROXY_PORT \
    SLUICE_PORT SLUICE_METRICS_PORT LITELLM_PORT PORTKEY_PORT LOADGEN_CPU PROXY_CPU; do
    [[ ${!v} =~ ^[0-9]+$ ]] || die "$v must be a non-negative integer (got '${!v}')"
done
((CONNECTIONS >= 1 && PEER_CONNECTIONS >= 1 && RUNS >= 1 && THREADS >= 1)) ||
    die "CONNECTIONS, PEER_CONNECTIONS, RUNS and THREADS must be >= 1"
((CONNECTIONS >= THREADS && PEER_CONNECTIONS >= THREADS)) ||
    die "CONNECTIONS ($CONNECTIONS) and PEER_CONNECTIONS ($PEER_CONNECTIONS) must be >= THREADS ($THREADS) for wrk"
[[ $PEERS == auto || $PEERS == 0 || $PEERS == 1 ]] || die "PEERS must be auto, 0 or 1 (got '$PEERS')"

for tool in nginx wrk curl taskset awk sed sort; do
    command -v "$tool" >/dev/null 2>&1 ||
        die "'$tool' not found (apt-get install -y nginx-light wrk curl util-linux)"
done

if [[ $SKIP_SLUICE != 1 ]]; then
    if [[ $SLUICE_BIN != /* ]]; then
        if [[ -e $PWD/$SLUICE_BIN ]]; then
            SLUICE_BIN=$PWD/$SLUICE_BIN
        else
            SLUICE_BIN=$REPO_ROOT/$SLUICE_BIN
        fi
    fi
    if [[ ! -f $SLUICE_BIN || ! -x $SLUICE_BIN ]]; then
        die "sluice binary not found or not executable: $SLUICE_BIN
  build it first (cd $REPO_ROOT && cargo build --release), point SLUICE_BIN at it,
  or run with SKIP_SLUICE=1 to measure only the direct and nginx-proxy targets."
    fi
    if [[ $SKIP_POLICIES != 1 ]]; then
        [[ -r $POLICIES_TOML ]] || die "missing $POLICIES_TOML (or run with SKIP_POLICIES=1)"
    fi
fi

OHA_BIN=${OHA_BIN:-$(command -v oha 2>/dev/null || true)}
if [[ -z $OHA_BIN && -x $HOME/.cargo/bin/oha ]]; then
    OHA_BIN=$HOME/.cargo/bin/oha
fi

# ----------------------------------------------------------- the peers ----
# LiteLLM: a `litellm` command (LITELLM_BIN, PATH, or the venv that
# bench/side-by-side.sh --install-peers makes), or python3 with the module;
# either way its Python must have the proxy extras (fastapi, uvicorn, ...).
LITELLM_CMD=()
LITELLM_PY=""
LITELLM_WHY=""
find_litellm() {
    local bin=$LITELLM_BIN py first
    if [[ -z $bin ]]; then
        bin=$(command -v litellm 2>/dev/null || true)
        [[ -n $bin || ! -x $PEERS_DIR/litellm/bin/litellm ]] || bin=$PEERS_DIR/litellm/bin/litellm
    fi
    if [[ -n $bin ]]; then
        [[ -x $bin ]] || {
            LITELLM_WHY="LITELLM_BIN=$bin is not executable"
            return 1
        }
        # The Python it runs on: its shebang's, unless that is not a Python
        # (a pyenv shim is a shell script), then python3.
        first=$(head -c 256 "$bin" 2>/dev/null | tr -d '\0' | head -n 1 || true)
        py=${first#\#!}
        py=${py#/usr/bin/env }
        py=${py%% *}
        [[ $first == '#!'* && ${py##*/} == python* ]] || py=python3
        LITELLM_CMD=("$bin")
    else
        py=python3
        LITELLM_CMD=(python3 -m litellm.proxy.proxy_cli)
    fi
    command -v "$py" >/dev/null 2>&1 || {
        LITELLM_WHY="no $py for litellm"
        return 1
    }
    if ! "$py" - <<'PY' >/dev/null 2>&1; then
import importlib.util, sys
sys.exit(0 if all(importlib.util.find_spec(m) for m in ("litellm", "fastapi", "uvicorn", "backoff", "orjson")) else 1)
PY
        LITELLM_WHY="$py has no litellm with the proxy extras (pip install 'litellm[proxy]==1.100.5')"
        return 1
    fi
    LITELLM_PY=$py
}
PORTKEY_WHY=""
find_portkey() {
    [[ -f $PORTKEY_DIR/$PORTKEY_SCRIPT_REL ]] || {
        PORTKEY_WHY="no $PORTKEY_DIR/$PORTKEY_SCRIPT_REL (npm install @portkey-ai/gateway@1.15.2 in PORTKEY_DIR)"
        return 1
    }
    command -v "$NODE_BIN" >/dev/null 2>&1 || {
        PORTKEY_WHY="no '$NODE_BIN' (Node.js) to run it"
        return 1
    }
}
HAVE_LITELLM=0 HAVE_PORTKEY=0
PEERS_NOTE=""
if [[ $PEERS != 0 ]]; then
    if find_litellm; then HAVE_LITELLM=1; else PEERS_NOTE+="LiteLLM left out: $LITELLM_WHY. "; fi
    if find_portkey; then HAVE_PORTKEY=1; else PEERS_NOTE+="Portkey left out: $PORTKEY_WHY. "; fi
    if [[ $PEERS == 1 && -n $PEERS_NOTE ]]; then
        die "PEERS=1 but a peer is not installed: ${PEERS_NOTE}
  Install both with: bench/side-by-side.sh --install-peers (into PEERS_DIR=$PEERS_DIR),
  or see loadtest/README.md, 'Peers'; PEERS=auto leaves missing peers out."
    fi
    [[ -z $PEERS_NOTE ]] || log "PEERS=auto: $PEERS_NOTE"
fi

NPROC=$(nproc)
if ((NPROC < 2)); then
    log "WARNING: only $NPROC CPU: the fair rig needs 2; everything runs on CPU 0 and the figures are not comparable with 2-core runs"
    LOADGEN_CPU=0
    PROXY_CPU=0
fi
for cpu in "$LOADGEN_CPU" "$PROXY_CPU"; do
    taskset -c "$cpu" true 2>/dev/null || die "cannot pin to CPU $cpu (taskset -c $cpu failed; check the cpuset)"
done

# ------------------------------------------------------------- targets ----
TARGETS=(direct nginx-proxy)
if [[ $SKIP_SLUICE != 1 ]]; then
    TARGETS+=(sluice)
    [[ $SKIP_PII == 1 ]] || TARGETS+=(sluice-pii)
    if [[ $SKIP_POLICIES != 1 ]]; then
        TARGETS+=(sluice-all)
        [[ $CACHE_HITS != 1 ]] || TARGETS+=(sluice-all-hit)
    fi
fi
[[ $HAVE_PORTKEY != 1 ]] || TARGETS+=(portkey)
[[ $HAVE_LITELLM != 1 ]] || TARGETS+=(litellm)
is_peer() { [[ $1 == litellm || $1 == portkey ]]; }
is_sluice() { [[ $1 == sluice* ]]; }

LITELLM_VER="" PORTKEY_VER="" NODE_VER=""
if [[ $HAVE_LITELLM == 1 ]]; then
    LITELLM_VER=$("$LITELLM_PY" -c 'import importlib.metadata as m; print(m.version("litellm"))' 2>/dev/null || echo "?")
fi
if [[ $HAVE_PORTKEY == 1 ]]; then
    PORTKEY_VER=$(awk -F'"' '$2 == "version" { print $4; exit }' "$PORTKEY_DIR/node_modules/@portkey-ai/gateway/package.json" 2>/dev/null || true)
    NODE_VER=$("$NODE_BIN" --version 2>/dev/null || echo "?")
fi
declare -A LABEL=(
    [direct]="direct (upstream)"
    [nginx-proxy]="nginx proxy"
    [sluice]="sluice"
    [sluice-pii]="sluice+pii"
    [sluice-all]="sluice (all policies)"
    [sluice-all-hit]="sluice (all policies, cache hits)"
    [litellm]="LiteLLM ${LITELLM_VER:-}"
    [portkey]="Portkey gateway ${PORTKEY_VER:-}"
)

# Per target: base URL, readiness URL, request body, extra headers, load.
declare -A T_BASE T_HEALTH T_BODY T_HDRS T_CONNS T_DUR T_WARMUP T_TIMEOUT T_READY
for t in "${TARGETS[@]}"; do
    T_BODY[$t]=$BODY
    T_HDRS[$t]=""
    T_CONNS[$t]=$CONNECTIONS
    T_DUR[$t]=$DURATION
    T_WARMUP[$t]=$WARMUP
    T_TIMEOUT[$t]=$WRK_TIMEOUT
    T_READY[$t]=$READY_TIMEOUT
    if is_peer "$t"; then
        T_CONNS[$t]=$PEER_CONNECTIONS
        T_DUR[$t]=$PEER_DURATION
        T_WARMUP[$t]=$PEER_WARMUP
        T_TIMEOUT[$t]=$PEER_TIMEOUT
        T_READY[$t]=$PEER_READY_TIMEOUT
    fi
    case $t in
    direct) T_BASE[$t]=http://127.0.0.1:$UPSTREAM_PORT T_HEALTH[$t]=http://127.0.0.1:$UPSTREAM_PORT/health ;;
    nginx-proxy) T_BASE[$t]=http://127.0.0.1:$PROXY_PORT T_HEALTH[$t]=http://127.0.0.1:$PROXY_PORT/health ;;
    sluice*) T_BASE[$t]=http://127.0.0.1:$SLUICE_PORT T_HEALTH[$t]=http://127.0.0.1:$SLUICE_PORT/health ;;
    litellm) T_BASE[$t]=http://127.0.0.1:$LITELLM_PORT T_HEALTH[$t]=http://127.0.0.1:$LITELLM_PORT/health/liveliness ;;
    # Portkey routes by headers: the provider, and the upstream as its host.
    portkey)
        T_BASE[$t]=http://127.0.0.1:$PORTKEY_PORT T_HEALTH[$t]=http://127.0.0.1:$PORTKEY_PORT/
        T_HDRS[$t]="x-portkey-provider: openai"$'\n'"x-portkey-custom-host: http://127.0.0.1:$UPSTREAM_PORT/v1"
        ;;
    esac
done
[[ -z ${T_BODY[sluice-all-hit]:-} ]] || T_BODY[sluice-all-hit]=$BODY_HIT

# A port is free when curl cannot connect to it (exit code 7).
port_free() {
    local rc=0
    curl -s -o /dev/null --max-time 1 "http://127.0.0.1:$1/" || rc=$?
    [[ $rc == 7 ]]
}
ports=("$UPSTREAM_PORT" "$PROXY_PORT")
[[ $SKIP_SLUICE == 1 ]] || ports+=("$SLUICE_PORT" "$SLUICE_METRICS_PORT")
[[ $HAVE_LITELLM != 1 ]] || ports+=("$LITELLM_PORT")
[[ $HAVE_PORTKEY != 1 ]] || ports+=("$PORTKEY_PORT")
for p in "${ports[@]}"; do
    port_free "$p" || die "port $p is already in use (stop whatever listens there or set the *_PORT variables)"
done

# --------------------------------------------------- process bookkeeping ----
TMP=$(mktemp -d "${TMPDIR:-/tmp}/sluice-compare.XXXXXX")
# nginx workers run as 'nobody' when started by root: let them traverse it.
chmod 755 "$TMP"
PIDS=()

# Direct children of a pid (nginx workers), from /proc, without procps.
child_pids() {
    awk -v p="$1" '{ sub(/^[0-9]+ \(.*\) /, ""); if ($2 == p) { f = FILENAME; gsub(/[^0-9]/, "", f); print f } }' \
        /proc/[0-9]*/stat 2>/dev/null || true
}

is_running() {
    local state
    [[ -r /proc/$1/stat ]] || return 1
    state=$(sed 's/^[0-9]* (.*) //' "/proc/$1/stat" 2>/dev/null | awk '{print $1}') || return 1
    [[ -n $state && $state != Z ]]
}

stop_pid() {
    local pid=$1 kids i
    kids=$(child_pids "$pid")
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do
        is_running "$pid" || break
        sleep 0.1
    done
    if is_running "$pid"; then
        log "pid $pid did not stop on TERM; sending KILL"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
    for k in $kids; do
        if is_running "$k"; then kill -KILL "$k" 2>/dev/null || true; fi
    done
    local keep=() p
    for p in "${PIDS[@]}"; do [[ $p == "$pid" ]] || keep+=("$p"); done
    PIDS=("${keep[@]}")
}

cleanup() {
    local rc=$? i
    trap - EXIT INT TERM
    for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
        stop_pid "${PIDS[i]}"
    done
    rm -rf "$TMP"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# CPU time (clock ticks) of a process and its direct children.
cpu_ticks() {
    awk -v p="$1" '{
        f = FILENAME; gsub(/[^0-9]/, "", f)
        sub(/^[0-9]+ \(.*\) /, "")
        if (f == p || $2 == p) t += $12 + $13
    } END { print t + 0 }' /proc/[0-9]*/stat 2>/dev/null
}

# "busy total" jiffies of one CPU from /proc/stat.
cpu_jiffies() {
    awk -v c="cpu$1" '$1 == c { busy = $2 + $3 + $4 + $7 + $8 + $9; total = busy + $5 + $6; print busy, total }' /proc/stat
}

# busy_pct "BUSY0 TOTAL0" "BUSY1 TOTAL1" -> percent busy in between
busy_pct() {
    awk -v a="$1" -v b="$2" 'BEGIN { split(a, x, " "); split(b, y, " "); d = y[2] - x[2]; printf "%.0f", (d > 0 ? 100 * (y[1] - x[1]) / d : 0) }'
}

# Seconds in a wrk duration (8s, 1m, 30).
dur_s() { awk -v d="$1" 'BEGIN { m = 1; if (d ~ /m$/) m = 60; if (d ~ /h$/) m = 3600; sub(/[smh]$/, "", d); print d * m }'; }

# ------------------------------------------------------------- services ----
# render_ports FILE: the committed files use the default ports; rewrite them
# (through placeholders, so that any mapping works).
render_ports() {
    sed -e "s/127\.0\.0\.1:18080/127.0.0.1:@UP@/g" -e "s/127\.0\.0\.1:18081/127.0.0.1:@PX@/g" \
        -e "s/127\.0\.0\.1:18082/127.0.0.1:@SL@/g" -e "s/127\.0\.0\.1:19092/127.0.0.1:@SM@/g" "$1" |
        sed -e "s/@UP@/$UPSTREAM_PORT/g" -e "s/@PX@/$PROXY_PORT/g" -e "s/@SL@/$SLUICE_PORT/g" -e "s/@SM@/$SLUICE_METRICS_PORT/g"
}

# track_started LOG: the process just started in the background is the
# one to wait for and stop; LOG is where it writes.
track_started() {
    STARTED_PID=$!
    PIDS+=("$STARTED_PID")
    STARTED_LOG=$1
}

# start_nginx NAME CONF CPU  -> sets STARTED_PID
start_nginx() {
    local name=$1 conf=$2 cpu=$3 prefix=$TMP/$1
    mkdir -p "$prefix/logs"
    render_ports "$conf" >"$prefix/nginx.conf"
    nginx -t -q -c "$prefix/nginx.conf" -p "$prefix/" -e "$prefix/logs/error.log" >"$prefix/logs/test.log" 2>&1 ||
        die "nginx config for $name is invalid: $(cat "$prefix/logs/test.log")"
    taskset -c "$cpu" nginx -c "$prefix/nginx.conf" -p "$prefix/" -e "$prefix/logs/error.log" -g 'daemon off;' \
        >"$prefix/logs/stdout.log" 2>&1 &
    track_started "$prefix/logs/error.log"
}

# start_sluice TARGET: sluice-pii adds the [pii] section; sluice-all and
# sluice-all-hit run loadtest/sluice-all-policies.toml (fresh audit dir).
start_sluice() {
    local target=$1 dir=$TMP/$1
    rm -rf "$dir"
    mkdir -p "$dir"
    if [[ $target == sluice-all* ]]; then
        render_ports "$POLICIES_TOML" >"$dir/sluice.toml"
    else
        cat >"$dir/sluice.toml" <<EOF
[server]
listen = "127.0.0.1:$SLUICE_PORT"
workers = 1
pin_cores = false
io = "auto"
[metrics]
listen = "127.0.0.1:$SLUICE_METRICS_PORT"
[[upstreams]]
name = "bench"
url = "http://127.0.0.1:$UPSTREAM_PORT"
max_connections = 256
[[models]]
name = "bench-model"
targets = [{ upstream = "bench" }]
EOF
    fi
    if [[ $target == sluice-pii ]]; then
        cat >>"$dir/sluice.toml" <<EOF
[pii]
default_policy = "all"
[pii.policies.all]
action = "mask"
entities = ["email", "phone", "iban", "credit_card", "bsn", "ssn", "ipv4", "ipv6", "secret"]
scan_responses = true
EOF
    fi
    taskset -c "$PROXY_CPU" "$SLUICE_BIN" serve --config "$dir/sluice.toml" >"$dir/sluice.log" 2>&1 &
    track_started "$dir/sluice.log"
}

# LiteLLM proxy, one uvicorn process, no master key, no database, no access
# log (loadtest/peers/litellm.yaml and litellm-log.json).
start_litellm() {
    local dir=$TMP/litellm
    mkdir -p "$dir"
    render_ports "$LITELLM_YAML" >"$dir/litellm.yaml"
    (
        cd "$dir"
        LITELLM_LOCAL_MODEL_COST_MAP=True exec taskset -c "$PROXY_CPU" "${LITELLM_CMD[@]}" --config "$dir/litellm.yaml" \
            --host 127.0.0.1 --port "$LITELLM_PORT" --num_workers 1 --log_config "$LITELLM_LOG_CONFIG"
    ) >"$dir/litellm.log" 2>&1 &
    track_started "$dir/litellm.log"
}

# Portkey gateway on Node.js, one process, `--headless` (no log UI).
start_portkey() {
    local dir=$TMP/portkey
    mkdir -p "$dir"
    (
        cd "$dir"
        exec taskset -c "$PROXY_CPU" "$NODE_BIN" "$PORTKEY_DIR/$PORTKEY_SCRIPT_REL" --port="$PORTKEY_PORT" --headless
    ) >"$dir/portkey.log" 2>&1 &
    track_started "$dir/portkey.log"
}

# wait_ready NAME URL PID LOG [TIMEOUT]
wait_ready() {
    local name=$1 url=$2 pid=$3 logf=$4 deadline=$((SECONDS + ${5:-$READY_TIMEOUT})) code
    while :; do
        if ! is_running "$pid"; then
            local rc=0
            wait "$pid" 2>/dev/null || rc=$?
            die "$name exited (status $rc) before it became ready; last lines of $logf:
$(tail -n 20 "$logf" 2>/dev/null || true)$([[ -s $logf ]] || echo '  (log is empty)')"
        fi
        code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "$url" 2>/dev/null) || true
        [[ $code == 200 ]] && return 0
        if ((SECONDS >= deadline)); then
            die "$name not ready after ${5:-$READY_TIMEOUT}s (GET $url -> ${code:-no answer}); last lines of $logf:
$(tail -n 20 "$logf" 2>/dev/null)"
        fi
        sleep 0.2
    done
}

# curl -H arguments for a target's extra headers.
hdr_args() {
    local h
    HDR_ARGS=()
    while IFS= read -r h; do
        [[ -z $h ]] || HDR_ARGS+=(-H "$h")
    done <<<"${T_HDRS[$1]}"
}

# One real request before loading a target: it must answer 200 with the
# upstream's content (so a proxy that answers by itself cannot pass).
sanity_check() {
    local t=$1 code out=$TMP/sanity-$1.json
    hdr_args "$t"
    code=$(curl -s -o "$out" -w '%{http_code}' --max-time 30 -X POST \
        -H 'Content-Type: application/json' -H "$AUTH_HEADER" "${HDR_ARGS[@]}" \
        --data-binary "${T_BODY[$t]}" "${T_BASE[$t]}$REQ_PATH") || true
    [[ $code == 200 ]] ||
        die "${LABEL[$t]}: POST ${T_BASE[$t]}$REQ_PATH answered ${code:-nothing} (expected 200): $(head -c 300 "$out" 2>/dev/null)"
    grep -q "$UPSTREAM_TEXT" "$out" ||
        die "${LABEL[$t]} answered 200 but without the upstream's content ('$UPSTREAM_TEXT'): it did not proxy to the upstream: $(head -c 300 "$out")"
}

metrics_text() { curl -s --max-time 2 "http://127.0.0.1:$SLUICE_METRICS_PORT/metrics" || true; }
# metric_sum TEXT PREFIX -> sum of the values of the samples whose line starts with PREFIX
metric_sum() { awk -v p="$2" 'index($0, p) == 1 { s += $NF } END { printf "%.0f", s }' <<<"$1"; }

# sluice+pii and sluice (all policies) must have found the body's email (the
# upstream cannot tell); all policies: also the cache step, the audit log and
# the cost accounting must have run on the request.
policy_check() {
    local t=$1 m want
    m=$(metrics_text)
    grep -q '^sluice_pii_findings_total{.*entity="email"' <<<"$m" ||
        die "${LABEL[$t]} answered, but sluice_pii_findings_total has no email finding: is the [pii] section applied?"
    [[ $t == sluice-all* ]] || return 0
    want=bypass
    [[ $t != sluice-all-hit ]] || want=hit
    (($(metric_sum "$m" "sluice_cache_requests_total{result=\"$want\"}") >= 1)) ||
        die "${LABEL[$t]}: no cache $want in sluice_cache_requests_total: is [cache] applied?"
    (($(metric_sum "$m" sluice_audit_records_total) >= 1)) ||
        die "${LABEL[$t]}: sluice_audit_records_total is 0: is [audit] applied?"
    grep -q '^sluice_cost_total{team="bench"' <<<"$m" ||
        die "${LABEL[$t]}: no sluice_cost_total for team bench: are the key, team and price applied?"
}

# What the policies did during a measured run of sluice (all policies), from
# its /metrics just before it is stopped (warm-up and sanity requests included).
declare -A POLICY_COUNTS=()
policy_counters() {
    local t=$1 round=$2 m ok all
    m=$(metrics_text)
    ok=$(metric_sum "$m" 'sluice_requests_total{model="bench-model",status="200"}')
    all=$(metric_sum "$m" 'sluice_requests_total{')
    POLICY_COUNTS[$t:$round]="answers 200: $ok, other statuses: $((all - ok))"
    POLICY_COUNTS[$t:$round]+="; email masked: $(metric_sum "$m" 'sluice_pii_findings_total{entity="email"')"
    POLICY_COUNTS[$t:$round]+="; cache hit/miss/bypass: $(metric_sum "$m" 'sluice_cache_requests_total{result="hit"}')"
    POLICY_COUNTS[$t:$round]+="/$(metric_sum "$m" 'sluice_cache_requests_total{result="miss"}')"
    POLICY_COUNTS[$t:$round]+="/$(metric_sum "$m" 'sluice_cache_requests_total{result="bypass"}')"
    POLICY_COUNTS[$t:$round]+="; audit records: $(metric_sum "$m" 'sluice_audit_records_total')"
    POLICY_COUNTS[$t:$round]+=" (lost $(metric_sum "$m" 'sluice_audit_records_lost_total')"
    POLICY_COUNTS[$t:$round]+=", write errors $(metric_sum "$m" 'sluice_audit_write_errors_total'))"
    POLICY_COUNTS[$t:$round]+="; limit/budget refusals: $(metric_sum "$m" 'sluice_limit_refusals_total{')"
    POLICY_COUNTS[$t:$round]+="; auth failures: $(metric_sum "$m" 'sluice_auth_failures_total{')"
    POLICY_COUNTS[$t:$round]+="; safety findings: $(metric_sum "$m" 'sluice_safety_findings_total{')"
}

# start_target TARGET -> TARGET_PID ("" for direct): started and ready.
start_target() {
    local t=$1
    TARGET_PID=""
    case $t in
    direct) return 0 ;;
    nginx-proxy) start_nginx proxy "$SCRIPT_DIR/nginx-proxy.conf" "$PROXY_CPU" ;;
    sluice*) start_sluice "$t" ;;
    litellm) start_litellm ;;
    portkey) start_portkey ;;
    esac
    TARGET_PID=$STARTED_PID
    wait_ready "${LABEL[$t]}" "${T_HEALTH[$t]}" "$TARGET_PID" "$STARTED_LOG" "${T_READY[$t]}"
}

stop_target() {
    local t=$1
    [[ -z $TARGET_PID ]] || stop_pid "$TARGET_PID"
    TARGET_PID=""
    # the audit log of a run can be hundreds of MB
    [[ $t != sluice-all* ]] || rm -rf "${TMP:?}/$t"
}

# ------------------------------------------------------------ load (wrk) ----
# One Lua script per target: method, body, headers.
lua_file() { echo "$TMP/post-$1.lua"; }
for t in "${TARGETS[@]}"; do
    {
        echo 'wrk.method = "POST"'
        echo "wrk.body = [[${T_BODY[$t]}]]"
        echo 'wrk.headers["Content-Type"] = "application/json"'
        echo "wrk.headers[\"Authorization\"] = \"${AUTH_HEADER#Authorization: }\""
        while IFS= read -r h; do
            [[ -z $h ]] || echo "wrk.headers[\"${h%%: *}\"] = \"${h#*: }\""
        done <<<"${T_HDRS[$t]}"
    } >"$(lua_file "$t")"
done

# Run the load generator on LOADGEN_CPU in the background (so that a signal
# to this script can stop it too) and wait for it.
run_loadgen() {
    local out=$1 rc=0 pid
    shift
    taskset -c "$LOADGEN_CPU" "$@" >"$out" 2>&1 &
    pid=$!
    PIDS+=("$pid")
    wait "$pid" || rc=$?
    local keep=() p
    for p in "${PIDS[@]}"; do [[ $p == "$pid" ]] || keep+=("$p"); done
    PIDS=("${keep[@]}")
    return "$rc"
}

# Prints: rps p50_us p99_us non2xx socket_errors (missing values as -1).
parse_wrk() {
    awk '
    function us(v,   n, u) {
        n = v; sub(/[a-z]+$/, "", n)
        u = v; sub(/^[0-9.]+/, "", u)
        if (u == "us") return n
        if (u == "ms") return n * 1000
        if (u == "s")  return n * 1000000
        if (u == "m")  return n * 60000000
        if (u == "h")  return n * 3600000000
        return -1
    }
    BEGIN { rps = -1; p50 = -1; p99 = -1; non2xx = 0; sockerr = 0 }
    /^Requests\/sec:/ { rps = $2 }
    $1 == "50%" { p50 = us($2) }
    $1 == "99%" { p99 = us($2) }
    /Non-2xx or 3xx responses:/ { non2xx = $NF }
    /Socket errors:/ { s = $0; gsub(/[^0-9]+/, " ", s); n = split(s, a, " "); for (i = 1; i <= n; i++) sockerr += a[i] }
    END { printf "%s %.0f %.0f %d %d\n", rps, p50, p99, non2xx, sockerr }' "$1"
}

declare -A R_RPS R_P50 R_P99 R_NON2XX R_SOCKERR R_CPUUS R_CPU0 R_CPU1
RAW_OUTPUTS=()

# measure TARGET ROUND [PROXY_PID]
measure() {
    local target=$1 round=$2 ppid=${3:-} key="$1:$2" out base=${T_BASE[$1]} lua
    local conns=${T_CONNS[$1]} dur=${T_DUR[$1]} warm=${T_WARMUP[$1]} tmo=${T_TIMEOUT[$1]}
    out=$TMP/wrk-$target-$round.txt
    lua=$(lua_file "$target")
    if [[ $warm != 0 ]]; then
        run_loadgen "$TMP/warmup.txt" wrk -t"$THREADS" -c"$conns" -d"$warm" --timeout "$tmo" -s "$lua" "$base$REQ_PATH" ||
            log "WARNING: warm-up against $target failed: $(tail -n 3 "$TMP/warmup.txt")"
    fi
    local t0=0 t1=0 c0a c0b c1a c1b
    [[ -n $ppid ]] && t0=$(cpu_ticks "$ppid")
    c0a=$(cpu_jiffies "$LOADGEN_CPU")
    c1a=$(cpu_jiffies "$PROXY_CPU")
    log "round $round: $target ($dur, $conns connections)"
    run_loadgen "$out" wrk -t"$THREADS" -c"$conns" -d"$dur" --timeout "$tmo" --latency -s "$lua" "$base$REQ_PATH" ||
        log "WARNING: wrk against $target exited with an error: $(tail -n 3 "$out")"
    c0b=$(cpu_jiffies "$LOADGEN_CPU")
    c1b=$(cpu_jiffies "$PROXY_CPU")
    [[ -n $ppid ]] && t1=$(cpu_ticks "$ppid")
    local rps p50 p99 non2xx sockerr
    read -r rps p50 p99 non2xx sockerr < <(parse_wrk "$out")
    R_RPS[$key]=$rps
    R_P50[$key]=$p50
    R_P99[$key]=$p99
    R_NON2XX[$key]=$non2xx
    R_SOCKERR[$key]=$sockerr
    # percent busy of each CPU during the run
    R_CPU0[$key]=$(busy_pct "$c0a" "$c0b")
    R_CPU1[$key]=$(busy_pct "$c1a" "$c1b")
    if [[ -n $ppid ]]; then
        # proxy CPU microseconds per request = ticks * 1e6 / CLK_TCK / requests
        R_CPUUS[$key]=$(awk -v t=$((t1 - t0)) -v hz="$(getconf CLK_TCK)" -v rps="$rps" -v s="$(dur_s "$dur")" 'BEGIN {
            n = rps * s; if (n > 0 && rps > 0) printf "%.1f", t * 1000000 / hz / n; else print "n/a" }')
    else
        R_CPUUS[$key]="-"
    fi
    RAW_OUTPUTS+=("$target (round $round)|$out")
    if [[ $rps == -1 ]]; then
        log "WARNING: no requests/s in wrk's output for $target: $(tail -n 5 "$out")"
    fi
    if ((non2xx + sockerr > 0)); then
        log "WARNING: $target, round $round: $non2xx non-2xx/3xx responses, $sockerr socket errors"
    fi
}

# -------------------------------------------------------------- helpers ----
median() { # numbers on stdin (ignores -1), prints median or -1
    awk '$1 != -1 && $1 != "n/a" && $1 != "-" { v[n++] = $1 } END {
        if (n == 0) { print -1; exit }
        asort_n(v, n)
        if (n % 2) print v[(n - 1) / 2]; else print (v[n / 2 - 1] + v[n / 2]) / 2
    }
    function asort_n(a, n,   i, j, t) { for (i = 1; i < n; i++) for (j = i; j > 0 && a[j - 1] > a[j]; j--) { t = a[j]; a[j] = a[j - 1]; a[j - 1] = t } }'
}
values() { # MAPNAME TARGET -> one value per round
    local -n m=$1
    local r
    for ((r = 1; r <= RUNS; r++)); do echo "${m[$2:$r]:--1}"; done
}
fmt_int() { # 12345.6 -> 12,346 ; -1 -> n/a
    awk -v x="$1" 'BEGIN {
        if (x == -1 || x == "") { print "n/a"; exit }
        s = sprintf("%.0f", x < 0 ? -x : x); o = ""
        while (length(s) > 3) { o = "," substr(s, length(s) - 2) o; s = substr(s, 1, length(s) - 3) }
        print (x < 0 ? "-" : "") s o }'
}
fmt_us() { [[ $1 == -1 ]] && echo "n/a" || echo "$(fmt_int "$1") us"; }
# ratio A B -> "1.12x" (3 decimals below 0.1, so that the peers do not read 0.00x)
fmt_ratio() {
    awk -v a="$1" -v b="$2" 'BEGIN { if (a > 0 && b > 0) { r = a / b; printf (r < 0.1 ? "%.3fx" : "%.2fx"), r } else print "n/a" }'
}
# Load of a target in words when it differs from the default (the peers).
load_note() {
    local t=$1 n=""
    [[ ${T_CONNS[$t]} == "$CONNECTIONS" ]] || n+="${T_CONNS[$t]} connections"
    [[ ${T_DUR[$t]} == "$DURATION" ]] || n+="${n:+, }${T_DUR[$t]}"
    [[ -z $n ]] || echo " ($n)"
}

# ------------------------------------------------- fixed rate (oha) ----
# Prints: rps p50_us p99_us non2xx errors success_pct (missing values as -1).
# Text output with -u us; "aborted due to deadline" (requests cut by -z) is
# not an error.
parse_oha() {
    awk '
    BEGIN { rps = -1; p50 = -1; p99 = -1; non2xx = 0; errs = 0; ok = -1; sect = "" }
    /^Summary:/ { sect = "summary" }
    /^Status code distribution:/ { sect = "status"; next }
    /^Error distribution:/ { sect = "error"; next }
    /^[A-Z]/ && !/^(Status code|Error) distribution:/ { if ($0 !~ /^Summary:/) sect = "" }
    /Success rate:/ { v = $NF; sub(/%$/, "", v); ok = v }
    /Requests\/sec:/ { rps = $NF }
    /^ *50\.00% in / { p50 = ($4 == "us" && $3 != "NaN") ? $3 : -1 }
    /^ *99\.00% in / { p99 = ($4 == "us" && $3 != "NaN") ? $3 : -1 }
    sect == "status" && /^ *\[[0-9]+\]/ { c = $1; gsub(/[^0-9]/, "", c); if (c !~ /^2/) non2xx += $2 }
    sect == "error" && /^ *\[[0-9]+\]/ { if ($0 !~ /aborted due to deadline/) { n = $1; gsub(/[^0-9]/, "", n); errs += n } }
    END { printf "%s %.0f %.0f %d %d %s\n", rps, p50, p99, non2xx, errs, ok }' "$1"
}

declare -A H_RPS H_P50 H_P99 H_NON2XX H_ERR H_OK H_CPU0 H_CPU1
HALF_RAW=()

# measure_fixed TARGET ROUND RATE
measure_fixed() {
    local target=$1 round=$2 rate=$3 key="$1:$2" out=$TMP/oha-$1-$2.txt c0a c0b c1a c1b base=${T_BASE[$1]}
    if [[ $WARMUP != 0 ]]; then
        run_loadgen "$TMP/warmup.txt" wrk -t"$THREADS" -c"$CONNECTIONS" -d"$WARMUP" -s "$(lua_file "$target")" "$base$REQ_PATH" || true
    fi
    log "fixed rate, round $round: $target at $rate req/s ($DURATION, $CONNECTIONS connections, oha)"
    c0a=$(cpu_jiffies "$LOADGEN_CPU")
    c1a=$(cpu_jiffies "$PROXY_CPU")
    hdr_args "$target"
    run_loadgen "$out" "$OHA_BIN" -z "$DURATION" -c "$CONNECTIONS" -q "$rate" --latency-correction \
        --no-tui --worker-threads 1 -u us -m POST -T application/json -H "$AUTH_HEADER" "${HDR_ARGS[@]}" \
        -d "${T_BODY[$target]}" "$base$REQ_PATH" || log "WARNING: oha against $target exited with an error: $(tail -n 3 "$out")"
    c0b=$(cpu_jiffies "$LOADGEN_CPU")
    c1b=$(cpu_jiffies "$PROXY_CPU")
    read -r "H_RPS[$key]" "H_P50[$key]" "H_P99[$key]" "H_NON2XX[$key]" "H_ERR[$key]" "H_OK[$key]" \
        < <(parse_oha "$out")
    H_CPU0[$key]=$(busy_pct "$c0a" "$c0b")
    H_CPU1[$key]=$(busy_pct "$c1a" "$c1b")
    HALF_RAW+=("$target (fixed rate $rate req/s, round $round)|$out")
    [[ ${H_P99[$key]} != -1 ]] || log "WARNING: no latency percentiles in oha's output for $target: $(tail -n 5 "$out")"
}

run_latency_at_half() {
    local base_target=sluice rate t r k oha_ver half_targets=()
    [[ $SKIP_SLUICE == 1 ]] && base_target=nginx-proxy
    # The peers cannot sustain half of sluice's peak: they are left out.
    for t in "${TARGETS[@]}"; do is_peer "$t" || half_targets+=("$t"); done
    rate=$(awk -v r="${M_RPS[$base_target]}" 'BEGIN { printf "%d", (r > 0 ? r / 2 : 0) }')
    if ((rate < 1)); then
        HALF_SECTION=$'\n'"Fixed-rate latency (LATENCY_AT_HALF=1) skipped: no peak measured for ${LABEL[$base_target]}."$'\n'
        log "LATENCY_AT_HALF=1: no peak for $base_target; skipping"
        return 0
    fi
    oha_ver=$("$OHA_BIN" --version 2>/dev/null | awk '{ print $2 }')
    log "LATENCY_AT_HALF=1: half of ${LABEL[$base_target]}'s peak = $rate req/s (oha $oha_ver)"
    for ((r = 1; r <= RUNS; r++)); do
        for t in "${half_targets[@]}"; do
            start_target "$t"
            measure_fixed "$t" "$r" "$rate"
            stop_target "$t"
        done
    done
    local sec added flag d rps p50 p99 p99d bad
    p99d=$(values H_P99 direct | median)
    sec=$'\n'"## Latency at a fixed rate: $(fmt_int "$rate") req/s (half of ${LABEL[$base_target]}'s peak)"$'\n\n'
    sec+="oha $oha_ver, \`-q $rate --latency-correction\` (latency counted from when each request was due, so queueing is not hidden), $CONNECTIONS connections, $DURATION per target, on CPU $LOADGEN_CPU"
    ((RUNS > 1)) && sec+="; medians over $RUNS rounds"
    sec+="."
    [[ $HAVE_LITELLM != 1 && $HAVE_PORTKEY != 1 ]] || sec+=" The peers are left out: this rate is far above their peak."
    sec+=$'\n\n'
    sec+="| target | asked req/s | achieved req/s | p50 | p99 | added p99 vs direct |"$'\n'
    sec+="|---|---:|---:|---:|---:|---:|"$'\n'
    for t in "${half_targets[@]}"; do
        rps=$(values H_RPS "$t" | median)
        p50=$(values H_P50 "$t" | median)
        p99=$(values H_P99 "$t" | median)
        if [[ $t == direct ]]; then
            added="-"
        elif [[ $p99 == -1 || $p99d == -1 ]]; then
            added="n/a"
        else
            d=$(awk -v a="$p99" -v b="$p99d" 'BEGIN { printf "%.0f", a - b }')
            added="$( ((d >= 0)) && echo +)$(fmt_int "$d") us"
        fi
        flag=""
        for ((r = 1; r <= RUNS; r++)); do
            k=$t:$r
            ((${H_NON2XX[$k]} + ${H_ERR[$k]} == 0)) || flag=" (!)"
            if awk -v a="${H_RPS[$k]}" -v q="$rate" 'BEGIN { exit !(a < 0.95 * q) }'; then flag=" (!)"; fi
        done
        sec+="| ${LABEL[$t]}$flag | $(fmt_int "$rate") | $(fmt_int "$rps") | $(fmt_us "$p50") | $(fmt_us "$p99") | $added |"$'\n'
    done
    bad=""
    for ((r = 1; r <= RUNS; r++)); do
        for t in "${half_targets[@]}"; do
            k=$t:$r
            if ((${H_NON2XX[$k]} + ${H_ERR[$k]} > 0)); then
                bad+="(!) ${LABEL[$t]}, round $r: ${H_NON2XX[$k]} non-2xx responses and ${H_ERR[$k]} errors (success rate ${H_OK[$k]}%)."$'\n'
            fi
            if awk -v a="${H_RPS[$k]}" -v q="$rate" 'BEGIN { exit !(a < 0.95 * q) }'; then
                bad+="(!) ${LABEL[$t]}, round $r: did not sustain the asked rate (under 95%); its latencies include the backlog."$'\n'
            fi
        done
    done
    for ((r = 1; r <= RUNS; r++)); do
        if [[ $PROXY_CPU != "$LOADGEN_CPU" ]] && ((${H_CPU1[direct:$r]:-0} > 15)); then
            bad+="(!) CPU $PROXY_CPU was ${H_CPU1[direct:$r]}% busy during the direct run of round $r, when nothing of the rig runs there: other load on the machine skews these figures."$'\n'
        fi
    done
    [[ -z $bad ]] || sec+=$'\n'"$bad"
    sec+=$'\n'"Per round:"$'\n\n'
    sec+="| target | round | achieved req/s | p50 | p99 | CPU $LOADGEN_CPU busy | CPU $PROXY_CPU busy |"$'\n'
    sec+="|---|---:|---:|---:|---:|---:|---:|"$'\n'
    for ((r = 1; r <= RUNS; r++)); do
        for t in "${half_targets[@]}"; do
            k=$t:$r
            sec+="| ${LABEL[$t]} | $r | $(fmt_int "${H_RPS[$k]}") | $(fmt_us "${H_P50[$k]}") | $(fmt_us "${H_P99[$k]}") | ${H_CPU0[$k]}% | ${H_CPU1[$k]}% |"$'\n'
        done
    done
    HALF_SECTION=$sec
}

# ----------------------------------------------------------------- run ----
log "temp dir $TMP"
log "targets: ${TARGETS[*]}"
# Is the machine quiet? Other load on either core skews every figure.
IDLE_NOTE=""
q0a=$(cpu_jiffies "$LOADGEN_CPU"); q1a=$(cpu_jiffies "$PROXY_CPU")
sleep 1
q0=$(busy_pct "$q0a" "$(cpu_jiffies "$LOADGEN_CPU")"); q1=$(busy_pct "$q1a" "$(cpu_jiffies "$PROXY_CPU")")
if ((q0 > 10 || q1 > 10)); then
    IDLE_NOTE="(!) Before the run, with nothing of the rig started, CPU $LOADGEN_CPU was $q0% and CPU $PROXY_CPU $q1% busy: other load on the machine."
    log "WARNING: machine not idle before the run (CPU $LOADGEN_CPU $q0%, CPU $PROXY_CPU $q1% busy); figures will be skewed"
fi
start_nginx upstream "$SCRIPT_DIR/nginx-upstream.conf" "$LOADGEN_CPU"
UPSTREAM_PID=$STARTED_PID
wait_ready "upstream nginx" "http://127.0.0.1:$UPSTREAM_PORT/health" "$UPSTREAM_PID" "$STARTED_LOG"
sanity_check direct

# Preflight: every proxy must start, get ready and answer one POST with the
# upstream's content before anything is measured, so that a broken build or
# a peer that does not proxy fails in seconds (LiteLLM needs ~15 s to start).
for target in "${TARGETS[@]}"; do
    [[ $target != direct ]] || continue
    log "preflight: ${LABEL[$target]}"
    start_target "$target"
    sanity_check "$target"
    # the cache-hit row: the second request must be a hit
    [[ $target != sluice-all-hit ]] || sanity_check "$target"
    [[ $target != sluice-pii && $target != sluice-all* ]] || policy_check "$target"
    stop_target "$target"
done
log "preflight ok: ${TARGETS[*]}"

for ((round = 1; round <= RUNS; round++)); do
    for target in "${TARGETS[@]}"; do
        start_target "$target"
        sanity_check "$target"
        measure "$target" "$round" "$TARGET_PID"
        [[ $target != sluice-all* ]] || policy_counters "$target" "$round"
        stop_target "$target"
    done
done

declare -A M_RPS M_P50 M_P99
for t in "${TARGETS[@]}"; do
    M_RPS[$t]=$(values R_RPS "$t" | median)
    M_P50[$t]=$(values R_P50 "$t" | median)
    M_P99[$t]=$(values R_P99 "$t" | median)
done

# ---------------------------------------------- fixed-rate latency (oha) ----
HALF_SECTION=""
if [[ $LATENCY_AT_HALF == 1 ]]; then
    if [[ -z $OHA_BIN || ! -x $OHA_BIN ]]; then
        log "LATENCY_AT_HALF=1: oha is not installed (cargo install oha --locked); skipping the fixed-rate measurement"
        HALF_SECTION=$'\n'"Fixed-rate latency (LATENCY_AT_HALF=1) skipped: oha is not installed (\`cargo install oha --locked\`)."$'\n'
    else
        run_latency_at_half
    fi
fi

# -------------------------------------------------------------- report ----
TS=$(date -u +%Y%m%dT%H%M%SZ)
CPU_MODEL=$(awk -F': *' '/^model name/ { print $2; exit }' /proc/cpuinfo)
[[ -n $CPU_MODEL ]] || CPU_MODEL=$(awk -F': *' '/^(Hardware|cpu model|Model)/ { print $2; exit }' /proc/cpuinfo)
MEM_GIB=$(awk '/^MemTotal:/ { printf "%.0f", $2 / 1048576 }' /proc/meminfo)
# shellcheck source=/dev/null
OS_NAME=$( (. /etc/os-release 2>/dev/null && echo "$PRETTY_NAME") || echo unknown)
NGINX_VER=$( (nginx -v 2>&1 || true) | sed 's/^nginx version: //')
WRK_VER=$( (wrk -v 2>&1 || true) | awk 'NR == 1 { print $2 }')
SLUICE_DESC="skipped (SKIP_SLUICE=1)"
if [[ $SKIP_SLUICE != 1 ]]; then
    SLUICE_DESC="\`$SLUICE_BIN\` (built $(date -u -r "$SLUICE_BIN" +%Y-%m-%dT%H:%M:%SZ)"
    if rev=$(git -C "$REPO_ROOT" describe --always --dirty 2>/dev/null); then SLUICE_DESC+=", tree $rev"; fi
    SLUICE_DESC+=")"
fi
mode="full"
[[ $QUICK == 1 ]] && mode="QUICK (2s per measurement: indicative only)"

REPORT=$TMP/report.md
{
    echo "# sluice load comparison, $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo
    echo "- Date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
    echo "- Machine: $NPROC CPUs (nproc), $CPU_MODEL, ${MEM_GIB} GiB RAM, kernel $(uname -r), $OS_NAME"
    echo "- Rig: upstream nginx (1 worker) and wrk on CPU $LOADGEN_CPU; the proxy under test alone on CPU $PROXY_CPU (one worker/process); each proxy started, measured and stopped alone"
    echo "- Load: wrk $WRK_VER, $THREADS thread(s), $CONNECTIONS connections, $DURATION per measurement ($([[ $WARMUP == 0 ]] && echo "no warm-up" || echo "after a $WARMUP warm-up")), $RUNS round(s) ($mode); \`POST $REQ_PATH\`, ${#BODY}-byte JSON body, \`$AUTH_HEADER\`; answer: 283-byte JSON"
    echo "- nginx: $NGINX_VER; sluice: $SLUICE_DESC"
    if [[ " ${TARGETS[*]} " == *" sluice-all"* ]]; then
        echo "- sluice (all policies): \`loadtest/sluice-all-policies.toml\`: API key of a team, model allow-list, team rpm/tpm/max_concurrent, a priced monthly budget, PII mask of all 9 entities in requests and answers, prompt-injection block and a deny pattern, audit log (\`detail = \"redacted\"\`, \`fsync = \"batch\"\`, 50 ms), exact cache (requests without \`temperature\`: bypassed), none refusing"
    fi
    if [[ " ${TARGETS[*]} " == *" sluice-all-hit "* ]]; then
        echo "- sluice (all policies, cache hits): the same, with \`\"temperature\":0\` in the body (${#BODY_HIT} bytes): answered from the exact cache, the upstream is not asked"
    fi
    if [[ $HAVE_LITELLM == 1 || $HAVE_PORTKEY == 1 ]]; then
        pl="- Peers, same upstream, same body: wrk with $PEER_CONNECTIONS connections, $PEER_DURATION after a $PEER_WARMUP warm-up, \`--timeout $PEER_TIMEOUT\`"
        [[ $HAVE_LITELLM != 1 ]] || pl+="; LiteLLM $LITELLM_VER (\`${LITELLM_CMD[*]} --num_workers 1\`, uvicorn, no master key/database, access log off, \`loadtest/peers/litellm.yaml\`: \`openai/bench-model\` at the upstream)"
        [[ $HAVE_PORTKEY != 1 ]] || pl+="; Portkey gateway $PORTKEY_VER on Node.js $NODE_VER (\`$PORTKEY_DIR/$PORTKEY_SCRIPT_REL --headless\`, headers \`x-portkey-provider: openai\`, \`x-portkey-custom-host\`: the upstream)"
        echo "$pl"
    fi
    if [[ $PEERS == 0 ]]; then
        echo "- Peers: not measured (PEERS=0)"
    elif [[ -n $PEERS_NOTE ]]; then
        echo "- Peers: $PEERS_NOTE"
    fi
    echo
    if [[ -n $IDLE_NOTE ]]; then echo "$IDLE_NOTE"; echo; fi
    if ((RUNS > 1)); then echo "Medians over $RUNS rounds."; echo; fi
    echo "| target | req/s | p50 | p99 | req/s vs nginx proxy | added p99 vs direct | errors |"
    echo "|---|---:|---:|---:|---:|---:|---:|"
    for t in "${TARGETS[@]}"; do
        rps=${M_RPS[$t]} p50=${M_P50[$t]} p99=${M_P99[$t]}
        ratio=$(fmt_ratio "$rps" "${M_RPS[nginx-proxy]}")
        if [[ $t == direct ]]; then
            added="-"
        elif [[ $p99 == -1 || ${M_P99[direct]} == -1 ]]; then
            added="n/a"
        else
            d=$(awk -v a="$p99" -v b="${M_P99[direct]}" 'BEGIN { printf "%.0f", a - b }')
            added="$( ((d >= 0)) && echo +)$(fmt_int "$d") us"
        fi
        flag=""
        errs=0
        for ((r = 1; r <= RUNS; r++)); do errs=$((errs + ${R_NON2XX[$t:$r]:-0} + ${R_SOCKERR[$t:$r]:-0})); done
        ((errs == 0)) || flag=" (!)"
        [[ $rps != -1 ]] || flag=" (!)"
        echo "| ${LABEL[$t]}$(load_note "$t")$flag | $(fmt_int "$rps") | $(fmt_us "$p50") | $(fmt_us "$p99") | $ratio | $added | $(fmt_int "$errs") |"
    done
    echo
    for t in sluice-pii sluice-all; do
        [[ -n ${M_RPS[$t]:-} ]] || continue
        awk -v a="${M_RPS[$t]}" -v b="${M_RPS[sluice]}" -v n="${LABEL[$t]}" -v goal="$([[ $t == sluice-pii ]] && echo 90)" 'BEGIN {
            if (a > 0 && b > 0) {
                printf "%s keeps %.1f%% of sluice'"'"'s own req/s", n, 100 * a / b
                if (goal != "") printf " (goal: at least %d%%; %s)", goal, (a >= goal / 100 * b ? "met" : "NOT met")
                print "."
            } else print n " vs sluice: n/a (a run measured nothing)."
        }'
    done
    [[ -z ${M_RPS[sluice-pii]:-}${M_RPS[sluice-all]:-} ]] || echo
    for t in "${TARGETS[@]}"; do
        for ((r = 1; r <= RUNS; r++)); do
            k=$t:$r
            if ((${R_NON2XX[$k]:-0} + ${R_SOCKERR[$k]:-0} > 0)); then
                echo "(!) ${LABEL[$t]}, round $r: ${R_NON2XX[$k]} non-2xx/3xx responses and ${R_SOCKERR[$k]} socket errors (timeouts included); its req/s counts the non-2xx, its latencies leave the timeouts out."
            fi
            if [[ ${R_RPS[$k]:--1} == -1 ]]; then
                echo "(!) ${LABEL[$t]}, round $r: wrk reported no requests/s (see the raw output)."
            fi
        done
    done
    for ((r = 1; r <= RUNS; r++)); do
        if [[ $PROXY_CPU != "$LOADGEN_CPU" ]] && ((${R_CPU1[direct:$r]:-0} > 15)); then
            echo "(!) CPU $PROXY_CPU was ${R_CPU1[direct:$r]}% busy during the direct run of round $r, when nothing of the rig runs there: other load on the machine skews these figures."
        fi
    done
    if ((${#POLICY_COUNTS[@]} > 0)); then
        echo
        echo "What the policies did (sluice's /metrics at the end of each measured run, warm-up and sanity request included):"
        echo
        for t in sluice-all sluice-all-hit; do
            for ((r = 1; r <= RUNS; r++)); do
                [[ -z ${POLICY_COUNTS[$t:$r]:-} ]] || echo "- ${LABEL[$t]}, round $r: ${POLICY_COUNTS[$t:$r]}"
            done
        done
    fi
    echo
    echo "Per round (proxy CPU us/req = CPU time of the proxy process(es) / requests; CPU busy = share of each core in use during the run):"
    echo
    echo "| target | round | connections | req/s | p50 | p99 | non-2xx | socket errors | proxy CPU us/req | CPU $LOADGEN_CPU busy | CPU $PROXY_CPU busy |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    for ((r = 1; r <= RUNS; r++)); do
        for t in "${TARGETS[@]}"; do
            k=$t:$r
            echo "| ${LABEL[$t]} | $r | ${T_CONNS[$t]} | $(fmt_int "${R_RPS[$k]}") | $(fmt_us "${R_P50[$k]}") | $(fmt_us "${R_P99[$k]}") | ${R_NON2XX[$k]} | ${R_SOCKERR[$k]} | ${R_CPUUS[$k]} | ${R_CPU0[$k]}% | ${R_CPU1[$k]}% |"
        done
    done
    printf '%s' "$HALF_SECTION"
    echo
    echo "<details><summary>raw load generator output</summary>"
    echo
    for entry in "${RAW_OUTPUTS[@]}" "${HALF_RAW[@]}"; do
        echo "${entry%%|*}:"
        echo
        echo '```'
        cat "${entry#*|}"
        echo '```'
        echo
    done
    echo "</details>"
} >"$REPORT"

mkdir -p "$RESULTS_DIR"
RESULT_FILE=$RESULTS_DIR/compare-$TS.md
cp "$REPORT" "$RESULT_FILE"
echo
# Print everything but the raw outputs on the terminal.
sed '/^<details>/,$d' "$REPORT"
echo "Written to $RESULT_FILE"
