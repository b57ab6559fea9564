#!/usr/bin/env bash
# Slow clients against the broker: opens N connections (default 20000) that send nothing, and
# reports the broker's RSS before, while they are open, and after it closed them (header timeout
# HEADER_TIMEOUT, default 60s). Loopback only; every process is stopped by its pid.
#   tests/perf/idle-connections.sh [N]      (uses target/release if built, else target/debug)
#   PARTIAL=1 tests/perf/idle-connections.sh   each sends half a request's headers first
set -euo pipefail
cd "$(dirname "$0")/../.."
n=${1:-20000}
bin=target/release/extauth-broker
[ -x "$bin" ] || bin=target/debug/extauth-broker
hard=$(ulimit -Hn)
if [ "$hard" != unlimited ] && [ $((n + 500)) -gt "$hard" ]; then
  n=$((hard - 500))
  echo "the open-files limit here is $hard: $n connections"
fi
ulimit -n "$hard"
data=$(mktemp -d)
port=$((20000 + RANDOM % 5000))
EXTAUTH_DATA_DIR=$data CODER_HTTP_ADDRESS=127.0.0.1:$port EXTAUTH_HTTP_HEADER_TIMEOUT=${HEADER_TIMEOUT:-60s} \
  EXTAUTH_HTTP_MAX_CONNECTIONS=$((n + 100)) EXTAUTH_LOG=error "$bin" >/dev/null 2>&1 &
broker=$!
trap 'kill $broker 2>/dev/null; rm -rf "$data"' EXIT
sleep 1
rss() { awk '/VmRSS/ {print $2 / 1024 " MB"}' /proc/$broker/status; }
echo "binary: $bin, connections: $n"
echo "RSS at start: $(rss)"
python3 - "$port" "$n" "$broker" "${PARTIAL:-}" <<'PY'
import socket, sys, time
port, n, pid, partial = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
def rss():
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS"):
            return f"{int(line.split()[1]) / 1024:.1f} MB"
socks = []
start = time.time()
for _ in range(n):
    s = socket.create_connection(("127.0.0.1", port))
    if partial:
        # Half a request: the server has read something and waits for the rest.
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
    socks.append(s)
print(f"{n} {'half-sent' if partial else 'silent'} connections open after {time.time() - start:.1f}s, RSS {rss()}")
for s in socks:
    s.settimeout(30)
closed = 0
for s in socks:
    try:
        if s.recv(1) == b"":
            closed += 1
    except OSError:
        closed += 1
print(f"closed by the broker: {closed} of {n}, {time.time() - start:.1f}s after the first connect")
time.sleep(2)
print(f"RSS after they were closed: {rss()}")
for s in socks:
    s.close()
PY
ok=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/healthz")
echo "the broker still answers: $ok"
