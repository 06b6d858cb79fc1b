#!/usr/bin/env bash
# build-mpich.sh - build MPICH 4.0.2 with checkpointing against crkit's libcr, once per machine.
#
# Usage: mpi_glue/build-mpich.sh [--build-dir DIR] [--print-prefix] [--check] [-h]
#   (no option)     build if the cache has no finished build yet, then run the smoke check
#   --build-dir DIR crkit's CMake build directory (default: build/ in the crkit tree). Needed
#                   to build (its libcr.h/libcr.so are installed into a staging prefix for
#                   configure) and by the check (its lib/libcr.so.0 is loaded at run time)
#   --print-prefix  print the prefix of the cached build as the last line of stdout, building
#                   it first if needed (no check when it was cached):
#                     MPICH=$(mpi_glue/build-mpich.sh --print-prefix | tail -1)
#   --check         only run the smoke check against the existing cached build
#   -h, --help      this text
# Exit status: 0 ok, 1 a step failed (the message says which and why), 2 bad usage.
#
# What it does: fetches Debian bookworm's mpich 4.0.2 source package (apt-get source with a
# private apt configuration, scripts/debian-source.sh), applies
# mpi_glue/patches/mpich-4.0.2-ckpt-keep-init-shm.patch, runs `cmake --install DIR` into a
# staging prefix and configures with --with-device=ch3:nemesis:tcp --enable-checkpointing
# --with-blcr=STAGE (no Fortran, C++ or ROMIO; Hydra is built) and MPILIBNAME=mpich, Debian's
# library name, then make -j$(nproc) and make install into
#   ${CRKIT_CACHE_DIR:-/var/cache/crkit}/mpich-4.0.2-ckpt-KEY/
# KEY hashes the MPICH version, the configure flags, the patch and RECIPE_REV below, so a
# changed patch or flag builds a new prefix. crkit itself is not part of the key: MPICH only
# needs libcr.h and libcr.so to configure and link, and loads libcr.so.0 by soname at run time.
# BUILD_OK in the prefix is written last; a prefix without it is never used. A flock makes a
# second run wait for the first. Logs (crkit-install, configure, make, install, check) stay in
# ${CRKIT_CACHE_DIR:-/var/cache/crkit}/mpich/ckpt-KEY/logs/. It takes about 8 minutes on
# 2 cores; later runs take seconds. Missing Debian packages of the list below (the build
# tools, and Debian's mpich + libmpich-dev whose mpicc.mpich builds the check program) are
# installed with apt-get.
#
# Running applications built against Debian's MPICH:
#   The build's library has Debian's name and soname, libmpich.so.12 (MPICH ABI 14:2:2; a
#   libmpi.so.12 symlink serves binaries from upstream builds). So a C program compiled with
#   Debian's mpicc.mpich (NEEDED libmpich.so.12) runs unmodified on the checkpoint-enabled
#   library: put the build's lib directory first in LD_LIBRARY_PATH, add the directory that
#   holds crkit's libcr.so.0, and start the ranks with the build's Hydra. Checkpointing is off
#   unless MPIR_CVAR_NEMESIS_ENABLE_CKPOINT=1 is set; without it the binary runs as plain
#   ch3:nemesis MPICH.
#     MPICH=$(mpi_glue/build-mpich.sh --print-prefix | tail -1)
#     mpicc.mpich -o hello hello.c              # Debian's compiler wrapper, as usual
#     LD_LIBRARY_PATH=$MPICH/lib:$PWD/build/lib MPIR_CVAR_NEMESIS_ENABLE_CKPOINT=1 \
#       "$MPICH/bin/mpiexec" -n 2 ./hello
#   With that LD_LIBRARY_PATH, `ldd ./hello` shows libmpich.so.12 => $MPICH/lib/libmpich.so.12
#   and libcr.so.0 => .../build/lib/libcr.so.0. Limits: the build has no ROMIO and no Fortran
#   or C++ bindings, so programs that call MPI-IO (MPI_File_*, MPI_Register_datarep), the
#   Fortran conversion functions (MPI_Status_c2f/f2c, MPI_Type_create_f90_*), or that link
#   Debian's libmpichfort/libmpichcxx, fail on it with undefined symbols. Ranks talk shared
#   memory within a node and TCP between nodes (ch3:nemesis:tcp), not UCX as Debian's build.
#
# Environment: CRKIT_CACHE_DIR (default /var/cache/crkit), CRKIT_DEBIAN_MIRROR (apt archive
# URI for the source package, default: the system's Debian bookworm source).
set -Eeuo pipefail

