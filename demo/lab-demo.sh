#!/usr/bin/env bash
# The AF_XDP demo, in a namespace lab (lab/lab.sh): a client, the balancer and three HTTP
# backends on one bridge, 10.77.0.0/16 inside the namespaces only. convey runs in the balancer's
# namespace on its veth0, first in DSR mode, then in passthrough mode; the client fetches from
# the VIP 10.77.0.100:80 and we show who answered, what /stats counted, what /flows tracks, and that the XDP program
# is gone after SIGTERM. Needs root. Never touches the machine's own interfaces.
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
  echo "== SIGTERM"
  kill -TERM "$convey_pid"
  rc=0; wait "$convey_pid" || rc=$?
  echo "convey exited $rc"; convey_pid=""
  if on lb ip link show veth0 | grep -q "xdp"; then echo "XDP program still attached!"; exit 1; fi
  echo "veth0 has no XDP program any more"
}

run_mode dsr examples/lab-dsr.toml
run_mode passthrough examples/lab-passthrough.toml
