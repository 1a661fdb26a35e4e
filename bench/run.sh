#!/usr/bin/env bash
# Runs the benchmarks of the release build: table on stdout, bench/results/latest.json.
# Usage: bench/run.sh [name-prefix ...]     (BENCH_QUICK=1 for a brief run)
set -euo pipefail
cd "$(dirname "$0")/.."
bin=.build/release/ConveyBench
if [ ! -x "$bin" ]; then
  echo "bench/run.sh: $bin is missing; build it with: swift build -c release --product ConveyBench" >&2
  exit 2
fi
exec "$bin" "$@"
