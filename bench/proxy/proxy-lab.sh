#!/usr/bin/env bash
# The proxy benchmark's lab: one network namespace with loopback only, holding the backends
# (iperf3 -s, rrserver) and the three proxies (convey, HAProxy, nginx stream), all with 2
# threads, all idle until measured. A namespace keeps the machine's own loopback, ports and
# sysctls untouched and lets the bench widen the ephemeral port range for conn/s.
#
#   proxy-lab.sh up PREFIX CONVEY_BINARY     start everything (fails if anything does not listen)
#   proxy-lab.sh down PREFIX                 stop everything, remove the namespace (idempotent)
#   proxy-lab.sh bulk PREFIX TARGET SECONDS  iperf3 through TARGET: prints value=<Gbit/s>
#   proxy-lab.sh cps PREFIX TARGET SECONDS   new connections/s through TARGET: prints value=<conn/s>
#   proxy-lab.sh cps-limited PREFIX TARGET SECONDS
#                                            the same with 16 client threads through a server
#                                            limited to 8 connections (convey's max_connections,
#                                            HAProxy's server maxconn), the rest queued
# TARGET: convey | haproxy | nginx | direct (cps-limited: convey | haproxy; nginx queues only
# in NGINX Plus). CPU used per process goes to stderr.
#
# The machine's hard descriptor limit here is 20000, so HAProxy's maxconn is 7000 (it
# reserves 2 fds per connection plus splice pipes) and nginx's worker_connections 8000.
# Ports (in the namespace, 127.0.0.1): backends iperf3 5201, rrserver 8081;
# convey 7001/7002/7003, haproxy 7101/7102/7103, nginx 7201/7202 (bulk/cps/cps-limited);
# convey stats 7999.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
tools=$root/.build/bench-tools
STREAMS=${PROXY_BENCH_STREAMS:-4}     # iperf3 parallel streams
CPS_THREADS=${PROXY_BENCH_CPS_THREADS:-4}
LIMITED_THREADS=${PROXY_BENCH_LIMITED_THREADS:-16}  # cps-limited: clients, twice the server's limit
SERVER_LIMIT=8

die() { echo "proxy-lab: $*" >&2; exit 1; }
ns() { echo "$1-px"; }
state() { echo "/tmp/convey-bench-$1"; }
inns() { local n=$1; shift; ip netns exec "$n" "$@"; }

port_of() { # port_of TARGET KIND
  case $1/$2 in
    convey/bulk) echo 7001 ;; convey/cps) echo 7002 ;; convey/cps-limited) echo 7003 ;;
    haproxy/bulk) echo 7101 ;; haproxy/cps) echo 7102 ;; haproxy/cps-limited) echo 7103 ;;
    nginx/bulk) echo 7201 ;; nginx/cps) echo 7202 ;;
    direct/bulk) echo 5201 ;; direct/cps) echo 8081 ;;
    *) die "unknown target '$1' for $2 (convey|haproxy|nginx|direct; cps-limited: convey|haproxy)" ;;
  esac
}

wait_listening() { # wait_listening NS PORT NAME
  for _ in $(seq 1 100); do
    inns "$1" ss -Hltn "sport = :$2" | grep -q LISTEN && return 0
    sleep 0.1
  done
  die "$3 is not listening on 127.0.0.1:$2 after 10 s (see $(state "${1%-px}")/$3.log)"
}

