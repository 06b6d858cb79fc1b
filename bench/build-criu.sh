#!/usr/bin/env bash
# Build CRIU 4.1.1, the peer of the side-by-side benchmark (bench/run-compare.sh), into a cache
# directory outside the tree, and print the path of the binary.
#
#   bench/build-criu.sh [CACHE_DIR]     default: ${CRKIT_CACHE:-/var/cache/crkit}/criu-4.1.1
#
# Bookworm's packaged criu (3.17) does not work on kernels >= 6.18 (the vDSO data page was
# split), 4.1.1 does. Debian trixie packages 4.1.1, so its upstream tarball is fetched with
# `apt-get source --download-only` from a temporary deb-src entry that is removed again on any
# exit. The build dependencies come from bookworm. Idempotent: a cached binary whose
# `criu --version` works is reused (delete CACHE_DIR to rebuild). Needs root (apt, and CRIU itself
# needs root to dump and restore).
set -euo pipefail

CRIU_VERSION=4.1.1
CACHE_DIR="${1:-${CRKIT_CACHE:-/var/cache/crkit}/criu-${CRIU_VERSION}}"
SRC_LIST=/etc/apt/sources.list.d/crkit-trixie-src.list
log() { printf 'build-criu: %s\n' "$*" >&2; }
die() { printf 'build-criu: error: %s\n' "$*" >&2; exit 1; }

if [[ -x "$CACHE_DIR/criu" ]] && "$CACHE_DIR/criu" --version >/dev/null 2>&1; then
  log "reusing $("$CACHE_DIR/criu" --version | head -n1) in $CACHE_DIR"
  echo "$CACHE_DIR/criu"
  exit 0
fi

[[ $(id -u) -eq 0 ]] || die "must run as root (apt-get install, and criu needs root anyway)"
command -v apt-get >/dev/null || die "apt-get not found: this script is for Debian (bookworm)"

WORK=$(mktemp -d /var/tmp/crkit-criu-build.XXXXXX)
cleanup() {
  local rc=$?
  if [[ -e "$SRC_LIST" ]]; then
    log "removing the temporary deb-src entry $SRC_LIST"
    rm -f "$SRC_LIST"
    apt-get update -qq >/dev/null 2>&1 || log "warning: apt-get update after removing $SRC_LIST failed"
  fi
  rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# 1. Build dependencies (bookworm). Everything `make criu` needs; libbsd, gnutls and nftables
#    are optional features that CRIU's Makefile enables when found.
DEPS=(build-essential make gcc pkg-config python3 xz-utils
      libprotobuf-c-dev protobuf-c-compiler protobuf-compiler libprotobuf-dev
      libnl-3-dev libnet1-dev libcap-dev libbsd-dev uuid-dev libgnutls28-dev libnftables-dev
      libaio-dev)
missing=()
for p in "${DEPS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
  log "installing build dependencies: ${missing[*]}"
  apt-get update -qq || die "apt-get update failed"
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" \
    || die "apt-get install of the build dependencies failed"
fi

# 2. The upstream source, from Debian trixie's source package (temporary deb-src entry).
log "adding the temporary deb-src entry $SRC_LIST (trixie)"
echo 'deb-src http://deb.debian.org/debian trixie main' >"$SRC_LIST"
apt-get update -qq || die "apt-get update with the trixie deb-src entry failed"
avail=$(apt-cache showsrc criu 2>/dev/null | awk '/^Version:/ {print $2}' | sort -V | tail -n1)
[[ -n "$avail" ]] || die "no criu source package found in trixie"
log "trixie's criu source package: $avail"
[[ "$avail" == "${CRIU_VERSION}"-* ]] \
  || die "trixie has criu $avail, not ${CRIU_VERSION}: edit CRIU_VERSION in $0 after checking that version works on this kernel"
chmod 0755 "$WORK"   # apt downloads as user _apt
# Only the upstream tarball is needed: a missing .dsc or Debian patch tarball on the mirror is
# not an error as long as criu_VERSION.orig.tar.* arrived.
( cd "$WORK" && apt-get source --download-only -qq "criu=$avail" ) >"$WORK/apt-source.log" 2>&1 \
  || log "apt-get source reported errors (checking for the upstream tarball): $(grep -E '^E:' "$WORK/apt-source.log" | head -n3 | tr '\n' ' ')"
rm -f "$SRC_LIST"
apt-get update -qq >/dev/null 2>&1 || log "warning: apt-get update after removing $SRC_LIST failed"

shopt -s nullglob
tarballs=("$WORK"/criu_"${CRIU_VERSION}".orig.tar.*)
((${#tarballs[@]})) || { cat "$WORK/apt-source.log" >&2; die "criu_${CRIU_VERSION}.orig.tar.* was not downloaded (apt-get source output above)"; }

# 3. Build.
log "extracting ${tarballs[0]##*/}"
tar -xf "${tarballs[0]}" -C "$WORK"
srcdir=$(find "$WORK" -mindepth 1 -maxdepth 1 -type d -name 'criu*' | head -n1)
[[ -n "$srcdir" && -f "$srcdir/Makefile" ]] || die "no CRIU source tree in ${tarballs[0]}"
log "building in $srcdir (make -j$(nproc) criu)"
if ! make -C "$srcdir" -j"$(nproc)" criu >"$WORK/make.log" 2>&1; then
  tail -n 40 "$WORK/make.log" >&2
  die "make criu failed (last lines above)"
fi
[[ -x "$srcdir/criu/criu" ]] || die "make criu did not produce criu/criu"

mkdir -p "$CACHE_DIR"
install -m 0755 "$srcdir/criu/criu" "$CACHE_DIR/criu.new"
mv -f "$CACHE_DIR/criu.new" "$CACHE_DIR/criu"
"$CACHE_DIR/criu" --version >/dev/null 2>&1 || die "the built $CACHE_DIR/criu does not run"
log "built $("$CACHE_DIR/criu" --version | head -n1) into $CACHE_DIR"
echo "$CACHE_DIR/criu"
