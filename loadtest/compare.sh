#!/usr/bin/env bash
# Compare requests/s and latency of the same chat-completion POST sent
#   (a) straight to a fixed nginx upstream,
#   (b) through nginx as a plain keep-alive reverse proxy,
#   (c) through sluice,
#   (d) through sluice with PII scanning on (`sluice+pii`: every built-in
#       entity masked in requests and answers; the body holds one email),
# on the "fair rig" for 2 cores: upstream nginx and the load generator pinned
# to CPU 0, the proxy under test alone on CPU 1, each proxy measured alone.
# See loadtest/README.md for how to read the output.
#
# Usage (from anywhere):
#   cargo build --release && loadtest/compare.sh
#   QUICK=1 loadtest/compare.sh                  # 2 s per measurement
#   SKIP_SLUICE=1 loadtest/compare.sh            # only (a) and (b)
#   SKIP_PII=1 loadtest/compare.sh               # without (d)
#   RUNS=3 DURATION=10s loadtest/compare.sh      # 3 interleaved rounds, medians
#   LATENCY_AT_HALF=1 loadtest/compare.sh        # + fixed-rate latency (needs oha)
#
# Settings (environment):
#   DURATION=8s  CONNECTIONS=32  RUNS=1  QUICK=0 (1 = 2s per measurement)
#   WARMUP=1s (0 = none)  THREADS=1 (wrk threads)
#   SLUICE_BIN=target/release/sluice (relative: to the current dir, else the repo root)
#   SKIP_SLUICE=0  SKIP_PII=0  LATENCY_AT_HALF=0  OHA_BIN=(oha on PATH or ~/.cargo/bin/oha)
#   UPSTREAM_PORT=18080 PROXY_PORT=18081 SLUICE_PORT=18082 SLUICE_METRICS_PORT=19092
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
SKIP_SLUICE=${SKIP_SLUICE:-0}
SKIP_PII=${SKIP_PII:-0}
LATENCY_AT_HALF=${LATENCY_AT_HALF:-0}
SLUICE_BIN=${SLUICE_BIN:-target/release/sluice}
UPSTREAM_PORT=${UPSTREAM_PORT:-18080}
PROXY_PORT=${PROXY_PORT:-18081}
SLUICE_PORT=${SLUICE_PORT:-18082}
SLUICE_METRICS_PORT=${SLUICE_METRICS_PORT:-19092}
LOADGEN_CPU=${LOADGEN_CPU:-0}
PROXY_CPU=${PROXY_CPU:-1}
READY_TIMEOUT=${READY_TIMEOUT:-20}
RESULTS_DIR=${RESULTS_DIR:-$SCRIPT_DIR/results}

# 229 bytes with one email in it (masked by sluice+pii); the upstream answers
# with a 283-byte JSON body.
BODY='{"model":"bench-model","messages":[{"role":"user","content":"Tell anna@example.org, briefly, why a gateway placed in front of a language model should add as little latency as possible to each request it forwards upstream, ok?"}]}'
AUTH_HEADER='Authorization: Bearer sk-bench'
REQ_PATH=/v1/chat/completions

log() { printf '[compare] %s\n' "$*" >&2; }
die() {
    printf '[compare] ERROR: %s\n' "$*" >&2
    exit 1
}

# ---------------------------------------------------------------- checks ----
duration_re='^[0-9]+(s|m|h)?$'
[[ $DURATION =~ $duration_re ]] || die "DURATION must look like 8s, 1m or 30 (got '$DURATION')"
[[ $WARMUP == 0 || $WARMUP =~ $duration_re ]] || die "WARMUP must look like 1s or 0 (got '$WARMUP')"
for v in CONNECTIONS RUNS THREADS READY_TIMEOUT UPSTREAM_PORT PROXY_PORT SLUICE_PORT SLUICE_METRICS_PORT LOADGEN_CPU PROXY_CPU; do
    [[ ${!v} =~ ^[0-9]+$ ]] || die "$v must be a non-negative integer (got '${!v}')"
done
((CONNECTIONS >= 1 && RUNS >= 1 && THREADS >= 1)) || die "CONNECTIONS, RUNS and THREADS must be >= 1"
((CONNECTIONS >= THREADS)) || die "CONNECTIONS ($CONNECTIONS) must be >= THREADS ($THREADS) for wrk"

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
fi