ME=build-mpich
die() {
  echo "$ME: $*" >&2
  exit 1
}
log() { echo "$ME: $*"; }
usage_error() {
  echo "$ME: $*" >&2
  echo "usage: $0 [--build-dir DIR] [--print-prefix] [--check] [-h]" >&2
  exit 2
}
trap 'echo "$ME: unexpected failure (status $?) at line $LINENO: $BASH_COMMAND" >&2; exit 1' ERR

HERE=$(dirname -- "$(realpath -- "${BASH_SOURCE[0]}")")
REPO=$(dirname -- "$HERE")

MPICH_VERSION=4.0.2
PATCH=$HERE/patches/mpich-$MPICH_VERSION-ckpt-keep-init-shm.patch
# Bump when a build step changes what lands in the prefix (not for comments or messages).
RECIPE_REV=1
# @STAGE@ is replaced by the staging prefix (it is hashed as written here). MPILIBNAME=mpich
# is Debian's "old library naming scheme" (debian/rules): it makes the library libmpich.so.12
# itself, as in Debian's libmpich12, instead of upstream's libmpi.so.12. Maintainer mode off:
# Debian's missing-conf.patch adds an m4 file newer than configure, which must not make make
# run the autotools.
CONFIGURE_ARGS=(--with-device=ch3:nemesis:tcp --enable-checkpointing --with-blcr=@STAGE@
  --with-pm=hydra --disable-fortran --disable-cxx --disable-romio --with-datatype-engine=dataloop
  --disable-maintainer-mode MPILIBNAME=mpich)
# Opt-in packages (not in scripts/install-deps.sh): the build tools, and Debian's own MPICH,
# whose mpicc.mpich compiles the check program. Installed only if missing.
# libhwloc-dev (also a dependency of libmpich-dev) makes configure use Debian's hwloc, as
# Debian's libmpich12 does, instead of the embedded copy.
PACKAGES=(build-essential patch dpkg-dev cmake libhwloc-dev mpich libmpich-dev)

# --- options -------------------------------------------------------------------------------------
build_dir=$REPO/build
mode=build
while [[ $# -gt 0 ]]; do
  case $1 in
    --build-dir)
      [[ $# -ge 2 && -n $2 ]] || usage_error "--build-dir needs a directory"
      build_dir=$2
      shift 2
      ;;
    --build-dir=*)
      build_dir=${1#*=}
      [[ -n $build_dir ]] || usage_error "--build-dir needs a directory"
      shift
      ;;
    --print-prefix)
      [[ $mode == check ]] && usage_error "--print-prefix and --check exclude each other"
      mode=print
      shift
      ;;
    --check)
      [[ $mode == print ]] && usage_error "--print-prefix and --check exclude each other"
      mode=check
      shift
      ;;
    -h | --help)
      awk 'NR == 1 { next } /^#/ { sub(/^# ?/, ""); print; next } { exit }' "$0"
      exit 0
      ;;
    *) usage_error "unknown argument '$1'" ;;
  esac
done

# --- the cache key and paths ---------------------------------------------------------------------
[[ -f $PATCH ]] || die "the patch $PATCH is missing"
KEY=$({
  printf 'mpich %s\nrecipe %s\n' "$MPICH_VERSION" "$RECIPE_REV"
  printf 'configure %s\n' "${CONFIGURE_ARGS[@]}"
  cat "$PATCH"
} | sha256sum | cut -c1-12)
ROOT=${CRKIT_CACHE_DIR:-/var/cache/crkit}
PREFIX=$ROOT/mpich-$MPICH_VERSION-ckpt-$KEY
WORK=$ROOT/mpich/ckpt-$KEY
LOGS=$WORK/logs

elapsed() { echo "$((SECONDS - $1)) s"; }

