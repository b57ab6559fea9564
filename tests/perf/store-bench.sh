#!/usr/bin/env bash
# Workspace lookup throughput and p99 on sled vs PostgreSQL (one and two replicas), with nginx
# serving a static file of the same size as the peer, one run.
# Usage: tests/perf/store-bench.sh [seconds per setup] [concurrent clients]   (default: 5 32)
# Needs the local PostgreSQL (EXTAUTH_TEST_PG_URL overrides postgres://postgres@127.0.0.1:5432/test).
set -euo pipefail
cd "$(dirname "$0")/../.."
# The peer, nginx, and the load generator, wrk (Debian packages), installed when missing and root.
for tool in nginx wrk; do
  if ! command -v "$tool" >/dev/null && ! [ -x "/usr/sbin/$tool" ]; then
    [ "$(id -u)" = 0 ] || { echo "install $tool" >&2; exit 1; }
    apt-get install -y -qq "$tool" >/dev/null || { apt-get update -qq && apt-get install -y -qq "$tool" >/dev/null; }
  fi
done
[ -d tests/idp/node_modules/oidc-provider ] || npm ci --prefix tests/idp --no-audit --no-fund
tests/perf/build-release
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
exec target/release/store-bench "$@"
