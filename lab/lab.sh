#!/usr/bin/env bash
# The Convey test lab: hosts in network namespaces joined by one bridge.
#
#   lab/lab.sh up   PREFIX [BACKENDS]     build a lab (default 3 backends)
#   lab/lab.sh down PREFIX                remove everything named PREFIX-* (idempotent)
#   lab/lab.sh exec PREFIX HOST cmd...    run cmd in host HOST (client, lb, b1.., br)
#
# Namespaces: PREFIX-br (bridge br0 + the bridge-side veth ends), PREFIX-client, PREFIX-lb,
# PREFIX-b1 .. PREFIX-bN. Every host has `lo` and one interface `veth0`:
#   client  10.77.0.10/16  fd77::10/64     routes the VIP via the lb
#   lb      10.77.0.2/16   fd77::2/64
#   bI      10.77.0.(20+I) fd77::(20+I)    holds the VIP on lo, arp_ignore=1, arp_announce=2
# VIP: 10.77.0.100 / fd77::100.
#
# Everything happens inside the lab's namespaces; the root namespace is never changed (the
# veth pairs are created directly inside their namespaces). Checksum offloads and
# TSO/GSO/GRO are off on every veth so the kernel writes real checksums. The bridge-side end
# of every pair runs an XDP_PASS program: on veth, frames sent by XDP_TX from the host side
# only arrive when the receiving end has an XDP program. IPv6 DAD is off.
#
# Silent on success; errors on stderr and a non-zero exit on failure.
set -euo pipefail

LAB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CLANG=${CLANG:-/opt/swift/usr/bin/clang}
[[ -x $CLANG ]] || CLANG=clang

VIP4=10.77.0.100
VIP6=fd77::100
MAX_BACKENDS=200

die() { echo "lab.sh: $*" >&2; exit 1; }

