#!/usr/bin/env bash
# Refresh storm: concurrent lookups of one expired token; exactly one upstream refresh expected
# at every size, on one broker or (--replicas) two on PostgreSQL.
# Usage: tests/perf/refresh-storm.sh [--replicas] [sizes…]   (default: 500 2000)
set -euo pipefail
cd "$(dirname "$0")/../.."
[ -d tests/idp/node_modules/oidc-provider ] || npm ci --prefix tests/idp --no-audit --no-fund
tests/perf/build-release
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
exec target/release/refresh-storm "$@"
