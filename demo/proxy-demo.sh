#!/usr/bin/env bash
# The proxy-mode demo: two small HTTP backends on loopback, convey in front of them
# (examples/proxy.toml: weights 3:1), a few requests through it, the stats it kept and the
# connections it holds, then a replacement in place (SIGUSR2, as for a new binary) under a
# client loop. Needs no privileges. Everything it starts is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${CONVEY:-.build/release/convey}
CONFIG=examples/proxy.toml
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT INT TERM

for b in a:9001 b:9002; do
  name=${b%%:*}; port=${b##*:}
  mkdir -p "$work/$name"; echo "hello from backend $name ($port)" > "$work/$name/index.html"
  python3 -m http.server "$port" --bind 127.0.0.1 --directory "$work/$name" >/dev/null 2>&1 &
  pids+=($!)
done

for port in 9001 9002; do
  for _ in $(seq 100); do curl -fs -o /dev/null "http://127.0.0.1:$port/" && break; sleep 0.1; done
done

echo "== convey --check"
"$BIN" --check --config "$CONFIG" | head -12
echo "..."
echo "== starting convey (proxy mode, $CONFIG)"
"$BIN" --config "$CONFIG" --log-level notice > >(tee "$work/convey.log") 2>&1 &
pids+=($!)
for _ in $(seq 50); do curl -fs -o /dev/null http://127.0.0.1:7000/stats && break; sleep 0.1; done

echo "== 8 requests through 127.0.0.1:8080 (weights a:b = 3:1)"
for _ in $(seq 8); do curl -fs --max-time 2 http://127.0.0.1:8080/ || echo "request failed"; done | sort | uniq -c
echo "== /stats (seed keys + detail)"
curl -fs http://127.0.0.1:7000/stats | head -40
echo "== /metrics (excerpt)"
curl -fs http://127.0.0.1:7000/metrics | grep -E '^convey_(frontend_connections_total|server_connections_total|server_up)' || true
echo "== the page for people: http://127.0.0.1:7000/ (while convey runs)"
echo "== /flows while one client holds a connection open"
exec 3<>/dev/tcp/127.0.0.1/8080
sleep 0.2
curl -fs http://127.0.0.1:7000/flows | head -20
exec 3<&-
old=${pids[-1]}
echo "== replacing convey in place (SIGUSR2: the binary at its path takes the listening sockets over) under a client loop"
failed=0
( for _ in $(seq 300); do curl -fs --max-time 2 -o /dev/null http://127.0.0.1:8080/ || echo x; done > "$work/loop" ) &
loop=$!
sleep 0.3
kill -USR2 "$old"
wait "$old" && echo "the old convey (pid $old) exited 0 once the new one listened"
wait "$loop"
failed=$(wc -l < "$work/loop")
echo "client loop: 300 requests, $failed failed"
new=$(sed -n 's/.*SIGUSR2: started .* (pid \([0-9]*\)).*/\1/p' "$work/convey.log" | head -1)
pids+=("$new")
echo "== stopping the new convey (pid $new, SIGTERM)"
kill -TERM "$new"
for _ in $(seq 100); do kill -0 "$new" 2>/dev/null || break; sleep 0.1; done
kill -0 "$new" 2>/dev/null && echo "convey still running" || echo "convey stopped"
