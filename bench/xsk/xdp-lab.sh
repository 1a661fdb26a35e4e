#!/usr/bin/env bash
# The AF_XDP benchmarks' driver, on the project's namespace lab (lab/lab.sh; 3 backends).
#
#   xdp-lab.sh up PREFIX                          build the lab, warm ARP, start health listeners
#   xdp-lab.sh down PREFIX                        stop everything, remove the lab (idempotent)
#   xdp-lab.sh packets PREFIX MODE SECONDS FRAME  generator -> MODE -> sinks: value=<delivered Mpps>
#   xdp-lab.sh tcp PREFIX MODE SECONDS            iperf3 client -> MODE -> b1: value=<Gbit/s>
#
# MODE (what stands in the lb namespace):
#   direct              nothing: the generator addresses backend b1's MAC (packets), or the
#                       client connects to b1's address (tcp)
#   c-reflector         bench/xsk/reflector.c on lb veth0 queue 0 (copy mode); counted at the
#                       client's sink, the frames come back
#   swift-reflector     XSKReflect (the xsk branch's Swift reflector), same place, same count
#   xdp-fwd             fwd.bpf.c: the DSR rewrite in XDP, XDP_TX (the in-kernel ceiling)
#   nft                 nftables DNAT to the backends + SNAT (masquerade to ports 61000-65535),
#                       conntrack, ip_forward=1: the kernel's NAT balancer (full NAT)
#   convey-dsr          .build/release/convey --dsr --iface veth0 --config <generated>, 1 worker
#   convey-passthrough  .build/release/convey --passthrough --iface veth0 ..., 1 worker
#
# The generator (gen.c + gen.bpf.c) runs in the client: live-frames XDP, XDP_TX out of the
# client's veth0, 4096 TCP flows (each a SYN, then ACK|PSH data; for nft data only, see
# packets()) to 10.77.0.100:80 at the lb's MAC. Sinks (sink.bpf.c via xdpload) count and drop the generator's packets at every backend
# (or at the client for reflectors). stderr shows offered vs delivered, so a generator limit
# and losses are visible; stdout's value= is delivered packets / generator seconds.
# Everything stays inside the lab's namespaces.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
tools=$root/.build/bench-tools
LAB=${LAB:-$root/lab/lab.sh}
export LAB_CACHE=${LAB_CACHE:-/tmp/convey-bench-labcache}
CONVEY=${CONVEY:-$root/.build/release/convey}
XSKREFLECT=${XSKREFLECT:-$root/.build/release/XSKReflect}
FLOWS=${XDP_BENCH_FLOWS:-4096}
BACKENDS=3
VIP=10.77.0.100
GEN_NET=10.77.200.0

die() { echo "xdp-lab: $*" >&2; exit 1; }
state() { echo "/tmp/convey-bench-$1"; }
inns() { local n=$1; shift; ip netns exec "$n" "$@"; }
mac_of() { ip -n "$1" -br link show dev veth0 | awk '{print $3}'; }

require_lab() {
  [[ -x $LAB ]] || die "no lab script at $LAB (lab/lab.sh comes with the xsk branch; or set LAB=/path/to/lab.sh)"
}

up() {
  local prefix=$1 s i
  require_lab
  [[ -x $tools/xskgen && -x $tools/xdpload && -x $tools/xskreflector ]] || die "tools missing: run bench/build-tools.sh"
  down "$prefix"
  s=$(state "$prefix"); mkdir -p "$s"
  "$LAB" up "$prefix" "$BACKENDS" || die "lab.sh up $prefix failed"
  for i in $(seq 1 $BACKENDS); do
    # The balancers' health checks connect to port 80 (the sinks let them through).
    # A day at most: long enough for a manual session, yet a listener leaked by a killed
    # script does not outlive it by much.
    ip netns exec "$prefix-b$i" "$tools/rrserver" -t 1 -d 86400 0.0.0.0 80 >"$s/hc-b$i.log" 2>&1 &
    echo $! >"$s/hc-b$i.pid"
    # Warm the neighbour tables (lb -> backends, client -> lb), as health checks would.
    reach "$prefix-lb" "10.77.0.$((20 + i))" 80 || die "lb cannot reach b$i:80"
  done
  reach "$prefix-client" 10.77.0.21 80 || die "client cannot reach b1:80"
}