OHA_BIN=${OHA_BIN:-$(command -v oha 2>/dev/null || true)}
if [[ -z $OHA_BIN && -x $HOME/.cargo/bin/oha ]]; then
    OHA_BIN=$HOME/.cargo/bin/oha
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

# A port is free when curl cannot connect to it (exit code 7).
port_free() {
    local rc=0
    curl -s -o /dev/null --max-time 1 "http://127.0.0.1:$1/" || rc=$?
    [[ $rc == 7 ]]
}
ports=("$UPSTREAM_PORT" "$PROXY_PORT")
[[ $SKIP_SLUICE == 1 ]] || ports+=("$SLUICE_PORT" "$SLUICE_METRICS_PORT")
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

# ------------------------------------------------------------- services ----
render_nginx_conf() {
    # Placeholders first, so that any port mapping works.
    sed -e "s/127\.0\.0\.1:18080/127.0.0.1:@UP@/g" -e "s/127\.0\.0\.1:18081/127.0.0.1:@PX@/g" "$1" |
        sed -e "s/@UP@/$UPSTREAM_PORT/g" -e "s/@PX@/$PROXY_PORT/g"
}

# start_nginx NAME CONF CPU  -> sets STARTED_PID
start_nginx() {
    local name=$1 conf=$2 cpu=$3 prefix=$TMP/$1
    mkdir -p "$prefix/logs"
    render_nginx_conf "$conf" >"$prefix/nginx.conf"
    nginx -t -q -c "$prefix/nginx.conf" -p "$prefix/" -e "$prefix/logs/error.log" >"$prefix/logs/test.log" 2>&1 ||
        die "nginx config for $name is invalid: $(cat "$prefix/logs/test.log")"
    taskset -c "$cpu" nginx -c "$prefix/nginx.conf" -p "$prefix/" -e "$prefix/logs/error.log" -g 'daemon off;' \
        >"$prefix/logs/stdout.log" 2>&1 &
    STARTED_PID=$!
    PIDS+=("$STARTED_PID")
    STARTED_LOG=$prefix/logs/error.log
}

# start_sluice [TARGET]: sluice-pii adds the [pii] section.
start_sluice() {
    local target=${1:-sluice} dir=$TMP/${1:-sluice}
    mkdir -p "$dir"
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
    STARTED_PID=$!
    PIDS+=("$STARTED_PID")
    STARTED_LOG=$dir/sluice.log
}

# wait_ready NAME URL PID LOG
wait_ready() {
    local name=$1 url=$2 pid=$3 logf=$4 deadline=$((SECONDS + READY_TIMEOUT)) code
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
            die "$name not ready after ${READY_TIMEOUT}s (GET $url -> ${code:-no answer}); last lines of $logf:
$(tail -n 20 "$logf" 2>/dev/null)"
        fi
        sleep 0.1
    done
}

# One real request before loading a target: it must answer 200.
sanity_check() {
    local name=$1 base=$2 code out=$TMP/sanity-$1.json
    code=$(curl -s -o "$out" -w '%{http_code}' --max-time 5 -X POST \
        -H 'Content-Type: application/json' -H "$AUTH_HEADER" \
        --data-binary "$BODY" "$base$REQ_PATH") || true
    [[ $code == 200 ]] || die "$name: POST $base$REQ_PATH answered ${code:-nothing} (expected 200): $(head -c 300 "$out" 2>/dev/null)"
    grep -q 'Hello from the fixed upstream.' "$out" ||
        log "WARNING: $name answered 200 but without the upstream's content: $(head -c 300 "$out")"
}

# sluice+pii must have found the body's email (the upstream cannot tell).
pii_check() {
    local m
    m=$(curl -s --max-time 2 "http://127.0.0.1:$SLUICE_METRICS_PORT/metrics") || true
    grep -q '^sluice_pii_findings_total{.*entity="email"' <<<"$m" ||
        die "sluice+pii answered, but sluice_pii_findings_total has no email finding: is the [pii] section applied?"
}

# ------------------------------------------------------------ load (wrk) ----
LUA=$TMP/post.lua
cat >"$LUA" <<EOF
wrk.method = "POST"
wrk.body = [[$BODY]]
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer sk-bench"
EOF

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

