#!/usr/bin/env bash
# setup.sh - README command 1: install the dependencies, configure and build crkit into
# ./build, then run the demo (a sample job is checkpointed, killed and restarted).
#
# Usage: scripts/setup.sh [extra cmake configure arguments, e.g. -DCRKIT_SANITIZE=ON]
# Environment: BUILD_DIR (default: build), CMAKE_BUILD_TYPE (default: RelWithDebInfo).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
BUILD_DIR=${BUILD_DIR:-build}

echo "== installing dependencies"
bash scripts/install-deps.sh

echo "== configuring into $BUILD_DIR"
cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE="${CMAKE_BUILD_TYPE:-RelWithDebInfo}" "$@"

echo "== building"
cmake --build "$BUILD_DIR" -j "$(nproc)"

echo "== demo"
BUILD_DIR=$BUILD_DIR exec bash scripts/demo.sh