up() {
  local prefix=$1 convey=$2 n s
  n=$(ns "$prefix"); s=$(state "$prefix")
  [[ -x $convey ]] || die "no convey binary at $convey (swift build -c release --product convey)"
  [[ -x $tools/rrserver && -x $tools/cps ]] || die "tools missing: run bench/build-tools.sh"
  down "$prefix"
  mkdir -p "$s"
  ip netns add "$n"
  inns "$n" ip link set lo up
  # Inside the namespace only: a wide ephemeral range and TIME_WAIT reuse for conn/s.
  inns "$n" sysctl -qw net.ipv4.ip_local_port_range="1024 65000" net.ipv4.tcp_tw_reuse=1
  start() { # start NAME CMD...
    local name=$1; shift
    ip netns exec "$n" "$@" >"$s/$name.log" 2>&1 &
    echo $! >"$s/$name.pid"
  }
  start iperf3 iperf3 -s -B 127.0.0.1 -p 5201
  start rrserver "$tools/rrserver" -t 2 -d 3600 127.0.0.1 8081

  cat >"$s/convey.toml" <<TOML
[frontends.bulk]
listen_addr = "127.0.0.1:7001"
backend = "bulk_pool"
[frontends.rr]
listen_addr = "127.0.0.1:7002"
backend = "rr_pool"
[backends.bulk_pool]
health_check_interval = 5
  [backends.bulk_pool.servers.a]
  addr = "127.0.0.1:5201"
[backends.rr_pool]
health_check_interval = 5
  [backends.rr_pool.servers.a]
  addr = "127.0.0.1:8081"
[frontends.rr_limited]
listen_addr = "127.0.0.1:7003"
backend = "rr_limited_pool"
[backends.rr_limited_pool]
health_check_interval = 5
queue_timeout = 5
  [backends.rr_limited_pool.servers.a]
  addr = "127.0.0.1:8081"
  max_connections = $SERVER_LIMIT
[stats]
port = "7999"
addr = "127.0.0.1"
[proxy]
workers = 2                 # as HAProxy's nbthread and nginx's worker_processes
TOML
  cat >"$s/haproxy.cfg" <<CFG
# HAProxy's documented TCP tuning: 2 threads, kernel splicing, large buffers, no logging.
global
    nbthread 2
    maxconn 7000
    tune.bufsize 131072
    tune.maxrewrite 1024
    pidfile $s/haproxy.pidfile
defaults
    mode tcp
    no log
    option splice-auto
    option dontlognull
    maxconn 7000
    timeout connect 2s
    timeout client 60s
    timeout server 60s
listen bulk
    bind 127.0.0.1:7101
    server a 127.0.0.1:5201
listen rr
    bind 127.0.0.1:7102
    server a 127.0.0.1:8081
listen rr_limited
    bind 127.0.0.1:7103
    timeout queue 5s
    server a 127.0.0.1:8081 maxconn $SERVER_LIMIT
CFG
  cat >"$s/nginx.conf" <<CFG
load_module /usr/lib/nginx/modules/ngx_stream_module.so;
worker_processes 2;
worker_rlimit_nofile 20000;
daemon off;
master_process on;
pid $s/nginx.pidfile;
error_log $s/nginx-error.log warn;
events { worker_connections 8000; multi_accept on; }
stream {
    server { listen 127.0.0.1:7201 reuseport; proxy_pass 127.0.0.1:5201; }
    server { listen 127.0.0.1:7202 reuseport; proxy_pass 127.0.0.1:8081; }
}
CFG
  start haproxy haproxy -db -f "$s/haproxy.cfg"
  start nginx nginx -e "$s/nginx-error.log" -c "$s/nginx.conf"
  start convey bash -c "ulimit -n 20000; exec \"\$0\" --config \"\$1\" --log-level warning" "$convey" "$s/convey.toml"
  wait_listening "$n" 5201 iperf3
  wait_listening "$n" 8081 rrserver
  wait_listening "$n" 7101 haproxy
  wait_listening "$n" 7201 nginx
  wait_listening "$n" 7001 convey
  wait_listening "$n" 7002 convey
  wait_listening "$n" 7003 convey
  wait_listening "$n" 7103 haproxy
}

