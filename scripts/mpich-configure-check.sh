#!/usr/bin/env bash
# mpich-configure-check.sh - does MPICH 4.0.2's real configure accept crkit's libcr?
#
# Usage: scripts/mpich-configure-check.sh PREFIX
#   PREFIX: where crkit is installed (cmake --install build --prefix PREFIX): PREFIX/include
#   holds libcr.h, PREFIX/lib (or lib64) libcr.so.
#
# Fetches Debian bookworm's mpich 4.0.2 source package with `apt-get source` (once: the
# unpacked source is cached), runs its configure with --enable-checkpointing
# --with-blcr=PREFIX in a fresh build directory next to it (configure only, no make), and
# checks that configure succeeds and found libcr.h and cr_init in -lcr. Takes a few minutes.
#
# apt runs with a private sources list, package lists and cache under the cache directory, so
# the system's apt configuration and lists are not touched. The archive is the one the system's
# apt sources use for Debian (override: CRKIT_DEBIAN_MIRROR=URI).
# Environment: CRKIT_CACHE_DIR (default /var/cache/crkit; this script uses its mpich/).
# Exit status: 0 configure accepts libcr, 1 it does not (or a step failed), 2 bad usage.
set -euo pipefail

die() {
  echo "mpich-configure-check: $*" >&2
  exit 1
}
log() { echo "mpich-configure-check: $*"; }

case "${1:-}" in
  -h | --help)
    sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'
    exit 0
    ;;
  "")
    echo "mpich-configure-check: missing PREFIX (usage: $0 PREFIX)" >&2
    exit 2
    ;;
esac
[[ $# -eq 1 ]] || {
  echo "mpich-configure-check: one argument expected, got $# (usage: $0 PREFIX)" >&2
  exit 2
}

PREFIX=$(realpath -e -- "$1" 2>/dev/null) || die "PREFIX '$1' does not exist"
[[ -f $PREFIX/include/libcr.h ]] || die "$PREFIX/include/libcr.h is missing (is crkit installed into $PREFIX?)"
[[ -e $PREFIX/lib/libcr.so || -e $PREFIX/lib64/libcr.so ]] ||
  die "no libcr.so in $PREFIX/lib or $PREFIX/lib64 (is crkit installed into $PREFIX?)"

MPICH_VERSION=4.0.2
CACHE=${CRKIT_CACHE_DIR:-/var/cache/crkit}/mpich
mkdir -p "$CACHE" 2>/dev/null || die "cannot create the cache directory $CACHE (set CRKIT_CACHE_DIR to a writable directory)"
[[ -w $CACHE ]] || die "the cache directory $CACHE is not writable (set CRKIT_CACHE_DIR to a writable directory)"
SRC=$CACHE/src/mpich-$MPICH_VERSION
BUILD=$CACHE/build

# One run at a time per cache: two would share the source and the build directory.
exec 9>"$CACHE/lock"
flock 9

# The source, fetched once (shared with mpi_glue/build-mpich.sh through the same cache).
# shellcheck source=scripts/debian-source.sh
. "$(dirname -- "$(realpath -- "${BASH_SOURCE[0]}")")/debian-source.sh"
DEBIAN_SOURCE_WHO=mpich-configure-check
debian_source_fetch "$CACHE" mpich "mpich-$MPICH_VERSION" || die "cannot fetch the MPICH $MPICH_VERSION source"
[[ -x $SRC/configure ]] ||
  die "$SRC/configure is missing (remove $CACHE/src to fetch the source again)"

# --- configure ---------------------------------------------------------------------------------
rm -rf "$BUILD"
mkdir -p "$BUILD"
cd "$BUILD"
args=(--with-device=ch3:nemesis:tcp --enable-checkpointing "--with-blcr=$PREFIX" --with-pm=hydra
  --disable-fortran --disable-cxx)
log "configuring in $BUILD: configure ${args[*]}"
start=$SECONDS
rc=0
# Flags from the caller's environment would change what configure finds.
env -u CPPFLAGS -u CFLAGS -u LDFLAGS -u LIBS -u CC "$SRC/configure" "${args[@]}" </dev/null >configure.out 2>&1 || rc=$?
log "configure exited with status $rc after $((SECONDS - start)) s (output: $BUILD/configure.out)"
grep -E 'checking for (libcr\.h|cr_init in -lcr)' configure.out | sed 's/^/  /' || true

ok=1
if [[ $rc -ne 0 ]]; then
  echo "--- last lines of configure's output:" >&2
  tail -n 25 configure.out >&2
  ok=0
fi
for want in "checking for libcr.h... yes" "checking for cr_init in -lcr... yes"; do
  grep -qF -- "$want" configure.out || {
    echo "mpich-configure-check: configure did not print '$want'" >&2
    ok=0
  }
done
if [[ $ok -eq 1 ]]; then
  conf=$(find "$BUILD" -name mpichconf.h -path '*/src/include/*' | head -n1)
  if [[ -n $conf ]] && ! grep -q '^#define ENABLE_CHECKPOINTING 1' "$conf"; then
    echo "mpich-configure-check: $conf does not define ENABLE_CHECKPOINTING 1" >&2
    ok=0
  fi
fi
[[ $ok -eq 1 ]] || die "MPICH $MPICH_VERSION's configure does not accept libcr at $PREFIX (config.log: $BUILD/config.log)"
log "MPICH $MPICH_VERSION's configure accepts libcr at $PREFIX (checkpointing enabled)"
