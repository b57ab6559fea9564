#!/usr/bin/env bash
# The broker with 100 000 users × 3 links on the embedded store: resident memory and lookup
# latency for random users. Usage: tests/perf/scale-bench.sh [users] [lookups]
# (default: 100000 50000).
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --release -q -p extauth-broker -p extauth-tests --bins
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
exec target/release/scale-bench "$@"
