#!/usr/bin/env bash
# The broker with many users × 3 links on the embedded store (or PostgreSQL with --postgres):
# time to ready, resident memory, lookup latency for random users, 10 000 tokens against one.
# Usage: tests/perf/scale-bench.sh [users] [lookups] [--postgres]   (default: 100000 50000).
set -euo pipefail
cd "$(dirname "$0")/../.."
tests/perf/build-release
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
exec target/release/scale-bench "$@"
