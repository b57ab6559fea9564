#!/usr/bin/env bash
# `git credential fill` latency: extauth (broker on loopback) vs git credential-store vs
# git-credential-oauth (cache warm) vs gh, in one run of interleaved rounds. Usage: [runs] (default 300).
# EXTAUTH_BENCH_OUT=dir also writes dir/credential.json (every sample; tests/perf/run-all uses it).
# EXTAUTH_BENCH_BASELINE_HELPER=/path/to/an/older/git-credential-extauth adds that build to the run.
set -euo pipefail
cd "$(dirname "$0")/../.."
missing=()
for tool in git-credential-oauth gh; do command -v "$tool" >/dev/null || missing+=("$tool"); done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then apt-get install -y -qq "${missing[@]}" >/dev/null; else echo "install: ${missing[*]}" >&2; exit 1; fi
fi
[ -d tests/idp/node_modules/oidc-provider ] || npm ci --prefix tests/idp --no-audit --no-fund
tests/perf/build-release
exec target/release/credential-bench "$@"