down() {
  local prefix=$1 n s f pid
  n=$(ns "$prefix"); s=$(state "$prefix")
  if [[ -d $s ]]; then
    for f in "$s"/*.pid; do
      [[ -e $f ]] || continue
      pid=$(cat "$f")
      kill "$pid" 2>/dev/null || true
    done
    sleep 0.3
    for f in "$s"/*.pid; do
      [[ -e $f ]] || continue
      pid=$(cat "$f")
      kill -9 "$pid" 2>/dev/null || true
      rm -f "$f"
    done
  fi
  # Whatever still runs in the namespace (nginx/haproxy children) goes with it.
  if ip netns list | grep -qw "$n"; then
    for pid in $(ip netns pids "$n" 2>/dev/null); do kill -9 "$pid" 2>/dev/null || true; done
    ip netns delete "$n" 2>/dev/null || true
  fi
  return 0
}

# CPU seconds (user + system, all threads) of the processes listed, from /proc.
cpu_of() { local total=0 p t; for p in "$@"; do
    t=$(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0); total=$((total + t)); done
  echo "$total"; }
proxy_pids() { # proxy_pids PREFIX TARGET: pids of the proxy's processes (nginx: master + workers)
  local n s; n=$(ns "$1"); s=$(state "$1")
  case $2 in
    convey|haproxy) cat "$s/$2.pid" ;;
    nginx) pgrep -f "nginx: worker process" | while read -r p; do
             [[ $(ip netns identify "$p" 2>/dev/null) == "$n" ]] && echo "$p"; done ;;
    direct) ;;
  esac
}

report_cpu() { # report_cpu LABEL TICKS SECONDS
  awk -v l="$1" -v t="$2" -v s="$3" -v hz="$(getconf CLK_TCK)" \
    'BEGIN { printf "    cpu %s: %.2f cores\n", l, t / hz / s }' >&2
}

bulk() {
  local prefix=$1 target=$2 seconds=$3 n s port pp c0 b0 json
  n=$(ns "$prefix"); s=$(state "$prefix"); port=$(port_of "$target" bulk)
  pp=$(proxy_pids "$prefix" "$target" | tr '\n' ' ')
  c0=$(cpu_of $pp); b0=$(cpu_of "$(cat "$s/iperf3.pid")")
  json=$(inns "$n" timeout $((seconds + 20)) iperf3 -c 127.0.0.1 -p "$port" -P "$STREAMS" -t "$seconds" -J) \
    || die "iperf3 through $target failed: $(echo "$json" | python3 -c 'import json,sys; print(json.load(sys.stdin).get("error","?"))' 2>/dev/null)"
  [[ -n $pp ]] && report_cpu "$target" $(( $(cpu_of $pp) - c0 )) "$seconds"
  report_cpu "iperf3 server" $(( $(cpu_of "$(cat "$s/iperf3.pid")") - b0 )) "$seconds"
  echo "$json" | python3 -c '
import json, sys
d = json.load(sys.stdin)
if "error" in d:
    sys.exit("proxy-lab: iperf3: " + d["error"])
end = d["end"]
print("value=%.3f" % (end["sum_received"]["bits_per_second"] / 1e9))
print("    iperf3 client cpu %.0f%%, server cpu %.0f%%" % (end["cpu_utilization_percent"]["host_total"], end["cpu_utilization_percent"]["remote_total"]), file=sys.stderr)'
}

cps() { # cps PREFIX TARGET SECONDS [KIND]
  local prefix=$1 target=$2 seconds=$3 kind=${4:-cps} threads=$CPS_THREADS n s port pp c0 b0 out
  [[ $kind == cps-limited ]] && threads=$LIMITED_THREADS
  n=$(ns "$prefix"); s=$(state "$prefix"); port=$(port_of "$target" "$kind")
  pp=$(proxy_pids "$prefix" "$target" | tr '\n' ' ')
  c0=$(cpu_of $pp); b0=$(cpu_of "$(cat "$s/rrserver.pid")")
  out=$(inns "$n" timeout $((seconds + 20)) "$tools/cps" -t "$threads" -d "$seconds" -n 20000000 127.0.0.1 "$port") \
    || die "cps through $target failed: $out"
  [[ -n $pp ]] && report_cpu "$target" $(( $(cpu_of $pp) - c0 )) "$seconds"
  report_cpu "rrserver" $(( $(cpu_of "$(cat "$s/rrserver.pid")") - b0 )) "$seconds"
  echo "$out" | grep '^errors=' | sed 's/^/    /' >&2
  # Through a limited server a client the proxy drops from its queue would only lower the
  # rate: such a sample fails instead.
  if [[ $kind == cps-limited ]] && ! echo "$out" | grep -q '^errors=0$'; then
    die "cps-limited through $target: clients failed ($(echo "$out" | grep '^errors='))"
  fi
  echo "$out" | sed -n 's/^conn_per_s=/value=/p'
}

cmd=${1:-}; shift || true
case $cmd in
  up) [[ $# -eq 2 ]] || die "usage: up PREFIX CONVEY_BINARY"; up "$@" ;;
  down) [[ $# -eq 1 ]] || die "usage: down PREFIX"; down "$@" ;;
  bulk|cps) [[ $# -eq 3 ]] || die "usage: $cmd PREFIX TARGET SECONDS"; "$cmd" "$@" ;;
  cps-limited) [[ $# -eq 3 ]] || die "usage: $cmd PREFIX TARGET SECONDS"; cps "$@" cps-limited ;;
  *) die "usage: proxy-lab.sh up|down|bulk|cps|cps-limited ..." ;;
esac
