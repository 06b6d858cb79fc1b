#!/usr/bin/env bash
# install-deps.sh - install crkit's build and test dependencies from Debian's apt archive.
#
# Idempotent and quick: when every package is already installed it only runs one dpkg-query
# and exits. Otherwise it runs apt-get update + install (non-interactive, waiting up to
# 10 minutes for the dpkg lock), as root or through sudo.
#
# Usage: scripts/install-deps.sh [--check]   (--check: only report missing packages, exit 1
#                                             if any)
set -euo pipefail

PACKAGES=(
  build-essential cmake pkg-config     # toolchain (gcc 12, CMake >= 3.25)
  libgtest-dev libbenchmark-dev        # GoogleTest, Google Benchmark
  libfmt-dev nlohmann-json3-dev        # formatting, cr_info --json
  libisal-dev libxxhash-dev            # CRC32C, hashing
  libzstd-dev liblz4-dev               # image compression
  libcap-dev libcap2-bin               # capabilities (setcap for unprivileged restart)
  util-linux                           # setpriv, unshare (tests)
  python3 procps                       # tests: JSON check, pgrep/ps
)

check_only=0
case "${1:-}" in
  --check) check_only=1 ;;
  "") ;;
  -h | --help)
    sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'
    exit 0
    ;;
  *)
    echo "install-deps: unknown option '$1'" >&2
    exit 2
    ;;
esac

missing=()
for p in "${PACKAGES[@]}"; do
  status=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
  [[ $status == installed ]] || missing+=("$p")
done

if [[ ${#missing[@]} -eq 0 ]]; then
  echo "install-deps: all ${#PACKAGES[@]} packages are installed"
  exit 0
fi

echo "install-deps: missing: ${missing[*]}"
if [[ $check_only -eq 1 ]]; then
  exit 1
fi

SUDO=()
if [[ $(id -u) -ne 0 ]]; then
  if command -v sudo >/dev/null 2>&1; then
    SUDO=(sudo)
  else
    echo "install-deps: not root and no sudo: install these packages as root: ${missing[*]}" >&2
    exit 1
  fi
fi

APT=("${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600)
"${APT[@]}" update
"${APT[@]}" install -y --no-install-recommends "${missing[@]}"
echo "install-deps: installed ${missing[*]}"