# measure TARGET ROUND BASE_URL [PROXY_PID]
measure() {
    local target=$1 round=$2 base=$3 ppid=${4:-} key="$1:$2" out
    out=$TMP/wrk-$target-$round.txt
    if [[ $WARMUP != 0 ]]; then
        run_loadgen "$TMP/warmup.txt" wrk -t"$THREADS" -c"$CONNECTIONS" -d"$WARMUP" -s "$LUA" "$base$REQ_PATH" ||
            log "WARNING: warm-up against $target failed: $(tail -n 3 "$TMP/warmup.txt")"
    fi
    local t0=0 t1=0 c0a c0b c1a c1b
    [[ -n $ppid ]] && t0=$(cpu_ticks "$ppid")
    c0a=$(cpu_jiffies "$LOADGEN_CPU")
    c1a=$(cpu_jiffies "$PROXY_CPU")
    log "round $round: $target ($DURATION, $CONNECTIONS connections)"
    run_loadgen "$out" wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency -s "$LUA" "$base$REQ_PATH" ||
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
        R_CPUUS[$key]=$(awk -v t=$((t1 - t0)) -v hz="$(getconf CLK_TCK)" -v rps="$rps" -v d="$DURATION" 'BEGIN {
            s = d; m = 1; if (s ~ /m$/) m = 60; if (s ~ /h$/) m = 3600; sub(/[smh]$/, "", s)
            n = rps * s * m; if (n > 0 && rps > 0) printf "%.1f", t * 1000000 / hz / n; else print "n/a" }')
    else
        R_CPUUS[$key]="-"
    fi
    RAW_OUTPUTS+=("$target (round $round)|$out")
    if [[ $rps == -1 ]]; then
        log "WARNING: no requests/s in wrk's output for $target: $(tail -n 5 "$out")"
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

# measure_fixed TARGET ROUND BASE_URL RATE
measure_fixed() {
    local target=$1 round=$2 base=$3 rate=$4 key="$1:$2" out=$TMP/oha-$1-$2.txt c0a c0b c1a c1b
    if [[ $WARMUP != 0 ]]; then
        run_loadgen "$TMP/warmup.txt" wrk -t"$THREADS" -c"$CONNECTIONS" -d"$WARMUP" -s "$LUA" "$base$REQ_PATH" || true
    fi
    log "fixed rate, round $round: $target at $rate req/s ($DURATION, $CONNECTIONS connections, oha)"
    c0a=$(cpu_jiffies "$LOADGEN_CPU")
    c1a=$(cpu_jiffies "$PROXY_CPU")
    run_loadgen "$out" "$OHA_BIN" -z "$DURATION" -c "$CONNECTIONS" -q "$rate" --latency-correction \
        --no-tui --worker-threads 1 -u us -m POST -T application/json -H "$AUTH_HEADER" -d "$BODY" \
        "$base$REQ_PATH" || log "WARNING: oha against $target exited with an error: $(tail -n 3 "$out")"
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
    local base_target=sluice rate t r k oha_ver
    [[ $SKIP_SLUICE == 1 ]] && base_target=nginx-proxy
    rate=$(awk -v r="${M_RPS[$base_target]}" 'BEGIN { printf "%d", (r > 0 ? r / 2 : 0) }')
    if ((rate < 1)); then
        HALF_SECTION=$'\n'"Fixed-rate latency (LATENCY_AT_HALF=1) skipped: no peak measured for ${LABEL[$base_target]}."$'\n'
        log "LATENCY_AT_HALF=1: no peak for $base_target; skipping"
        return 0
    fi
    oha_ver=$("$OHA_BIN" --version 2>/dev/null | awk '{ print $2 }')
    log "LATENCY_AT_HALF=1: half of ${LABEL[$base_target]}'s peak = $rate req/s (oha $oha_ver)"
    for ((r = 1; r <= RUNS; r++)); do
        for t in "${TARGETS[@]}"; do
            case $t in
            direct)
                measure_fixed direct "$r" "http://127.0.0.1:$UPSTREAM_PORT" "$rate"
                ;;
            nginx-proxy)
                start_nginx proxy "$SCRIPT_DIR/nginx-proxy.conf" "$PROXY_CPU"
                pid=$STARTED_PID
                wait_ready "nginx proxy" "http://127.0.0.1:$PROXY_PORT/health" "$pid" "$STARTED_LOG"
                measure_fixed nginx-proxy "$r" "http://127.0.0.1:$PROXY_PORT" "$rate"
                stop_pid "$pid"
                ;;
            sluice | sluice-pii)
                start_sluice "$t"
                pid=$STARTED_PID
                wait_ready "${LABEL[$t]}" "http://127.0.0.1:$SLUICE_PORT/health" "$pid" "$STARTED_LOG"
                measure_fixed "$t" "$r" "http://127.0.0.1:$SLUICE_PORT" "$rate"
                stop_pid "$pid"
                ;;
            esac
        done
    done
    local sec added flag d rps p50 p99 p99d bad
    p99d=$(values H_P99 direct | median)
    sec=$'\n'"## Latency at a fixed rate: $(fmt_int "$rate") req/s (half of ${LABEL[$base_target]}'s peak)"$'\n\n'
    sec+="oha $oha_ver, \`-q $rate --latency-correction\` (latency counted from when each request was due, so queueing is not hidden), $CONNECTIONS connections, $DURATION per target, on CPU $LOADGEN_CPU"
    ((RUNS > 1)) && sec+="; medians over $RUNS rounds"
    sec+="."$'\n\n'
    sec+="| target | asked req/s | achieved req/s | p50 | p99 | added p99 vs direct |"$'\n'
    sec+="|---|---:|---:|---:|---:|---:|"$'\n'
    for t in "${TARGETS[@]}"; do
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
        for t in "${TARGETS[@]}"; do
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
        for t in "${TARGETS[@]}"; do
            k=$t:$r
            sec+="| ${LABEL[$t]} | $r | $(fmt_int "${H_RPS[$k]}") | $(fmt_us "${H_P50[$k]}") | $(fmt_us "${H_P99[$k]}") | ${H_CPU0[$k]}% | ${H_CPU1[$k]}% |"$'\n'
        done
    done
    HALF_SECTION=$sec
}