reach() { # reach NS IP PORT: one TCP connection (fills the neighbour table; no ping installed)
  local try
  for try in 1 2 3 4 5 6 7 8 9 10; do
    inns "$1" timeout 2 bash -c "exec 3<>/dev/tcp/$2/$3" 2>/dev/null && return 0
    sleep 0.2
  done
  return 1
}

down() {
  local prefix=$1 s f
  s=$(state "$prefix")
  if [[ -d $s ]]; then
    for f in "$s"/*.pid; do [[ -e $f ]] && kill "$(cat "$f")" 2>/dev/null || true; done
    rm -rf "$s"
  fi
  if [[ -x $LAB ]]; then
    "$LAB" down "$prefix" >/dev/null 2>&1 || "$LAB" down "$prefix"
  elif ip netns list | grep -q "^$prefix-"; then
    die "no lab script at $LAB to remove the namespaces $prefix-* (set LAB=/path/to/lab.sh)"
  fi
  return 0
}

wait_file() { # wait_file FILE PID WHAT [LOG]: LOG's last lines are shown if PID exits first
  for _ in $(seq 1 100); do
    [[ -e $1 ]] && return 0
    kill -0 "$2" 2>/dev/null || die "$3 exited before it was ready${4:+: $(tail -3 "$4" 2>/dev/null | tr '\n' ' ')}"
    sleep 0.05
  done
  die "$3 not ready after 5 s"
}

convey_config() { # convey_config FILE PORT SERVERS...
  local file=$1 port=$2; shift 2
  {
    echo "[frontends.vip]"
    echo "listen_addr = \"$VIP:$port\""
    echo "backend = \"pool\""
    echo "[backends.pool]"
    echo "health_check_interval = 1"
    echo "rise = 1"
    local n=0 server
    for server in "$@"; do
      n=$((n + 1))
      echo "  [backends.pool.servers.s$n]"
      echo "  addr = \"$server\""
    done
    echo "[stats]"
    echo "port = \"7999\""
    echo "addr = \"127.0.0.1\""
    echo "[passthrough]"
    echo "workers = 1"
    echo "[xdp]"
    echo "iface = \"veth0\""
  } >"$file"
}

nft_rules() { # nft_rules PORT SERVER_IPS...  (full NAT: DNAT round robin + masquerade)
  local port=$1; shift
  local map="" i=0 ip
  for ip in "$@"; do map+="${map:+, }$i : $ip"; i=$((i + 1)); done
  cat <<NFT
table ip cvbench {
  chain pre {
    type nat hook prerouting priority dstnat; policy accept;
    ip daddr $VIP tcp dport $port dnat to numgen inc mod $# map { $map }
  }
  chain post {
    type nat hook postrouting priority srcnat; policy accept;
    ct status dnat meta l4proto tcp masquerade to :61000-65535
  }
}
NFT
}

# start_balancer PREFIX MODE KIND SECONDS: starts MODE in the lb namespace; echoes nothing.
start_balancer() {
  local prefix=$1 mode=$2 kind=$3 seconds=$4 s lb port servers=() i pid
  s=$(state "$prefix"); lb=$prefix-lb
  port=$([[ $kind == packets ]] && echo 80 || echo 5201)
  if [[ $kind == packets ]]; then
    for i in $(seq 1 $BACKENDS); do servers+=("10.77.0.$((20 + i)):$port"); done
  else
    servers=("10.77.0.21:$port")   # iperf3 needs its control and data connections on one server
  fi
  rm -f "$s/ready"
  case $mode in
    direct) ;;
    c-reflector)
      # libxdp wants a bpffs; `ip netns exec` gives the command its own /sys without one
      # (without it the reflector spins or exits before it is ready). Mounted in that private
      # mount namespace only: the machine's own mounts are untouched.
      ip netns exec "$lb" sh -c 'mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf; exec "$@"' reflector \
        "$tools/xskreflector" --iface veth0 --queue 0 --seconds $((seconds + 10)) --ready "$s/ready" \
        >"$s/balancer.out" 2>"$s/balancer.log" &
      pid=$!; echo $pid >"$s/balancer.pid"; wait_file "$s/ready" $pid "the C reflector" "$s/balancer.log" ;;
    swift-reflector)
      [[ -x $XSKREFLECT ]] || die "no XSKReflect at $XSKREFLECT (swift build -c release --product XSKReflect on the xsk branch)"
      ip netns exec "$lb" "$XSKREFLECT" --iface veth0 --queue 0 --seconds $((seconds + 10)) --vip "$VIP:80" \
        >"$s/balancer.out" 2>"$s/balancer.log" &
      pid=$!; echo $pid >"$s/balancer.pid"; sleep 2
      kill -0 $pid 2>/dev/null || die "XSKReflect exited: $(tail -3 "$s/balancer.log")" ;;
    xdp-fwd)
      local macs=()
      for i in $(seq 1 $BACKENDS); do macs+=(--backend-mac "$(mac_of "$prefix-b$i")"); done
      ip netns exec "$lb" "$tools/xdpload" fwd --obj "$tools/fwd.bpf.o" --iface veth0 --vip "$VIP:$port" "${macs[@]}" \
        --seconds $((seconds + 10)) --ready "$s/ready" >"$s/balancer.out" 2>"$s/balancer.log" &
      pid=$!; echo $pid >"$s/balancer.pid"; wait_file "$s/ready" $pid "the XDP forwarder" ;;
    nft)
      local ips=("${servers[@]%:*}")
      inns "$lb" sysctl -qw net.ipv4.ip_forward=1 net.ipv4.conf.all.send_redirects=0 net.ipv4.conf.veth0.send_redirects=0
      nft_rules "$port" "${ips[@]}" | inns "$lb" nft -f - || die "nft rules rejected"
      # The NAT ports (61000-65535 towards each backend: 3 x 4536 tuples) ran out after three
      # samples of 4096 flows (measured: 32%, then 0% delivered), since established entries
      # live for days. In the lb namespace they now expire after 5 s idle; an expired entry's
      # tuple is reused at once (measured: 100% delivered with 11873 old entries present).
      # TCP runs keep the kernel's default (iperf3's idle control connection must survive).
      inns "$lb" sysctl -qw net.netfilter.nf_conntrack_tcp_timeout_established=$([[ $kind == packets ]] && echo 5 || echo 432000)
      ;;
    convey-dsr|convey-passthrough)
      [[ -x $CONVEY ]] || die "no convey at $CONVEY (swift build -c release --product convey)"
      convey_config "$s/convey.toml" "$port" "${servers[@]}"
      local flag=--${mode#convey-}
      ip netns exec "$lb" "$CONVEY" "$flag" --iface veth0 --config "$s/convey.toml" \
        --log-level "$([[ -n ${XDP_BENCH_TAKEOVER_AT:-} ]] && echo notice || echo warning)" \
        >"$s/balancer.out" 2>"$s/balancer.log" &
      pid=$!; echo $pid >"$s/balancer.pid"
      for _ in $(seq 1 60); do
        kill -0 $pid 2>/dev/null || die "convey $flag did not start: $(tail -3 "$s/balancer.log" | tr '\n' ' ')"
        inns "$lb" curl -sf -o /dev/null --max-time 1 http://127.0.0.1:7999/stats && break
        sleep 0.25
      done
      inns "$lb" curl -sf -o /dev/null --max-time 1 http://127.0.0.1:7999/stats \
        || die "convey $flag: no /stats after 15 s: $(tail -3 "$s/balancer.log" | tr '\n' ' ')"
      sleep 2 # health checks: rise 1 at a 1 s interval
      ;;
    *) die "unknown mode '$mode'" ;;
  esac
}

stop_balancer() { # stop_balancer PREFIX MODE: stops it, prints its output (counters) on stderr
  local prefix=$1 mode=$2 s pid
  s=$(state "$prefix")
  if [[ -e $s/balancer.pid ]]; then
    pid=$(cat "$s/balancer.pid")
    # convey drains its open flows on SIGTERM (the generator's flows never close); SIGQUIT stops it
    # at once, its XDP program detached, as the next mode needs the interface.
    if [[ $mode == convey-* ]]; then kill -QUIT "$pid" 2>/dev/null || true; else kill -TERM "$pid" 2>/dev/null || true; fi
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
    if kill -0 "$pid" 2>/dev/null; then
      echo "    $mode: still running 5 s after it was told to stop; killed" >&2
      kill -KILL "$pid" 2>/dev/null || true
    fi
    local rc=0
    wait "$pid" 2>/dev/null || rc=$?
    rm -f "$s/balancer.pid"
    # A reflector that ends with an error before it is stopped has no rate worth reporting.
    if [[ $mode == *-reflector && $rc -ne 0 && $rc -ne 143 ]]; then
      balancer_failure="$mode exited with status $rc: $(tail -2 "$s/balancer.log" | tr '\n' ' ')"
    fi
    [[ -s $s/balancer.out ]] && echo "    $mode: $(tr '\n' ' ' <"$s/balancer.out")" >&2
    # A program left on the lb's veth0 (a killed process) would keep the next mode off it.
    if [[ $(ip -n "$prefix-lb" link show veth0 2>/dev/null) == *prog/xdp* ]]; then
      ip -n "$prefix-lb" link set veth0 xdp off 2>/dev/null || true
      ip -n "$prefix-lb" link set veth0 xdpgeneric off 2>/dev/null || true
      if [[ $(ip -n "$prefix-lb" link show veth0 2>/dev/null) == *prog/xdp* ]]; then
        echo "    $mode: left an XDP program on the lb's veth0 that could not be removed" >&2
      else
        echo "    $mode: left an XDP program on the lb's veth0; removed" >&2
      fi
    fi
  fi
  if [[ $mode == nft ]]; then
    local conntrack
    conntrack=$(inns "$prefix-lb" cat /proc/sys/net/netfilter/nf_conntrack_count 2>/dev/null || echo "?")
    echo "    nft: $conntrack conntrack entries" >&2
    inns "$prefix-lb" nft delete table ip cvbench 2>/dev/null || true
    inns "$prefix-lb" sysctl -qw net.ipv4.ip_forward=0
  fi
  return 0
}

packets() {
  local prefix=$1 mode=$2 seconds=$3 frame=$4 s lb_mac dst_mac hosts=() h pids=() out total=0 offered gen_seconds
  s=$(state "$prefix")
  [[ -d $s ]] || die "no lab $prefix (xdp-lab.sh up $prefix)"
  [[ $frame =~ ^[0-9]+$ ]] && (( frame >= 60 && frame <= 1514 )) || die "frame size 60..1514"
  lb_mac=$(mac_of "$prefix-lb")
  case $mode in
    c-reflector|swift-reflector) hosts=(client) ;;
    *) for h in $(seq 1 $BACKENDS); do hosts+=("b$h"); done ;;
  esac
  dst_mac=$lb_mac
  [[ $mode == direct ]] && { dst_mac=$(mac_of "$prefix-b1"); hosts=(b1); }
  trap 'stop_balancer "$prefix" "$mode"; for p in "${pids[@]}"; do kill $p 2>/dev/null || true; done' EXIT
  for h in "${hosts[@]}"; do
    rm -f "$s/sink-$h.ready"
    ip netns exec "$prefix-$h" "$tools/xdpload" sink --obj "$tools/sink.bpf.o" --iface veth0 --port 80 --net $GEN_NET \
      --min-nat-port 61000 --seconds $((seconds + 30)) --ready "$s/sink-$h.ready" >"$s/sink-$h.out" 2>"$s/sink-$h.log" &
    pids+=($!)
    wait_file "$s/sink-$h.ready" $! "the sink in $h"
  done
  start_balancer "$prefix" "$mode" packets "$seconds"
  # nftables gets established data only: after a SYN whose SYN-ACK it never saw, conntrack
  # rightly calls a flow's later data INVALID and does not NAT it (measured: 0.4% delivered),
  # while data-only flows are picked up mid-stream (nf_conntrack_tcp_loose) as ESTABLISHED.
  # Every sample uses new source addresses: an entry left by an earlier sample (SYN_SENT,
  # unreplied) would make the new packets INVALID too (measured: 0 delivered). With that, live
  # frames are DNATed fine. XDP_BENCH_NFT_AFPACKET=1 sends them as ordinary skbs instead.
  local traffic=() src=10.77.200.1
  if [[ $mode == nft ]]; then
    local n=$(( $(cat "$s/nft-runs" 2>/dev/null || echo 0) + 1 ))
    echo $n >"$s/nft-runs"
    src=10.77.$((201 + n % 50)).1
    traffic=(--data-only)
    [[ ${XDP_BENCH_NFT_AFPACKET:-0} == 1 ]] && traffic+=(--afpacket)
  fi
  # XDP_BENCH_TAKEOVER_AT=SECONDS (convey modes): a second convey takes the first one's place
  # (--takeover) that far into the run; the sinks then count what got through it.
  local takeover_at=${XDP_BENCH_TAKEOVER_AT:-}
  if [[ -n $takeover_at && $mode == convey-* ]]; then
    ( sleep "$takeover_at"
      ip netns exec "$prefix-lb" "$CONVEY" "--${mode#convey-}" --iface veth0 --config "$s/convey.toml" --takeover \
        --log-level notice >"$s/balancer.out" 2>"$s/takeover.log" &
      echo $! >"$s/balancer.pid" ) &
  fi
  out=$(inns "$prefix-client" "$tools/xskgen" --obj "$tools/gen.bpf.o" --iface veth0 --dst-mac "$dst_mac" \
        --dst $VIP --dport 80 --src "$src" --sport 10000 --flows "$FLOWS" --size "$frame" --seconds "$seconds" \
        "${traffic[@]}") \
    || die "generator failed"
  sleep 0.3 # in-flight frames
  if [[ -n $takeover_at && $mode == convey-* ]]; then
    grep -h "takeover:" "$s/balancer.log" "$s/takeover.log" 2>/dev/null | sed 's/^/    /' >&2 || true
  fi
  balancer_failure=""
  stop_balancer "$prefix" "$mode"
  [[ -z $balancer_failure ]] || die "$balancer_failure"
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  trap - EXIT
  offered=$(sed -n 's/^offered=//p' <<<"$out"); gen_seconds=$(sed -n 's/^seconds=//p' <<<"$out")
  local per=""
  for h in "${hosts[@]}"; do
    local got
    got=$(sed -n 's/^packets=//p' "$s/sink-$h.out")
    [[ -n $got ]] || die "the sink in $h printed nothing: $(cat "$s/sink-$h.log")"
    per+=" $h=$got"; total=$((total + got))
  done
  python3 -c '
import sys
mode, frame, offered, delivered, seconds, per = sys.argv[1:7]
o, d, t = int(offered), int(delivered), float(seconds)
print("    %s, %s-byte frames: offered %.3f Mpps, delivered %.3f Mpps (%.1f%%);%s"
      % (mode, frame, o / t / 1e6, d / t / 1e6, 100.0 * d / o if o else 0, per), file=sys.stderr)
print("value=%.4f\noffered_mpps=%.4f" % (d / t / 1e6, o / t / 1e6))' "$mode" "$frame" "$offered" "$total" "$gen_seconds" "$per"
}

tcp() {
  local prefix=$1 mode=$2 seconds=$3 s target json srv
  s=$(state "$prefix")
  [[ -d $s ]] || die "no lab $prefix (xdp-lab.sh up $prefix)"
  # Not one-off (-1): convey's health checks connect to this port too, and a one-off
  # server would take the first check for its test and exit.
  ip netns exec "$prefix-b1" iperf3 -s -p 5201 >"$s/iperf3-s.log" 2>&1 &
  srv=$!
  trap 'stop_balancer "$prefix" "$mode"; kill $srv 2>/dev/null || true' EXIT
  target=$VIP; [[ $mode == direct ]] && target=10.77.0.21
  start_balancer "$prefix" "$mode" tcp "$seconds"
  sleep 0.2
  json=$(inns "$prefix-client" timeout $((seconds + 20)) iperf3 -c "$target" -p 5201 -P 4 -t "$seconds" -J) || true
  stop_balancer "$prefix" "$mode"
  kill $srv 2>/dev/null || true; wait $srv 2>/dev/null || true
  trap - EXIT
  python3 -c '
import json, sys
try:
    d = json.loads(sys.argv[1])
except ValueError:
    sys.exit("xdp-lab: iperf3 printed no JSON")
if "error" in d:
    sys.exit("xdp-lab: iperf3 via %s: %s" % (sys.argv[2], d["error"]))
e = d["end"]
print("    %s: %.2f Gbit/s, retransmits %s, client cpu %.0f%%" % (sys.argv[2], e["sum_received"]["bits_per_second"] / 1e9,
      e["sum_sent"].get("retransmits", "?"), e["cpu_utilization_percent"]["host_total"]), file=sys.stderr)
print("value=%.4f" % (e["sum_received"]["bits_per_second"] / 1e9))' "$json" "$mode"
}

cmd=${1:-}; shift || true
case $cmd in
  up) [[ $# -eq 1 ]] || die "usage: up PREFIX"; up "$1" ;;
  down) [[ $# -eq 1 ]] || die "usage: down PREFIX"; down "$1" ;;
  packets) [[ $# -eq 4 ]] || die "usage: packets PREFIX MODE SECONDS FRAME"; packets "$@" ;;
  tcp) [[ $# -eq 3 ]] || die "usage: tcp PREFIX MODE SECONDS"; tcp "$@" ;;
  *) die "usage: xdp-lab.sh up|down|packets|tcp ..." ;;
esac
