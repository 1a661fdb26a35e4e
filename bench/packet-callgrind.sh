#!/usr/bin/env bash
# Instructions per packet of the userspace packet path (parse, flow lookup, rewrite, checksum),
# counted by callgrind: `ConveyBench --packet-loop MODE FLOWS N` runs the same setup and then N
# established-flow frames, in batches of 64 through the forwarder's `handle(batch:verdicts:)`,
# the function the XSK worker calls. Only instructions inside that function (and what it calls)
# are counted, so the benchmark's own loop and the passthrough frame restore are not; two runs
# with different N cancel the setup's frames, so
#   instructions/packet = (Ir(N2) - Ir(N1)) / (N2 - N1).
# Not counted: the expiry sweep, which runs per batch and is paced by the clock (a whole table
# every ForwarderSettings.fullSweepInterval), not by packets.
#
#   swift build -c release --product ConveyBench && bench/packet-callgrind.sh
#   FLOWS=65536 N1=100000 N2=300000 BIN=.build/release/ConveyBench bench/packet-callgrind.sh
# Goal: at most 150 instructions per established-flow packet. Needs valgrind (Debian: valgrind).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.build/release/ConveyBench}
FLOWS=${FLOWS:-60000}
N1=${N1:-100000}
N2=${N2:-300000}
command -v valgrind >/dev/null || { echo "packet-callgrind: valgrind is not installed (apt-get install valgrind)" >&2; exit 1; }
[ -x "$BIN" ] || { echo "packet-callgrind: $BIN missing; run: swift build -c release --product ConveyBench" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# Valgrind cannot read the Swift toolchain's DWARF ("possibly corrupted debuginfo"): count on a
# copy without debug sections (symbols stay, so callgrind_annotate still names functions).
objcopy --strip-debug "$BIN" "$tmp/ConveyBench"
BIN="$tmp/ConveyBench"

# Total instructions (Ir) of one run.
ir() {
    local mode=$1 n=$2 out="$tmp/callgrind.$1.$2"
    if ! valgrind --tool=callgrind --toggle-collect='*handle5batch*' --callgrind-out-file="$out" \
            "$BIN" --packet-loop "$mode" "$FLOWS" "$n" \
            >"$tmp/log" 2>&1; then
        echo "packet-callgrind: $mode with $n packets failed:" >&2
        cat "$tmp/log" >&2
        exit 1
    fi
    awk '/^(summary|totals):/ { print $2; exit }' "$out"
}

for mode in passthrough dsr reply; do
    a=$(ir "$mode" "$N1")
    b=$(ir "$mode" "$N2")
    case $mode in passthrough) row=rewrite ;; reply) row=rewrite_reply ;; *) row=dsr ;; esac
    awk -v a="$a" -v b="$b" -v n1="$N1" -v n2="$N2" -v row="$row" -v flows="$FLOWS" 'BEGIN {
        per = (b - a) / (n2 - n1)
        printf "%s_instructions_per_packet  %.1f  (goal <= 150: %s; %d flows; Ir %d -> %d)\n",
               row, per, (per <= 150 ? "met" : "MISSED"), flows, a, b
    }'
done