# ----------------------------------------------------------------- run ----
TARGETS=(direct nginx-proxy)
[[ $SKIP_SLUICE == 1 ]] || TARGETS+=(sluice)
[[ $SKIP_SLUICE == 1 || $SKIP_PII == 1 ]] || TARGETS+=(sluice-pii)
declare -A LABEL=([direct]="direct (upstream)" [nginx-proxy]="nginx proxy" [sluice]="sluice" [sluice-pii]="sluice+pii")

log "temp dir $TMP"
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
sanity_check direct "http://127.0.0.1:$UPSTREAM_PORT"

# Preflight: every proxy must start, get ready and answer one POST before
# anything is measured, so that a broken build fails in seconds.
for target in "${TARGETS[@]}"; do
    case $target in
    nginx-proxy)
        start_nginx proxy "$SCRIPT_DIR/nginx-proxy.conf" "$PROXY_CPU"
        pid=$STARTED_PID
        wait_ready "nginx proxy" "http://127.0.0.1:$PROXY_PORT/health" "$pid" "$STARTED_LOG"
        sanity_check nginx-proxy "http://127.0.0.1:$PROXY_PORT"
        stop_pid "$pid"
        ;;
    sluice | sluice-pii)
        start_sluice "$target"
        pid=$STARTED_PID
        wait_ready "${LABEL[$target]}" "http://127.0.0.1:$SLUICE_PORT/health" "$pid" "$STARTED_LOG"
        sanity_check "$target" "http://127.0.0.1:$SLUICE_PORT"
        [[ $target != sluice-pii ]] || pii_check
        stop_pid "$pid"
        ;;
    esac
done
log "preflight ok: ${TARGETS[*]}"

