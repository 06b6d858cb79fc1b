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

as_root() {
  if [[ $(id -u) -eq 0 ]]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1; then
    sudo "$@"
  else
    die "not root and no sudo: run as root: $*"
  fi
}

# debian_archive: print "URI<TAB>KEYRING" of the system's apt source for Debian bookworm (else
# of any Debian archive): deb822 *.sources files and one-line *.list files. KEYRING may be empty.
debian_archive() {
  local f files=()
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
    [[ -f $f ]] && files+=("$f")
  done
  [[ ${#files[@]} -gt 0 ]] || return 1
  awk '
    function has(list, word) { return (" " list " ") ~ (" " word " ") }
    function consider(uri, suites, key) {
      if (uri == "") return
      if (bookworm == "" && has(suites, "bookworm")) bookworm = uri "\t" key
      if (anydeb == "" && uri ~ /\/debian\/?$/) anydeb = uri "\t" key
    }
    function flush() {
      if (has(types, "deb") && tolower(enabled) != "no") { split(uris, u, " "); consider(u[1], suites, signed) }
      types = uris = suites = signed = enabled = ""
    }
    FNR == 1 { flush() }
    /^[ \t]*#/ { next }
    FILENAME ~ /\.sources$/ {
      if ($0 ~ /^[ \t]*$/) { flush(); next }
      key = tolower($1); $1 = ""; sub(/^ +/, "")
      if (key == "types:") types = $0
      else if (key == "uris:") uris = $0
      else if (key == "suites:") suites = $0
      else if (key == "signed-by:") signed = $0
      else if (key == "enabled:") enabled = $0
      next
    }
    $1 == "deb" {
      i = 2; key = ""
      if ($2 ~ /^\[/) {
        for (; i <= NF; i++) {
          if ($i ~ /^\[?signed-by=/) { key = $i; sub(/^\[?signed-by=/, "", key); sub(/\]$/, "", key) }
          if ($i ~ /\]$/) { i++; break }
        }
      }
      consider($i, $(i + 1), key)
    }
    END { flush(); if (bookworm != "") print bookworm; else if (anydeb != "") print anydeb; else exit 1 }
  ' "${files[@]}"
}

# --- The source, fetched once ------------------------------------------------------------------
if [[ -f $SRC/.crkit-unpacked && -x $SRC/configure ]]; then
  log "using the cached MPICH $MPICH_VERSION source in $SRC"
else
  if ! command -v dpkg-source >/dev/null 2>&1; then
    log "installing dpkg-dev (apt-get source unpacks with dpkg-source)"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y --no-install-recommends dpkg-dev ||
      die "cannot install dpkg-dev"
  fi
  if [[ -n ${CRKIT_DEBIAN_MIRROR:-} ]]; then
    uri=$CRKIT_DEBIAN_MIRROR
    keyring=""
  else
    line=$(debian_archive) ||
      die "no Debian archive in the apt sources (/etc/apt/sources.list*); set CRKIT_DEBIAN_MIRROR=URI"
    uri=${line%%$'\t'*}
    keyring=${line#*$'\t'}
  fi
  [[ -z $keyring && -f /usr/share/keyrings/debian-archive-keyring.gpg ]] &&
    keyring=/usr/share/keyrings/debian-archive-keyring.gpg
  APT=$CACHE/apt
  mkdir -p "$APT/sources.list.d" "$APT/lists/partial" "$APT/cache/archives/partial"
  opts=""
  [[ -n $keyring ]] && opts="[signed-by=$keyring] "
  printf 'deb-src %s%s bookworm main\n' "$opts" "$uri" >"$APT/sources.list"
  log "source package index: $(cat "$APT/sources.list")"
  # Private sources, lists and cache: neither the system's sources nor its package lists change.
  apt_private=(apt-get -o Dir::Etc::SourceList="$APT/sources.list" -o Dir::Etc::SourceParts="$APT/sources.list.d"
    -o Dir::State::Lists="$APT/lists" -o Dir::Cache="$APT/cache" -o APT::Get::List-Cleanup=false)
  "${apt_private[@]}" update || die "apt-get update of the bookworm source index failed ($uri)"
  rm -rf "$CACHE/src.new"
  mkdir -p "$CACHE/src.new"
  # As root, apt downloads as the user _apt, which must be able to write there.
  if [[ $(id -u) -eq 0 ]] && id _apt >/dev/null 2>&1; then
    chown _apt "$CACHE/src.new"
  fi
  (cd "$CACHE/src.new" && "${apt_private[@]}" source mpich) ||
    die "apt-get source mpich failed (see above)"
  [[ -x $CACHE/src.new/mpich-$MPICH_VERSION/configure ]] ||
    die "apt-get source mpich did not give mpich-$MPICH_VERSION/configure (got: $(ls "$CACHE/src.new" | tr '\n' ' '))"
  touch "$CACHE/src.new/mpich-$MPICH_VERSION/.crkit-unpacked"
  rm -rf "$CACHE/src"
  mv "$CACHE/src.new" "$CACHE/src"
  log "MPICH $MPICH_VERSION source unpacked in $SRC"
fi

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
