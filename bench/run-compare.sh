#!/usr/bin/env bash
# run-compare.sh - the side-by-side benchmark crkit vs CRIU in one command (issue 5).
#
#   bench/run-compare.sh [compare.py options]      e.g. --quick, --rounds 5, --scenarios random-1g
#
# Builds crkit into ./build if needed (the tools and bench/targets), CRIU 4.1.1 into its cache
# (bench/build-criu.sh), then runs bench/compare/compare.py with the defaults and writes
# bench/results/latest.{json,md,svg} (a --quick run writes quick.{json,md,svg} instead, so a
# smoke test never overwrites the full results). Must run as root. Takes ~30-60 min for the
# full suite (8 scenarios x 3 rounds x 2 tools); --quick takes ~2 min. See bench/README.md.
#
# Environment: BUILD_DIR (default: build), CRKIT_BENCH_DIR (scratch space for images, target
# files and logs; default /var/tmp/crkit-bench; needs ~10 GB free for the 4 GiB scenarios),
# RESULTS_DIR (default: bench/results), CRKIT_CACHE (see build-criu.sh).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
BUILD_DIR=${BUILD_DIR:-build}
BENCH_DIR=${CRKIT_BENCH_DIR:-/var/tmp/crkit-bench}
RESULTS_DIR=${RESULTS_DIR:-bench/results}

[[ $(id -u) -eq 0 ]] || { echo "run-compare.sh: must run as root (CRIU needs it)" >&2; exit 1; }

name=latest
for a in "$@"; do [[ $a == --quick ]] && name=quick; done

if [[ ! -f "$BUILD_DIR/CMakeCache.txt" ]]; then
  echo "== installing dependencies and configuring crkit into $BUILD_DIR" >&2
  bash scripts/install-deps.sh
  cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=RelWithDebInfo >&2
fi
echo "== building crkit's tools and the benchmark targets ($BUILD_DIR)" >&2
cmake --build "$BUILD_DIR" -j "$(nproc)" --target cr_checkpoint cr_restart memtarget vm_readv_bw >&2

echo "== CRIU" >&2
CRIU=$(bash bench/build-criu.sh)

mkdir -p "$BENCH_DIR/images" "$BENCH_DIR/work" "$RESULTS_DIR"
echo "== running bench/compare/compare.py (results: $RESULTS_DIR/$name.{json,md,svg})" >&2
exec python3 bench/compare/compare.py \
  --crkit-bin "$BUILD_DIR/node/tools" \
  --criu "$CRIU" \
  --memtarget "$BUILD_DIR/bench/targets/memtarget" \
  --vm-readv-bw "$BUILD_DIR/bench/targets/vm_readv_bw" \
  --dir "$BENCH_DIR/images" \
  --work "$BENCH_DIR/work" \
  --out "$RESULTS_DIR/$name.json" \
  --markdown "$RESULTS_DIR/$name.md" \
  --svg "$RESULTS_DIR/$name.svg" \
  "$@"
