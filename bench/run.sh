#!/usr/bin/env bash
# Runs the benchmarks of the release build: table on stdout, progress on stderr,
# bench/results/latest.json, and the ratio chart bench/results/latest.png.
# Usage: bench/run.sh [name-prefix ...]     (BENCH_QUICK=1 for a brief run)
# The proxy and AF_XDP benchmarks need root (network namespaces, XDP); the AF_XDP ones also
# lab/lab.sh (or LAB=/path/to/lab.sh). See bench/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=.build/release/ConveyBench
if [ ! -x "$bin" ]; then
  echo "bench/run.sh: $bin is missing; build it with: swift build -c release --product ConveyBench" >&2
  exit 2
fi
bench/build-tools.sh >/dev/null
status=0
"$bin" "$@" || status=$?
results=${BENCH_RESULTS:-bench/results/latest.json}
if [ -s "$results" ]; then
  # Debian's python3 (python3-matplotlib), not whatever python3 comes first in PATH.
  py=${PYTHON:-/usr/bin/python3}
  [ -x "$py" ] || py=python3
  if "$py" -c 'import matplotlib' 2>/dev/null; then
    "$py" bench/chart.py "$results" "${results%.json}.png" || status=1
  else
    echo "bench/run.sh: python3-matplotlib is missing (make deps-bench); no chart drawn" >&2
  fi
fi
exit $status
