# shellcheck shell=bash
# The failover rig shared by loadtest/failover.sh (oha) and
# loadtest/k6/failover-local.sh (k6): two `sluice mock-upstream` servers
# (gpu-a, gpu-b) behind one sluice worker with retries and a breaker, and
# gpu-a killed with SIGKILL after KILL_AT seconds. Source it, then call
# start_failover_rig; it needs SLUICE_BIN, PORT_A, PORT_B, PORT_GW, KILL_AT
# and leaves `work` (a temp dir) and `pids` (stopped on exit).

# shellcheck disable=SC2317  # invoked by the trap
failover_cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}

start_failover_rig() {
    local tag=$1 pid_a
    work=$(mktemp -d)
    pids=()
    trap failover_cleanup EXIT
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
    ( sleep "$KILL_AT"; kill -9 "$pid_a" 2>/dev/null; echo "[$tag] killed gpu-a at ${KILL_AT}s" >&2 ) &
    pids+=($!)
}
