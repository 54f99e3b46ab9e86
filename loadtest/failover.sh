#!/usr/bin/env bash
# Failover under load: two mock model servers behind sluice, steady load
# with oha, one server killed mid-run. Reports what clients saw: status
# codes and errors. With retries on, only requests in flight on the killed
# server at that instant may fail.
#
#   loadtest/failover.sh                 # 10 s, 16 connections, kill at 3 s
#   DURATION=20 KILL_AT=5 CONNECTIONS=32 loadtest/failover.sh
#   SLUICE_BIN=target/release/sluice (default)
set -euo pipefail
cd "$(dirname "$0")/.."
SLUICE_BIN=${SLUICE_BIN:-target/release/sluice}
DURATION=${DURATION:-10}
KILL_AT=${KILL_AT:-3}
CONNECTIONS=${CONNECTIONS:-16}
PORT_A=${PORT_A:-28101}
PORT_B=${PORT_B:-28102}
PORT_GW=${PORT_GW:-28100}
OHA=$(command -v oha || echo "$HOME/.cargo/bin/oha")
[[ -x $SLUICE_BIN ]] || { echo "failover: $SLUICE_BIN missing (cargo build --release)" >&2; exit 2; }
[[ -x $OHA ]] || { echo "failover: oha missing (cargo install oha --locked)" >&2; exit 2; }

work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
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

body='{"model":"llama","messages":[{"role":"user","content":"Hello"}]}'
( sleep "$KILL_AT"; kill -9 "$pid_a"; echo "[failover] killed gpu-a at ${KILL_AT}s" >&2 ) &
"$OHA" -z "${DURATION}s" -c "$CONNECTIONS" --no-tui -m POST -H 'content-type: application/json' \
    -d "$body" "http://127.0.0.1:$PORT_GW/v1/chat/completions" > "$work/oha.txt"
echo "# failover: $DURATION s, $CONNECTIONS connections, gpu-a killed at ${KILL_AT}s"
grep -E "Success rate|Requests/sec" "$work/oha.txt" || true
echo "## status codes seen by clients"
sed -n '/Status code distribution/,/^$/p' "$work/oha.txt" | tail -n +2
echo "## client-side errors"
sed -n '/Error distribution/,/^$/p' "$work/oha.txt" | tail -n +2 || true
echo "## sluice"
grep -E "circuit|retry" "$work/sluice.log" | head -5 || true
