#!/usr/bin/env bash
# /oauth2/tokens throughput (client credentials): extauth vs oidc-provider, one run.
# Usage: tests/perf/token-bench.sh [seconds per run] [connections]   (default: 5 16)
set -euo pipefail
cd "$(dirname "$0")/../.."
# The load generator: wrk (Debian package), installed when missing and root.
if ! command -v wrk >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  apt-get install -y -qq wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
fi
[ -d tests/idp/node_modules/oidc-provider ] || npm ci --prefix tests/idp --no-audit --no-fund
tests/perf/build-release
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
exec target/release/token-bench "$@"
