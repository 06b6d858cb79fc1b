#!/usr/bin/env bash
# test.sh - README command 2 (and what CI runs): install the dependencies if needed,
# configure and build into ./build, then run every test with ctest.
#
# Usage: scripts/test.sh [--exclude-label REGEX] [--label REGEX] [-j N] [--no-sanitizers]
#                        [-- CTEST_ARGS...]
#   --exclude-label REGEX   skip tests whose labels match (e.g. "slow"); also taken from
#                           $CRKIT_TEST_EXCLUDE_LABEL
#   --label REGEX           run only tests whose labels match (e.g. "integration")
#   -j N                    parallel test jobs (default: number of CPUs)
#   --no-sanitizers         skip the second pass: the same tests against a build with
#                           AddressSanitizer + UndefinedBehaviorSanitizer (in BUILD_DIR-sanitize)
# Environment: BUILD_DIR (default: build), CMAKE_BUILD_TYPE (default: RelWithDebInfo),
#              CRKIT_CMAKE_ARGS (extra configure arguments, e.g. "-DCRKIT_SANITIZE=ON").
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
BUILD_DIR=${BUILD_DIR:-build}
exclude=${CRKIT_TEST_EXCLUDE_LABEL:-}
include=""
jobs=$(nproc)
extra=()
sanitizers=1

while [[ $# -gt 0 ]]; do
  case "$1" in
    --exclude-label) exclude=$2; shift 2 ;;
    --exclude-label=*) exclude=${1#*=}; shift ;;
    --label) include=$2; shift 2 ;;
    --label=*) include=${1#*=}; shift ;;
    -j) jobs=$2; shift 2 ;;
    -j*) jobs=${1#-j}; shift ;;
    --no-sanitizers) sanitizers=0; shift ;;
    --) shift; extra=("$@"); break ;;
    -h | --help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "test.sh: unknown option '$1' (see --help)" >&2; exit 2 ;;
  esac
done

echo "== dependencies"
bash scripts/install-deps.sh

# run_pass DIR [CMAKE_ARGS...]: configure, build and test one build directory.
run_pass() {
  local dir=$1
  shift
  echo "== configuring into $dir"
  # shellcheck disable=SC2086 # CRKIT_CMAKE_ARGS is a list of words on purpose
  cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE="${CMAKE_BUILD_TYPE:-RelWithDebInfo}" ${CRKIT_CMAKE_ARGS:-} "$@"
  echo "== building $dir"
  cmake --build "$dir" -j "$(nproc)"
  local args=(--test-dir "$dir" --output-on-failure -j "$jobs")
  [[ -n $exclude ]] && args+=(-LE "$exclude")
  [[ -n $include ]] && args+=(-L "$include")
  echo "== testing: ctest ${args[*]} ${extra[*]}"
  ctest "${args[@]}" "${extra[@]}"
}

run_pass "$BUILD_DIR"
if [[ $sanitizers -eq 1 ]]; then
  # The engine's memory handling is checked under ASan/UBSan too (UB is fatal there).
  run_pass "$BUILD_DIR-sanitize" -DCRKIT_SANITIZE=ON
fi
