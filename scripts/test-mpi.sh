#!/usr/bin/env bash
# test-mpi.sh - the MPI acceptance tests (issue 6), one command: builds crkit into
# ./build-mpi, MPICH 4.0.2 checkpoint-enabled against its libcr (mpi_glue/build-mpich.sh: once
# per machine, ~6 min, cached in /var/cache/crkit), then runs the ctest label "mpi": jobs of
# examples/ring_halo on network-namespace nodes, checkpointed and restarted. Needs root.
#
# Usage: scripts/test-mpi.sh [-- CTEST_ARGS...]   e.g. -- -R mpi.main
# Environment: BUILD_DIR (default build-mpi), CRKIT_CACHE_DIR (default /var/cache/crkit).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
BUILD_DIR=${BUILD_DIR:-build-mpi}
extra=()
[[ ${1:-} == "--" ]] && { shift; extra=("$@"); }
[[ $(id -u) -eq 0 ]] || { echo "test-mpi.sh: needs root (network namespaces)" >&2; exit 1; }

echo "== dependencies"
bash scripts/install-deps.sh
echo "== building crkit into $BUILD_DIR"
cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE="${CMAKE_BUILD_TYPE:-RelWithDebInfo}" -DCRKIT_BUILD_BENCH=OFF
cmake --build "$BUILD_DIR" -j "$(nproc)"
echo "== checkpoint-enabled MPICH"
MPICH=$(bash mpi_glue/build-mpich.sh --build-dir "$BUILD_DIR" --print-prefix | tail -1)
[[ -d $MPICH/lib ]] || { echo "test-mpi.sh: build-mpich.sh gave no prefix ('$MPICH')" >&2; exit 1; }
echo "== configuring the MPI tests (MPICH at $MPICH)"
cmake -S . -B "$BUILD_DIR" -DCRKIT_MPI_TESTS=ON -DCRKIT_MPICH_PREFIX="$MPICH"
cmake --build "$BUILD_DIR" -j "$(nproc)"
echo "== testing: ctest -L mpi ${extra[*]}"
ctest --test-dir "$BUILD_DIR" -L mpi --output-on-failure "${extra[@]}"