usage() {
    sed -n '2,7p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

check_prefix() {
    local prefix=$1
    [[ $prefix =~ ^[A-Za-z0-9][A-Za-z0-9_]{0,30}$ ]] \
        || die "bad prefix '$prefix' (letters, digits and _ only, at most 31 characters)"
}

# The lab's namespaces that exist now (exact names only, so prefix "cv1" never touches "cv12").
lab_namespaces() {
    local prefix=$1
    ip netns list 2>/dev/null | awk '{print $1}' \
        | grep -E "^${prefix}-(br|client|lb|b[0-9]+)\$" || true
}

# Compiles the XDP_PASS object once (atomically, so concurrent `up`s don't race) and prints its path.
pass_object() {
    local src=$LAB_DIR/xdp_pass.bpf.c
    local cache=${LAB_CACHE:-$LAB_DIR/.cache}
    local obj=$cache/xdp_pass.o
    if [[ ! -s $obj || $src -nt $obj ]]; then
        mkdir -p "$cache"
        local tmp
        tmp=$(mktemp "$cache/xdp_pass.XXXXXX")
        "$CLANG" -O2 -g -target bpf -I/usr/include/x86_64-linux-gnu -c "$src" -o "$tmp" \
            || { rm -f "$tmp"; die "cannot compile $src with $CLANG"; }
        mv -f "$tmp" "$obj"
    fi
    echo "$obj"
}

in_ns() { local ns=$1; shift; ip netns exec "$ns" "$@"; }

quiet_offloads() {
    local ns=$1 dev=$2
    in_ns "$ns" ethtool -K "$dev" tx off rx off tso off gso off gro off >/dev/null 2>&1 \
        || die "ethtool -K $dev in $ns failed"
}

# Common sysctls of a host namespace: no DAD, no router solicitations noise.
host_sysctls() {
    local ns=$1
    in_ns "$ns" sysctl -q -w net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0 \
        net.ipv6.conf.all.dad_transmits=0 net.ipv6.conf.default.dad_transmits=0 >/dev/null
}

# Creates host namespace PREFIX-NAME, its veth0 and the bridge port NAME, and the addresses.
add_host() {
    local prefix=$1 name=$2 v4=$3 v6=$4
    local ns=$prefix-$name br=$prefix-br
    ip netns add "$ns"
    host_sysctls "$ns"
    ip -n "$ns" link set lo up
    ip -n "$br" link add "$name" type veth peer name veth0 netns "$ns"
    ip -n "$br" link set "$name" master br0
    quiet_offloads "$br" "$name"
    quiet_offloads "$ns" veth0
    ip -n "$br" link set "$name" xdpdrv obj "$PASS_OBJ" sec xdp
    ip -n "$br" link set "$name" up
    ip -n "$ns" addr add "$v4/16" dev veth0
    ip -n "$ns" addr add "$v6/64" dev veth0 nodad
    ip -n "$ns" link set veth0 up
}

cmd_up() {
    local prefix=$1 backends=${2:-3}
    check_prefix "$prefix"
    [[ $backends =~ ^[0-9]+$ ]] && (( backends <= MAX_BACKENDS )) \
        || die "backend count must be 0..$MAX_BACKENDS, got '$backends'"
    [[ -z $(lab_namespaces "$prefix") ]] || die "a lab named $prefix exists already (lab.sh down $prefix)"
    PASS_OBJ=$(pass_object)

    # Half-built labs are removed on failure.
    trap 'rc=$?; if (( rc != 0 )); then cmd_down "$prefix" || true; fi; exit $rc' EXIT

    local br=$prefix-br
    ip netns add "$br"
    in_ns "$br" sysctl -q -w net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1 >/dev/null
    ip -n "$br" link set lo up
    ip -n "$br" link add br0 type bridge stp_state 0 forward_delay 0
    ip -n "$br" link set br0 up

    add_host "$prefix" client 10.77.0.10 fd77::10
    add_host "$prefix" lb 10.77.0.2 fd77::2
    local i
    for (( i = 1; i <= backends; i++ )); do
        local ns=$prefix-b$i
        add_host "$prefix" "b$i" "10.77.0.$((20 + i))" "fd77::$((20 + i))"
        ip -n "$ns" addr add "$VIP4/32" dev lo
        ip -n "$ns" addr add "$VIP6/128" dev lo nodad
        in_ns "$ns" sysctl -q -w net.ipv4.conf.all.arp_ignore=1 net.ipv4.conf.all.arp_announce=2 \
            net.ipv4.conf.veth0.arp_ignore=1 net.ipv4.conf.veth0.arp_announce=2 >/dev/null
    done

    ip -n "$prefix-client" route add "$VIP4/32" via 10.77.0.2
    ip -n "$prefix-client" -6 route add "$VIP6/128" via fd77::2
    trap - EXIT
}

cmd_down() {
    local prefix=$1
    check_prefix "$prefix"
    local ns pids
    for ns in $(lab_namespaces "$prefix"); do
        # Processes left in a namespace keep it (and its veths and XDP programs) alive.
        pids=$(ip netns pids "$ns" 2>/dev/null || true)
        if [[ -n $pids ]]; then
            kill -KILL $pids 2>/dev/null || true
        fi
    done
    for ns in $(lab_namespaces "$prefix"); do
        ip netns delete "$ns" 2>/dev/null || true
    done
    [[ -z $(lab_namespaces "$prefix") ]] || die "could not remove: $(lab_namespaces "$prefix" | tr '\n' ' ')"
}

cmd_exec() {
    local prefix=$1 host=$2
    shift 2
    check_prefix "$prefix"
    (( $# > 0 )) || die "exec: no command given"
    ip netns list 2>/dev/null | awk '{print $1}' | grep -qx "$prefix-$host" \
        || die "no host '$host' in lab $prefix"
    exec ip netns exec "$prefix-$host" "$@"
}

(( $# >= 2 )) || usage
case $1 in
    up) shift; (( $# <= 2 )) || usage; cmd_up "$@" ;;
    down) shift; (( $# == 1 )) || usage; cmd_down "$1" ;;
    exec) shift; (( $# >= 3 )) || usage; cmd_exec "$@" ;;
    *) usage ;;
esac