as_root() {
  if [[ $(id -u) -eq 0 ]]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1; then
    sudo "$@"
  else
    die "not root and no sudo: run as root: $*"
  fi
}

install_packages() {
  local p status missing=()
  for p in "${PACKAGES[@]}"; do
    status=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
    [[ $status == installed ]] || missing+=("$p")
  done
  [[ ${#missing[@]} -eq 0 ]] && return 0
  log "installing missing packages: ${missing[*]}"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 update ||
    die "apt-get update failed (needed to install ${missing[*]})"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y \
    --no-install-recommends "${missing[@]}" || die "apt-get install ${missing[*]} failed"
}

# crkit_build_dir: check the --build-dir and make it absolute.
crkit_build_dir() {
  [[ -d $build_dir ]] ||
    die "crkit build directory '$build_dir' does not exist (build crkit first: cmake -S . -B build && cmake --build build, or pass --build-dir DIR)"
  build_dir=$(realpath -e -- "$build_dir")
  [[ -f $build_dir/CMakeCache.txt ]] || die "'$build_dir' is not a CMake build directory (no CMakeCache.txt)"
}

# run_step NAME LOG CMD...: run CMD with its output in LOG, print progress with elapsed seconds;
# on failure print the log's path and last 30 lines, and exit 1.
CHILD=""
trap '[[ -n $CHILD ]] && kill "$CHILD" 2>/dev/null; true' EXIT
run_step() {
  local name=$1 logfile=$2 start=$SECONDS rc=0 next=60
  shift 2
  log "$name... (log: $logfile)"
  "$@" </dev/null >"$logfile" 2>&1 &
  CHILD=$!
  while kill -0 "$CHILD" 2>/dev/null; do
    sleep 1
    if ((SECONDS - start >= next)); then
      log "$name... $(elapsed "$start")"
      next=$((next + 60))
    fi
  done
  wait "$CHILD" || rc=$?
  CHILD=""
  if [[ $rc -ne 0 ]]; then
    echo "$ME: $name failed with status $rc after $(elapsed "$start"); log: $logfile" >&2
    echo "--- last 30 lines of $logfile:" >&2
    tail -n 30 "$logfile" >&2
    exit 1
  fi
  log "$name done in $(elapsed "$start")"
}

# --- build ---------------------------------------------------------------------------------------
build() {
  local t0=$SECONDS stage=$WORK/stage src=$WORK/src obj=$WORK/obj args=() a
  crkit_build_dir
  install_packages
  log "building MPICH $MPICH_VERSION with checkpointing into $PREFIX (key $KEY)"
  rm -rf "$PREFIX" "$src" "$obj" "$stage" "$LOGS"
  mkdir -p "$LOGS" "$obj" || die "cannot create $LOGS and $obj"

  # crkit's headers and libcr into a staging prefix: what --with-blcr needs.
  run_step "installing crkit from $build_dir into $stage" "$LOGS/crkit-install.log" \
    cmake --install "$build_dir" --prefix "$stage"
  [[ -f $stage/include/libcr.h ]] || die "cmake --install did not install include/libcr.h into $stage (see $LOGS/crkit-install.log)"
  [[ -e $stage/lib/libcr.so || -e $stage/lib64/libcr.so ]] ||
    die "cmake --install did not install libcr.so into $stage/lib or lib64, where configure's --with-blcr looks (see $LOGS/crkit-install.log)"

  # The source: Debian's package, fetched once and shared read-only; patched in a private copy.
  # shellcheck source=scripts/debian-source.sh
  . "$REPO/scripts/debian-source.sh"
  DEBIAN_SOURCE_WHO=$ME
  debian_source_fetch "$ROOT/mpich" mpich "mpich-$MPICH_VERSION" || die "cannot fetch the MPICH $MPICH_VERSION source"
  [[ -x $DEBIAN_SOURCE_DIR/configure ]] ||
    die "$DEBIAN_SOURCE_DIR/configure is missing (remove $ROOT/mpich/src to fetch the source again)"
  log "copying the source to $src"
  cp -a "$DEBIAN_SOURCE_DIR" "$src" || die "cannot copy $DEBIAN_SOURCE_DIR to $src"
  log "applying ${PATCH#"$REPO"/}"
  if ! (cd "$src" && patch -p1 --forward --batch --dry-run <"$PATCH") >"$LOGS/patch.log" 2>&1; then
    cat "$LOGS/patch.log" >&2
    die "the patch $PATCH does not apply to the MPICH $MPICH_VERSION source in $src (see above)"
  fi
  (cd "$src" && patch -p1 --forward --batch <"$PATCH") >"$LOGS/patch.log" 2>&1 ||
    die "patch -p1 < $PATCH failed in $src (log: $LOGS/patch.log)"

  for a in "${CONFIGURE_ARGS[@]}"; do args+=("${a//@STAGE@/$stage}"); done
  log "configure --prefix=$PREFIX ${args[*]}"
  # Flags from the caller's environment would change what configure finds and builds.
  run_step "configure" "$LOGS/configure.log" \
    env -C "$obj" -u CPPFLAGS -u CFLAGS -u LDFLAGS -u LIBS -u CC -u MPILIBNAME \
    "$src/configure" "--prefix=$PREFIX" "${args[@]}"
  local want
  for want in 'checking for libcr.h... yes' 'checking for cr_init in -lcr... yes'; do
    grep -qF "$want" "$LOGS/configure.log" ||
      die "configure did not print '$want': it did not find libcr under $stage (log: $LOGS/configure.log)"
  done
  grep -q '^#define ENABLE_CHECKPOINTING 1' "$obj/src/include/mpichconf.h" ||
    die "configure did not define ENABLE_CHECKPOINTING in $obj/src/include/mpichconf.h"

  run_step "make -j$(nproc)" "$LOGS/make.log" make -C "$obj" -j"$(nproc)"
  run_step "make install" "$LOGS/install.log" make -C "$obj" install

  # Upstream MPICH names the library libmpi.so.12; binaries linked against an upstream build
  # need that name, so give it to them too (Debian's binaries ask for libmpich.so.12).
  ln -sfn libmpich.so.12 "$PREFIX/lib/libmpi.so.12"
  verify_library
  [[ -x $PREFIX/bin/mpiexec.hydra ]] || die "make install did not install Hydra ($PREFIX/bin/mpiexec.hydra)"

  {
    echo "MPICH $MPICH_VERSION (Debian source package) with checkpointing, built by mpi_glue/build-mpich.sh"
    echo "key: $KEY (recipe $RECIPE_REV, patch sha256 $(sha256sum <"$PATCH" | cut -d' ' -f1))"
    echo "configure: --prefix=$PREFIX ${args[*]}"
    echo "crkit: $build_dir ($(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown))"
    echo "built: $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(uname -n), $((SECONDS - t0)) s"
    echo "logs: $LOGS"
  } >"$PREFIX/BUILD_INFO"
  # The build trees are large and no longer needed; the logs and the staging prefix stay.
  rm -rf "$src" "$obj"
  touch "$PREFIX/BUILD_OK"
  log "built MPICH $MPICH_VERSION with checkpointing in $(elapsed "$t0"): $PREFIX"
}

# verify_library: the installed library is Debian-named and checkpoint-enabled.
verify_library() {
  local lib=$PREFIX/lib/libmpich.so.12 dyn undef s
  [[ -e $lib ]] || die "$lib is missing after make install (see $LOGS/install.log)"
  dyn=$(readelf -d "$lib") || die "readelf -d $lib failed"
  grep -q 'Library soname: \[libmpich\.so\.12\]' <<<"$dyn" ||
    die "$lib has soname '$(sed -n 's/.*Library soname: \[\(.*\)\]/\1/p' <<<"$dyn")', not libmpich.so.12 (Debian binaries would not find it)"
  grep -q 'Shared library: \[libcr\.so\.0\]' <<<"$dyn" ||
    die "$lib does not depend on libcr.so.0: checkpointing is not compiled in"
  undef=$(nm -D --undefined-only "$lib" | awk '{ print $NF }')
  for s in cr_init cr_register_callback cr_checkpoint cr_get_restart_info; do
    grep -qx "$s" <<<"$undef" || die "$lib does not use libcr's $s: checkpointing is not compiled in"
  done
}

# --- the smoke check -----------------------------------------------------------------------------
check() {
  local t0=$SECONDS libcr_dir tmp out ldd_out mpicc=/usr/bin/mpicc.mpich lp rc=0
  [[ -f $PREFIX/BUILD_OK ]] || die "no finished build in $PREFIX (run $0 without --check first)"
  crkit_build_dir
  install_packages
  # crkit puts its libraries in DIR/lib (LIBRARY_OUTPUT_DIRECTORY); look further if that moves.
  libcr_dir=$build_dir/lib
  if [[ ! -e $libcr_dir/libcr.so.0 ]]; then
    libcr_dir=$(find "$build_dir" -name libcr.so.0 -not -path '*/CMakeFiles/*' -printf '%h\n' -quit)
    [[ -n $libcr_dir ]] ||
      die "no libcr.so.0 in $build_dir: crkit's libcr is not built there (cmake --build $build_dir --target cr)"
  fi
  [[ -x $mpicc ]] || die "$mpicc (Debian's MPICH compiler wrapper, package libmpich-dev) is missing"
  log "check: Debian-built MPI program under $PREFIX/bin/mpiexec -n 2 with checkpointing enabled"
  tmp=$(mktemp -d "${TMPDIR:-/tmp}/crkit-mpich-check.XXXXXX") || die "mktemp failed"
  # shellcheck disable=SC2064 # expand now: tmp is local
  trap "rm -rf '$tmp'; [[ -n \$CHILD ]] && kill \"\$CHILD\" 2>/dev/null; true" EXIT
  cat >"$tmp/hello.c" <<'EOF'
#include <mpi.h>
#include <stdio.h>
#include <string.h>
int main(int argc, char **argv) {
  int rank = -1, size = -1, sum = 0, len = 0;
  char version[MPI_MAX_LIBRARY_VERSION_STRING], *device;
  if (MPI_Init(&argc, &argv) != MPI_SUCCESS) return 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  MPI_Allreduce(&rank, &sum, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
  MPI_Get_library_version(version, &len);
  device = strstr(version, "MPICH Device:");
  if (device) {
    device += strlen("MPICH Device:");
    device += strspn(device, " \t");
    device[strcspn(device, "\n")] = '\0';
  }
  printf("hello rank %d of %d sum %d device %s\n", rank, size, sum, device ? device : "?");
  MPI_Finalize();
  return 0;
}
EOF
  "$mpicc" -o "$tmp/hello" "$tmp/hello.c" >"$tmp/cc.log" 2>&1 ||
    die "$mpicc could not compile the check program: $(cat "$tmp/cc.log")"
  readelf -d "$tmp/hello" | grep -q 'Shared library: \[libmpich\.so\.12\]' ||
    die "the program built by $mpicc does not depend on libmpich.so.12 (readelf -d $tmp/hello)"

  lp=$PREFIX/lib:$libcr_dir
  ldd_out=$(LD_LIBRARY_PATH=$lp ldd "$tmp/hello") || die "ldd $tmp/hello failed"
  printf '%s\n' "$ldd_out" | grep -E 'libmpich|libcr' | sed "s/^[[:space:]]*/$ME:   ldd: /"
  grep -qE "libmpich\.so\.12 => $PREFIX/lib/libmpich\.so\.12 " <<<"$ldd_out" ||
    die "with LD_LIBRARY_PATH=$lp, libmpich.so.12 does not resolve to $PREFIX/lib/libmpich.so.12"
  grep -qE "libcr\.so\.0 => $libcr_dir/libcr\.so\.0 " <<<"$ldd_out" ||
    die "with LD_LIBRARY_PATH=$lp, libcr.so.0 does not resolve to $libcr_dir/libcr.so.0"

  out=$(cd "$tmp" && LD_LIBRARY_PATH=$lp MPIR_CVAR_NEMESIS_ENABLE_CKPOINT=1 \
    timeout 120 "$PREFIX/bin/mpiexec" -n 2 ./hello </dev/null 2>&1) || rc=$?
  if mkdir -p "$LOGS"; then printf '%s\n' "$out" >"$LOGS/check.log"; fi
  printf '%s\n' "$out" | sed "s/^/$ME:   /"
  if [[ $rc -ne 0 ]]; then
    echo "$ME: mpiexec -n 2 with MPIR_CVAR_NEMESIS_ENABLE_CKPOINT=1 failed with status $rc$([[ $rc -eq 124 ]] && echo ' (timed out after 120 s)') (output above)" >&2
    check_diagnose "$tmp" "$lp" "$libcr_dir"
    exit 1
  fi
  for r in 0 1; do
    grep -qx "hello rank $r of 2 sum 1 device ch3:nemesis" <<<"$out" ||
      die "rank $r did not report MPI_Init success on the ch3:nemesis (checkpoint-enabled) library (output above)"
  done
  log "check passed in $(elapsed "$t0"): MPI_Init with checkpointing enabled, 2 ranks, Debian-built binary"
}

# check_diagnose TMP LD_LIBRARY_PATH LIBCR_DIR: after a failed run, tell whether libcr or MPICH
# is at fault: a program without MPI that gets libcr.so.0 through another library (as the
# MPI program gets it through libmpich.so.12), and the MPI run again with libcr preloaded.
check_diagnose() {
  local tmp=$1 lp=$2 libcr_dir=$3 rc=0
  printf 'int crkit_dep(void) { return 0; }\n' >"$tmp/dep.c"
  printf 'int crkit_dep(void);\nint main(void) { return crkit_dep(); }\n' >"$tmp/main.c"
  if cc -shared -fPIC -o "$tmp/libdep.so" "$tmp/dep.c" -L"$libcr_dir" -Wl,--no-as-needed -l:libcr.so.0 &&
    cc -o "$tmp/dep-main" "$tmp/main.c" -L"$tmp" -ldep -Wl,-rpath,"$tmp" -Wl,-rpath-link,"$libcr_dir"; then
    # (the group's 2>/dev/null also takes bash's "Segmentation fault" notice)
    { LD_LIBRARY_PATH=$libcr_dir timeout 30 "$tmp/dep-main" >/dev/null; } 2>/dev/null || rc=$?
    if [[ $rc -ne 0 ]]; then
      echo "$ME: diagnosis: a program without MPI that loads $libcr_dir/libcr.so.0 through another shared library (not linked or preloaded itself) also fails, status $rc: the fault is in libcr, not MPICH" >&2
    fi
  fi
  rc=0
  (cd "$tmp" && LD_LIBRARY_PATH=$lp LD_PRELOAD=$libcr_dir/libcr.so.0 MPIR_CVAR_NEMESIS_ENABLE_CKPOINT=1 \
    timeout 120 "$PREFIX/bin/mpiexec" -n 2 ./hello </dev/null >/dev/null 2>&1) || rc=$?
  if [[ $rc -eq 0 ]]; then
    echo "$ME: diagnosis: the same run passes with LD_PRELOAD=$libcr_dir/libcr.so.0, i.e. when libcr comes before libc in the symbol lookup order" >&2
  fi
}

# --- main ----------------------------------------------------------------------------------------
mkdir -p "$ROOT/mpich" 2>/dev/null || die "cannot create the cache directory $ROOT/mpich (set CRKIT_CACHE_DIR to a writable directory)"
[[ -w $ROOT/mpich ]] || die "the cache directory $ROOT/mpich is not writable (set CRKIT_CACHE_DIR to a writable directory)"

if [[ $mode == check ]]; then
  check
  exit 0
fi

built_now=0
if [[ ! -f $PREFIX/BUILD_OK ]]; then
  exec 9>"$WORK.lock" || die "cannot open the lock file $WORK.lock"
  if ! flock -n 9; then
    log "another run is building $PREFIX; waiting for it (lock $WORK.lock)"
    flock 9 || die "cannot lock $WORK.lock"
  fi
  if [[ -f $PREFIX/BUILD_OK ]]; then
    log "another run built $PREFIX"
  else
    build
    built_now=1
  fi
  exec 9>&-
else
  log "using the cached build $PREFIX"
fi

if [[ $mode == build || $built_now -eq 1 ]]; then
  check
fi
if [[ $mode == print ]]; then
  echo "$PREFIX"
fi
