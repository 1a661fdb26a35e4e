#!/usr/bin/env bash
# The AF_XDP demo, in a namespace lab (lab/lab.sh): a client, the balancer and three HTTP
# backends on one bridge, 10.77.0.0/16 inside the namespaces only. convey runs in the balancer's
# namespace on its veth0, first in DSR mode, then in passthrough mode; the client fetches from
# the VIP 10.77.0.100:80 and we show who answered, what /stats counted, what /flows tracks, a new
# convey taking the running one's place under load (passthrough), and that the XDP program is gone
# after SIGTERM. Needs root. Never touches the machine's own interfaces.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=$(realpath "${CONVEY:-.build/release/convey}")
LAB=lab/lab.sh
P=cvdemo$$
work=$(mktemp -d)
convey_pid=""
backend_pids=()
cleanup() {
  [ -n "$convey_pid" ] && kill -TERM "$convey_pid" 2>/dev/null && wait "$convey_pid" 2>/dev/null || true
  for p in "${backend_pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  "$LAB" down "$P" || true
  rm -rf "$work"
}
trap cleanup EXIT INT TERM

if [ "$(id -u)" != 0 ]; then
  echo "lab-demo: the AF_XDP demo needs root (network namespaces, XDP); skipped" >&2
  exit 0
fi

on() { local host=$1; shift; "$LAB" exec "$P" "$host" "$@"; }

echo "== building the lab ($P: client, lb, b1..b3 on one bridge)"
"$LAB" up "$P" 3
for i in 1 2 3; do
  mkdir -p "$work/b$i"; echo "hello from backend b$i (10.77.0.2$i)" > "$work/b$i/index.html"
  # Backends listen on every address, the VIP on lo included (DSR needs that).
  "$LAB" exec "$P" "b$i" python3 -m http.server 80 --bind 0.0.0.0 --directory "$work/b$i" >/dev/null 2>&1 &
  backend_pids+=($!)
done
for i in 1 2 3; do
  for _ in $(seq 100); do on client curl -fs -o /dev/null --max-time 1 "http://10.77.0.2$i/" && break; sleep 0.1; done
done

run_mode() {
  local mode=$1 config=$2
  echo
  echo "== convey --$mode --iface veth0 --config $config (in the balancer's namespace)"
  "$LAB" exec "$P" lb "$BIN" "--$mode" --iface veth0 --config "$config" --log-level notice &
  convey_pid=$!
  # Ready when the stats answer and every backend's MAC is known (the first health checks).
  for _ in $(seq 100); do
    on lb curl -fs http://127.0.0.1:7000/stats 2>/dev/null | grep -q '"unresolved_servers": \[\]' && break
    sleep 0.1
  done
  echo "== 12 requests from the client to the VIP 10.77.0.100:80"
  for _ in $(seq 12); do
    on client curl -fs --max-time 2 "http://10.77.0.100/" || echo "request failed"
  done | sort | uniq -c
  sleep 1.2  # counters are folded into /stats every stats_update_frequency (1 s here)
  echo "== /stats (excerpt)"
  on lb curl -fs http://127.0.0.1:7000/stats | python3 -c '
import json, sys
d = json.load(sys.stdin)
print("mode:", d["mode"], " total_connections:", d["total_connections"])
for name, pool in d["backends"].items():
    print("pool", name, "servers:", pool["servers"])
dp = d.get("dataplane", {})
t = dp.get("totals", {})
print("dataplane: iface", dp.get("interface"), "attach", dp.get("attach_mode"), "zero_copy", dp.get("zero_copy"),
      "nat", dp.get("nat", "-"))
print("  packets rx", t.get("rx_packets"), "tx", t.get("tx_packets"), " flows created", t.get("flows_created"),
      "active", t.get("flows_active"), " drops", {k: v for k, v in t.get("drops", {}).items() if v} or "none")
'
  echo "== /flows?limit=3 (the connections the worker tracks; curl closed them, so they are closing)"
  on lb curl -fs 'http://127.0.0.1:7000/flows?limit=3' | python3 -c '
import json, sys
d = json.load(sys.stdin)
print("matched:", d["matched"])
for f in d["flows"]:
    print(" ", f["client"], "->", f["server"], f["backend"], f["state"], "nat " + f["nat"] if "nat" in f else "")
'
  [ "$mode" = passthrough ] && takeover_under_load "$mode" "$config"
  echo "== SIGTERM"
  kill -TERM "$convey_pid"
  rc=0; wait "$convey_pid" || rc=$?
  echo "convey exited $rc"; convey_pid=""
  if on lb ip link show veth0 | grep -q "xdp"; then echo "XDP program still attached!"; exit 1; fi
  echo "veth0 has no XDP program any more"
}

xdp_prog_id() { on lb ip -d link show veth0 | sed -n 's/.*prog\/xdp id \([0-9]*\).*/\1/p'; }

# A new convey takes the running one's place (--takeover; SIGUSR2 does the same in place)
# while a download is in flight and requests keep coming: the flows and their NAT ports are
# carried over, the XDP program is swapped without a gap, and nothing breaks.
takeover_under_load() {
  local mode=$1 config=$2 old=$convey_pid before after rc
  echo "== replacing convey under load: a 4 MiB download at 1 MiB/s and a request every 0.1 s"
  head -c 4194304 /dev/urandom > "$work/big"
  for i in 1 2 3; do cp "$work/big" "$work/b$i/big"; done
  on client curl -fs --limit-rate 1M -o "$work/got" "http://10.77.0.100/big" &
  local download=$!
  ( failed=0
    for _ in $(seq 30); do on client curl -fs -o /dev/null --max-time 2 "http://10.77.0.100/" || failed=$((failed + 1)); sleep 0.1; done
    echo "$failed" > "$work/failed" ) &
  local requests=$!
  sleep 1
  before=$(xdp_prog_id)
  echo "== convey --$mode --iface veth0 --config $config --takeover (pid $old is serving, XDP program $before)"
  "$LAB" exec "$P" lb "$BIN" "--$mode" --iface veth0 --config "$config" --takeover --log-level notice &
  convey_pid=$!
  rc=0; wait "$old" || rc=$?
  after=$(xdp_prog_id)
  echo "the old convey exited $rc; the new one (pid $convey_pid) serves with XDP program $after"
  wait "$download" || { echo "the download broke!"; exit 1; }
  wait "$requests"
  if cmp -s "$work/got" "$work/big"; then echo "download: 4 MiB, byte-exact across the takeover"; else echo "download differs!"; exit 1; fi
  echo "requests during the takeover: $((30 - $(cat "$work/failed")))/30 answered"
  [ "$(cat "$work/failed")" = 0 ] || exit 1
  [ "$rc" = 0 ] && [ -n "$after" ] && [ "$after" != "$before" ] || { echo "takeover did not happen as expected"; exit 1; }
}

run_mode dsr examples/lab-dsr.toml
run_mode passthrough examples/lab-passthrough.toml
