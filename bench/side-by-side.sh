#!/usr/bin/env bash
# The side-by-side table: direct upstream, nginx as a plain proxy, sluice with
# no policy, with PII masking and with every policy on, and the peers LiteLLM
# and the Portkey gateway, against the same fixed nginx upstream, on the same
# 2-core rig, in one table. It runs loadtest/compare.sh with the peers
# required (PEERS=1) and 3 interleaved rounds; bench/README.md and
# loadtest/README.md explain the rig, the rows and how to read the report.
#
# Usage:
#   bench/side-by-side.sh --install-peers   # once: LiteLLM and Portkey into PEERS_DIR, then exit
#   bench/side-by-side.sh                   # the full table (about 6 minutes)
#   QUICK=1 RUNS=1 bench/side-by-side.sh    # smoke test: 2 s per row, one round
#   PEERS=auto bench/side-by-side.sh        # leave out a peer that is not installed
#   CACHE_HITS=1 bench/side-by-side.sh      # + a row answered from sluice's cache
#
# Every setting of loadtest/compare.sh passes through (RUNS, DURATION,
# CONNECTIONS, PEER_CONNECTIONS, SKIP_POLICIES, LATENCY_AT_HALF, SLUICE_BIN,
# ports, ...). Here: RUNS=3 and PEERS=1 unless set.
#   PEERS_DIR=<repo>/../peers   where --install-peers installs and compare.sh
#                               looks: $PEERS_DIR/litellm (a Python venv with
#                               litellm[proxy]==1.100.5), $PEERS_DIR/portkey
#                               (npm @portkey-ai/gateway@1.15.2). Never inside
#                               the repository.
#   PYTHON=python3  NPM=npm     used by --install-peers
#
# The sluice binary is not built here: cargo build --release first (or set
# SLUICE_BIN).

set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/.." && pwd)"
PEERS_DIR=${PEERS_DIR:-$REPO_ROOT/../peers}
PYTHON=${PYTHON:-python3}
NPM=${NPM:-npm}
LITELLM_REQ='litellm[proxy]==1.100.5'
PORTKEY_REQ='@portkey-ai/gateway@1.15.2'

log() { printf '[side-by-side] %s\n' "$*" >&2; }
die() {
    printf '[side-by-side] ERROR: %s\n' "$*" >&2
    exit 1
}

usage() { sed -n '2,/^$/p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }

install_peers() {
    mkdir -p "$PEERS_DIR"
    PEERS_DIR=$(cd "$PEERS_DIR" && pwd -P)
    local repo
    repo=$(cd "$REPO_ROOT" && pwd -P)
    [[ $PEERS_DIR != "$repo" && $PEERS_DIR != "$repo"/* ]] ||
        die "PEERS_DIR=$PEERS_DIR is inside the repository; choose a directory outside it"

    # LiteLLM in its own virtualenv (its dependencies pin versions that would
    # clash with other Python tools). Newer LiteLLM releases need a certifi
    # release that the registry mirror here does not serve: keep 1.100.5.
    if [[ -x $PEERS_DIR/litellm/bin/litellm ]]; then
        log "LiteLLM: already in $PEERS_DIR/litellm"
    else
        command -v "$PYTHON" >/dev/null 2>&1 || die "no $PYTHON (Python 3.9+ with venv) to install LiteLLM"
        log "LiteLLM: $PYTHON -m venv $PEERS_DIR/litellm; pip install '$LITELLM_REQ' (a few minutes)"
        "$PYTHON" -m venv "$PEERS_DIR/litellm"
        "$PEERS_DIR/litellm/bin/pip" install --quiet "$LITELLM_REQ"
    fi

    # The Portkey gateway from npm; it runs as
    # node node_modules/@portkey-ai/gateway/build/start-server.js
    if [[ -f $PEERS_DIR/portkey/node_modules/@portkey-ai/gateway/build/start-server.js ]]; then
        log "Portkey: already in $PEERS_DIR/portkey"
    else
        command -v "$NPM" >/dev/null 2>&1 || die "no $NPM (Node.js 18+ with npm) to install the Portkey gateway"
        log "Portkey: npm install $PORTKEY_REQ in $PEERS_DIR/portkey"
        mkdir -p "$PEERS_DIR/portkey"
        (cd "$PEERS_DIR/portkey" && "$NPM" install --no-audit --no-fund "$PORTKEY_REQ")
    fi
    log "installed: $PEERS_DIR/litellm (LiteLLM), $PEERS_DIR/portkey (Portkey); run bench/side-by-side.sh"
}

case ${1:-} in
--install-peers)
    install_peers
    exit 0
    ;;
-h | --help)
    usage
    exit 0
    ;;
"") ;;
*) die "unknown argument '$1' (see --help)" ;;
esac

export PEERS=${PEERS:-1}
export RUNS=${RUNS:-3}
export PEERS_DIR
exec "$REPO_ROOT/loadtest/compare.sh"
