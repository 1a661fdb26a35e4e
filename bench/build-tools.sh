#!/usr/bin/env bash
# Builds the benchmark's C tools and BPF objects into .build/bench-tools (idempotent, quick).
# Usage: bench/build-tools.sh        prints the output directory on stdout
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=/opt/swift/usr/bin:$PATH
out=.build/bench-tools
mkdir -p "$out"
cc=${CC:-cc}
cflags="-O2 -g -Wall -Wextra -Werror"
build() { # build OUTPUT SOURCE... -- LIBS...
  local output=$1; shift
  local newest=0 src
  for src in "$@"; do [[ -f $src ]] && (( $(stat -c %Y "$src") > newest )) && newest=$(stat -c %Y "$src"); done
  if [[ -x $out/$output ]] && (( $(stat -c %Y "$out/$output") >= newest )); then return; fi
  local sources=() libs=()
  for src in "$@"; do
    case $src in *.c) sources+=("$src") ;; *.h) ;; *) libs+=("$src") ;; esac
  done
  $cc $cflags -o "$out/$output" "${sources[@]}" "${libs[@]}"
}
bpf() { # bpf OUTPUT.o SOURCE.bpf.c
  if [[ -f $out/$1 && $out/$1 -nt $2 ]]; then return; fi
  clang -O2 -g -Wall -Werror -target bpf -I/usr/include/x86_64-linux-gnu -c "$2" -o "$out/$1"
}
build cps bench/tools/cps.c -lpthread
build rrserver bench/tools/rrserver.c -lpthread
if [[ -d bench/xsk ]]; then
  for prog in bench/xsk/*.bpf.c; do [[ -e $prog ]] && bpf "$(basename "${prog%.c}").o" "$prog"; done
  [[ -f bench/xsk/gen.c ]] && build xskgen bench/xsk/gen.c bench/xsk/common.h -lbpf
  [[ -f bench/xsk/xdpload.c ]] && build xdpload bench/xsk/xdpload.c bench/xsk/common.h -lbpf
  [[ -f bench/xsk/reflector.c ]] && build xskreflector bench/xsk/reflector.c bench/xsk/common.h -lxdp -lbpf
fi
echo "$out"