for ((round = 1; round <= RUNS; round++)); do
    for target in "${TARGETS[@]}"; do
        case $target in
        direct)
            measure direct "$round" "http://127.0.0.1:$UPSTREAM_PORT"
            ;;
        nginx-proxy)
            start_nginx proxy "$SCRIPT_DIR/nginx-proxy.conf" "$PROXY_CPU"
            pid=$STARTED_PID
            wait_ready "nginx proxy" "http://127.0.0.1:$PROXY_PORT/health" "$pid" "$STARTED_LOG"
            sanity_check nginx-proxy "http://127.0.0.1:$PROXY_PORT"
            measure nginx-proxy "$round" "http://127.0.0.1:$PROXY_PORT" "$pid"
            stop_pid "$pid"
            ;;
        sluice | sluice-pii)
            start_sluice "$target"
            pid=$STARTED_PID
            wait_ready "${LABEL[$target]}" "http://127.0.0.1:$SLUICE_PORT/health" "$pid" "$STARTED_LOG"
            sanity_check "$target" "http://127.0.0.1:$SLUICE_PORT"
            measure "$target" "$round" "http://127.0.0.1:$SLUICE_PORT" "$pid"
            stop_pid "$pid"
            ;;
        esac
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
    echo "- Machine: $NPROC CPUs (nproc), $CPU_MODEL, kernel $(uname -r), $OS_NAME"
    echo "- Rig: upstream nginx (1 worker) and wrk on CPU $LOADGEN_CPU; the proxy under test alone on CPU $PROXY_CPU; each proxy started, measured and stopped alone"
    echo "- Load: wrk $WRK_VER, $THREADS thread(s), $CONNECTIONS connections, $DURATION per measurement ($([[ $WARMUP == 0 ]] && echo "no warm-up" || echo "after a $WARMUP warm-up")), $RUNS round(s) ($mode); \`POST $REQ_PATH\`, ${#BODY}-byte JSON body, \`$AUTH_HEADER\`; answer: 283-byte JSON"
    echo "- nginx: $NGINX_VER; sluice: $SLUICE_DESC"
    echo
    if [[ -n $IDLE_NOTE ]]; then echo "$IDLE_NOTE"; echo; fi
    if ((RUNS > 1)); then echo "Medians over $RUNS rounds."; echo; fi
    echo "| target | req/s | p50 | p99 | req/s vs nginx proxy | added p99 vs direct |"
    echo "|---|---:|---:|---:|---:|---:|"
    for t in "${TARGETS[@]}"; do
        rps=${M_RPS[$t]} p50=${M_P50[$t]} p99=${M_P99[$t]}
        ratio=$(awk -v a="$rps" -v b="${M_RPS[nginx-proxy]}" 'BEGIN { if (a > 0 && b > 0) printf "%.2fx", a / b; else print "n/a" }')
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
        echo "| ${LABEL[$t]}$flag | $(fmt_int "$rps") | $(fmt_us "$p50") | $(fmt_us "$p99") | $ratio | $added |"
    done
    echo
    if [[ -n ${M_RPS[sluice-pii]:-} ]]; then
        awk -v a="${M_RPS[sluice-pii]}" -v b="${M_RPS[sluice]}" 'BEGIN {
            if (a > 0 && b > 0) printf "sluice+pii keeps %.1f%% of sluice'"'"'s own req/s (goal: at least 90%%; %s).\n", 100 * a / b, (a >= 0.9 * b ? "met" : "NOT met")
            else print "sluice+pii vs sluice: n/a (a run measured nothing)."
        }'
        echo
    fi
    for t in "${TARGETS[@]}"; do
        for ((r = 1; r <= RUNS; r++)); do
            k=$t:$r
            if ((${R_NON2XX[$k]:-0} + ${R_SOCKERR[$k]:-0} > 0)); then
                echo "(!) ${LABEL[$t]}, round $r: ${R_NON2XX[$k]} non-2xx/3xx responses and ${R_SOCKERR[$k]} socket errors; its req/s counts them."
            fi
        done
    done
    for ((r = 1; r <= RUNS; r++)); do
        if [[ $PROXY_CPU != "$LOADGEN_CPU" ]] && ((${R_CPU1[direct:$r]:-0} > 15)); then
            echo "(!) CPU $PROXY_CPU was ${R_CPU1[direct:$r]}% busy during the direct run of round $r, when nothing of the rig runs there: other load on the machine skews these figures."
        fi
    done
    echo
    echo "Per round (proxy CPU us/req = CPU time of the proxy process(es) / requests; CPU busy = share of each core in use during the run):"
    echo
    echo "| target | round | req/s | p50 | p99 | non-2xx | socket errors | proxy CPU us/req | CPU $LOADGEN_CPU busy | CPU $PROXY_CPU busy |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    for ((r = 1; r <= RUNS; r++)); do
        for t in "${TARGETS[@]}"; do
            k=$t:$r
            echo "| ${LABEL[$t]} | $r | $(fmt_int "${R_RPS[$k]}") | $(fmt_us "${R_P50[$k]}") | $(fmt_us "${R_P99[$k]}") | ${R_NON2XX[$k]} | ${R_SOCKERR[$k]} | ${R_CPUUS[$k]} | ${R_CPU0[$k]}% | ${R_CPU1[$k]}% |"
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
