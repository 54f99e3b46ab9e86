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

# shellcheck source=loadtest/failover-rig.sh
source loadtest/failover-rig.sh
start_failover_rig failover

body='{"model":"llama","messages":[{"role":"user","content":"Hello"}]}'
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
