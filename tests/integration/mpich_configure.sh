#!/usr/bin/env bash
# mpich_configure.sh - the installed libcr is what BLCR clients look for. `cmake --install`s
# the build tree into a temporary prefix P, then:
#  - repeats by hand what MPICH 4.0.2's configure does for --enable-checkpointing
#    --with-blcr=P (PAC_CHECK_HEADER_LIB_FATAL(blcr, libcr.h, cr, cr_init)): CPPFLAGS -IP/include,
#    LDFLAGS -LP/lib (and -LP/lib64 if it exists), AC_CHECK_HEADER([libcr.h]) (a compile test
#    with autoconf's default includes, then a preprocessor test) and AC_CHECK_LIB(cr, cr_init)
#    (links `char cr_init();` with -lcr), all with `cc` as configure would;
#  - the header also compiles strictly as C99 and C++ (-Wall -Wextra -Werror);
#  - `pkg-config --cflags --libs libcr` with PKG_CONFIG_PATH=P/lib/pkgconfig gives P's paths;
#  - a program built against the installed header with -lcr, run with LD_LIBRARY_PATH=P/lib,
#    loads P's libcr.so.0 and cr_init() succeeds;
#  - the exported symbols (nm -D) and sonames (objdump -p) of the three libraries;
#  - the installed cr_run preloads P's libraries, and nothing installed names the build tree;
#    with DESTDIR the paths inside the files are those of the final prefix.
# With CRKIT_MPICH_REAL=SCRIPT (ctest's integration.mpich_configure_real, CRKIT_SLOW_TESTS=ON)
# it then runs SCRIPT P, i.e. scripts/mpich-configure-check.sh: MPICH's real configure.
# Needs CRKIT_BUILD_DIR (the build tree) and CMAKE (the cmake to install with), set by
# tests/integration/CMakeLists.txt.
# shellcheck disable=SC2086 # CFLAGS, CPPFLAGS, LDFLAGS are word lists, as in configure
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
crt_begin mpich_configure

[[ -n ${CRKIT_BUILD_DIR:-} ]] || crt_fail "CRKIT_BUILD_DIR is not set (run this test through ctest)"
[[ -f $CRKIT_BUILD_DIR/cmake_install.cmake ]] ||
  crt_fail "CRKIT_BUILD_DIR=$CRKIT_BUILD_DIR is not a configured build tree (no cmake_install.cmake)"
CMAKE=${CMAKE:-cmake}
for tool in cc c++ nm objdump pkg-config ldd; do
  command -v "$tool" >/dev/null || crt_fail "'$tool' is needed (scripts/install-deps.sh installs it)"
done

P=$T/prefix
# DESTDIR from the caller's environment would put the files elsewhere.
crt_run install 120 env -u DESTDIR "$CMAKE" --install "$CRKIT_BUILD_DIR" --prefix "$P"
crt_expect_rc install 0 "cmake --install into $P"
LIB=$P/lib

crt_check "the headers, libraries (with soname links and the namelink), libcr.pc and cr_run are installed"
for f in include/libcr.h include/blcr_common.h include/blcr_errcodes.h include/blcr_proc.h \
  lib/libcr.so lib/libcr.so.0 lib/libcr_run.so.0 lib/libcr_omit.so.0 lib/pkgconfig/libcr.pc bin/cr_run; do
  [[ -e $P/$f ]] || crt_fail "$P/$f was not installed"
done
LIBCR_VERSION=$(sed -n 's/^#define LIBCR_VERSION "\(.*\)"$/\1/p' "$P/include/blcr_common.h")
[[ $LIBCR_VERSION =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]] || crt_fail "no LIBCR_VERSION in the installed blcr_common.h"
crt_check "libcr.so and libcr.so.0 lead to libcr.so.$LIBCR_VERSION (the file -lcr links with)"
for l in libcr.so libcr.so.0; do
  real=$(readlink -f -- "$LIB/$l")
  [[ $real == "$LIB/libcr.so.$LIBCR_VERSION" ]] || crt_fail "$LIB/$l leads to $real, not $LIB/libcr.so.$LIBCR_VERSION"
done
[[ -f $LIB/libcr.so.$LIBCR_VERSION && ! -L $LIB/libcr.so.$LIBCR_VERSION ]] ||
  crt_fail "$LIB/libcr.so.$LIBCR_VERSION is not a regular file"

# A libcr built with AddressSanitizer (the sanitizer pass) runs only in a program that has
# ASan's runtime first: the test program is then built with the same sanitizers.
RUN_CFLAGS=()
if objdump -p "$LIB/libcr.so.0" | grep -q 'NEEDED.*libasan'; then
  # shellcheck disable=SC2054 # one option with a comma
  RUN_CFLAGS=(-fsanitize=address,undefined)
  crt_log "libcr is built with AddressSanitizer: the test program is built with it too"
fi

# --- MPICH 4.0.2's configure, by hand --------------------------------------------------------
# PAC_SET_HEADER_LIB_PATH(blcr) for --with-blcr=P. CFLAGS, and CPPFLAGS besides MPICH's own
# -I of its source tree, are what MPICH 4.0.2's config.log shows at that point; LIBS is empty.
CFLAGS="-O2"
CPPFLAGS="-D_REENTRANT -I$P/include"
LDFLAGS="-L$P/lib"
[[ -d $P/lib64 ]] && LDFLAGS="$LDFLAGS -L$P/lib64"
crt_log "CC=cc CFLAGS='$CFLAGS' CPPFLAGS='$CPPFLAGS' LDFLAGS='$LDFLAGS'"
# The flags are word lists, split where they are used, as configure does.
mkdir -p "$T/conf" && cd "$T/conf" || crt_fail "cannot create $T/conf"

# What configure's confdefs.h holds by then (the package's own defines do not matter here)
# plus autoconf's AC_INCLUDES_DEFAULT, the prologue of AC_CHECK_HEADER's compile test.
cat >confdefs.h <<'EOF'
#define PACKAGE_NAME "MPICH"
#define PACKAGE_TARNAME "mpich"
#define PACKAGE_VERSION "4.0.2"
#define PACKAGE_STRING "MPICH 4.0.2"
#define STDC_HEADERS 1
#define HAVE_SYS_TYPES_H 1
#define HAVE_SYS_STAT_H 1
#define HAVE_STDLIB_H 1
#define HAVE_STRING_H 1
#define HAVE_MEMORY_H 1
#define HAVE_STRINGS_H 1
#define HAVE_INTTYPES_H 1
#define HAVE_STDINT_H 1
#define HAVE_UNISTD_H 1
EOF
cat >default_includes.h <<'EOF'
#include <stdio.h>
#ifdef HAVE_SYS_TYPES_H
# include <sys/types.h>
#endif
#ifdef HAVE_SYS_STAT_H
# include <sys/stat.h>
#endif
#ifdef STDC_HEADERS
# include <stdlib.h>
# include <stddef.h>
#else
# ifdef HAVE_STDLIB_H
#  include <stdlib.h>
# endif
#endif
#ifdef HAVE_STRING_H
# if !defined STDC_HEADERS && defined HAVE_MEMORY_H
#  include <memory.h>
# endif
# include <string.h>
#endif
#ifdef HAVE_STRINGS_H
# include <strings.h>
#endif
#ifdef HAVE_INTTYPES_H
# include <inttypes.h>
#endif
#ifdef HAVE_STDINT_H
# include <stdint.h>
#endif
#ifdef HAVE_UNISTD_H
# include <unistd.h>
#endif
EOF

# conftest_run LABEL CMD...: run a configure step in $T/conf like configure does (stdout to
# $T/conf/LABEL.stdout, stderr to $T/LABEL.err, shown if the test fails); RC holds its status.
conftest_run() {
  local label=$1
  shift
  RC=0
  "$@" >"$T/conf/$label.stdout" 2>"$T/$label.err" </dev/null || RC=$?
}

# AC_CHECK_HEADER([libcr.h]), compile part: ac_compile = $CC -c $CFLAGS $CPPFLAGS conftest.c
{ cat confdefs.h default_includes.h; echo '#include <libcr.h>'; } >conftest.c
crt_check "checking for libcr.h (compile test, autoconf's default includes)"
conftest_run hdr_compile cc -c $CFLAGS $CPPFLAGS conftest.c
[[ $RC -eq 0 && -s conftest.o ]] || crt_fail "libcr.h does not compile: $(cat "$T/hdr_compile.err")"
if [[ -s $T/hdr_compile.err ]]; then crt_log "  warnings: $(cat "$T/hdr_compile.err")"; fi

# AC_CHECK_HEADER, preprocessor part: ac_cpp = $CPP $CPPFLAGS (CPP is "cc -E" for gcc);
# autoconf counts a preprocessor that says anything on stderr as a failure when warn flags
# are set, so none is accepted here.
{ cat confdefs.h; echo '#include <libcr.h>'; } >conftest.c
crt_check "checking for libcr.h (preprocessor test)"
conftest_run hdr_cpp cc -E $CPPFLAGS conftest.c
[[ $RC -eq 0 ]] || crt_fail "cc -E fails on libcr.h: $(cat "$T/hdr_cpp.err")"
[[ ! -s $T/hdr_cpp.err ]] || crt_fail "cc -E complains about libcr.h: $(cat "$T/hdr_cpp.err")"
crt_log "checking for libcr.h... yes"

# AC_CHECK_LIB(cr, cr_init): ac_link = $CC -o conftest $CFLAGS $CPPFLAGS $LDFLAGS conftest.c $LIBS
# with LIBS="-lcr". `char cr_init ();` on purpose: autoconf avoids the real prototype.
rm -f conftest conftest.o
{
  cat confdefs.h
  cat <<'EOF'
/* Override any GCC internal prototype to avoid an error.
   Use char because int might match the return type of a GCC
   builtin and then its argument prototype would still apply.  */
#ifdef __cplusplus
extern "C"
#endif
char cr_init ();
int
main ()
{
return cr_init ();
  ;
  return 0;
}
EOF
} >conftest.c
crt_check "checking for cr_init in -lcr (link test)"
conftest_run lib_link cc -o conftest $CFLAGS $CPPFLAGS $LDFLAGS conftest.c -lcr
[[ $RC -eq 0 && -s conftest && -x conftest ]] || crt_fail "linking cr_init with -lcr fails: $(cat "$T/lib_link.err")"
crt_log "checking for cr_init in -lcr... yes"

# --- The header, strictly ----------------------------------------------------------------------
# Not part of MPICH's checks: BLCR clients (Open MPI, MPICH with --enable-strict) build with
# warnings as errors, and from C++ the declarations must have C linkage.
cat >strict.c <<'EOF'
#include <libcr.h>
#include <blcr_errcodes.h>
#include <blcr_proc.h>
#include <blcr_common.h>
static const char *const names[] = {
#define CR_ERROR_DEF(_name, _desc) #_name,
#include <blcr_errcodes.h>
#undef CR_ERROR_DEF
};
int main(void) {
  cr_checkpoint_args_t a;
  cr_restart_args_t r;
  if (cr_initialize_checkpoint_args_t(&a) != 0 || cr_initialize_restart_args_t(&r) != 0) return 1;
  return (int)(sizeof names / sizeof names[0]) == CR_MAX_ERRCODE - CR_MIN_ERRCODE - 1 ? 0 : 2;
}
EOF
crt_check "the headers compile as C99 with -Wall -Wextra -pedantic -Werror and link with -lcr"
conftest_run strict_c cc -std=c99 -Wall -Wextra -pedantic -Werror $CPPFLAGS $LDFLAGS strict.c -o strict_c -lcr
[[ $RC -eq 0 ]] || crt_fail "strict C build fails: $(cat "$T/strict_c.err")"
cp strict.c strict.cpp
crt_check "the headers compile as C++11 with -Wall -Wextra -Werror and link with -lcr (C linkage)"
conftest_run strict_cxx c++ -std=c++11 -Wall -Wextra -Werror $CPPFLAGS $LDFLAGS strict.cpp -o strict_cxx -lcr
[[ $RC -eq 0 ]] || crt_fail "C++ build fails: $(cat "$T/strict_cxx.err")"

# --- pkg-config ------------------------------------------------------------------------------
export PKG_CONFIG_PATH=$LIB/pkgconfig
crt_check "pkg-config finds libcr in $PKG_CONFIG_PATH, version $LIBCR_VERSION"
conftest_run pc_exists pkg-config --exists --print-errors libcr
[[ $RC -eq 0 ]] || crt_fail "pkg-config --exists libcr fails: $(cat "$T/pc_exists.err")"
[[ $(pkg-config --modversion libcr) == "$LIBCR_VERSION" ]] ||
  crt_fail "pkg-config --modversion libcr says '$(pkg-config --modversion libcr)', expected $LIBCR_VERSION"
# pkg-config leaves out -I/-L of the system directories only, which P is not.
pc=$(pkg-config --cflags --libs libcr) || crt_fail "pkg-config --cflags --libs libcr fails"
read -r -a pc_words <<<"$pc"
crt_check "pkg-config --cflags --libs libcr is '-I$P/include -L$LIB -lcr' (got '$pc')"
[[ "${pc_words[*]}" == "-I$P/include -L$LIB -lcr" ]] || crt_fail "pkg-config --cflags --libs libcr gives '$pc'"
crt_check "pkg-config --static --libs libcr adds -ldl -lpthread"
pcs=$(pkg-config --static --libs libcr) || crt_fail "pkg-config --static --libs libcr fails"
[[ " $pcs " == *" -ldl "* && " $pcs " == *" -lpthread "* ]] || crt_fail "pkg-config --static --libs libcr gives '$pcs'"

# --- A program using the installed library -----------------------------------------------------
cat >use_libcr.c <<'EOF'
#include <libcr.h>
#include <stdio.h>
#include <string.h>
int main(void) {
  cr_client_id_t id = cr_init();
  if (id < 0) {
    printf("cr_init() = %d, errno %d (%s)\n", id, errno, cr_strerror(errno));
    return 1;
  }
  printf("cr_init() = %d, cri_signum %d, CR_SIGNUM %d, LIBCR_VERSION %s\n", id, cri_signum,
         CR_SIGNUM, LIBCR_VERSION);
  return cri_signum == CR_SIGNUM ? 0 : 2;
}
EOF
# shellcheck disable=SC2046 # pkg-config prints separate words
crt_run use_cc 60 cc "${RUN_CFLAGS[@]}" $(pkg-config --cflags libcr) use_libcr.c -o use_libcr $(pkg-config --libs libcr)
crt_expect_rc use_cc 0 "cc \$(pkg-config --cflags libcr) use_libcr.c \$(pkg-config --libs libcr)"
crt_check "with LD_LIBRARY_PATH=$LIB the program loads $LIB/libcr.so.0"
LD_LIBRARY_PATH=$LIB ldd ./use_libcr >"$T/ldd.out" 2>&1 || crt_fail "ldd use_libcr fails: $(cat "$T/ldd.out")"
grep -Eq "^[[:space:]]*libcr\.so\.0 => $LIB/libcr\.so\.0 " "$T/ldd.out" ||
  crt_fail "use_libcr does not resolve libcr.so.0 to $LIB: $(cat "$T/ldd.out")"
crt_run use_run 20 env LD_LIBRARY_PATH="$LIB" ./use_libcr
crt_log "  $(cat "$T/use_run.out")"
crt_expect_rc use_run 0 "the program: cr_init() >= 0 and cri_signum == CR_SIGNUM"

# The way MPICH uses libcr: the program links only a library (libmpich.so.12) that links -lcr,
# so libc is loaded before libcr and libcr must still find libc's sigaction.
cat >dep.c <<'EOF'
#include <libcr.h>
int dep_init(void) { return cr_init(); }
EOF
cat >use_dep.c <<'EOF'
#include <stdio.h>
int dep_init(void);
int main(void) {
  int id = dep_init();
  printf("cr_init() through libdep.so = %d\n", id);
  return id < 0;
}
EOF
# shellcheck disable=SC2046 # pkg-config prints separate words
crt_run dep_cc 60 cc "${RUN_CFLAGS[@]}" -shared -fPIC $(pkg-config --cflags libcr) dep.c -o libdep.so $(pkg-config --libs libcr)
crt_expect_rc dep_cc 0 "building libdep.so with -lcr"
crt_run use_dep_cc 60 cc "${RUN_CFLAGS[@]}" use_dep.c -o use_dep -L. -ldep -Wl,-rpath-link,"$LIB"
crt_expect_rc use_dep_cc 0 "building a program that links only libdep.so"
crt_run use_dep 20 env LD_LIBRARY_PATH="$LIB:$PWD" ./use_dep
crt_expect_rc use_dep 0 "libcr loaded as a dependency of another library: cr_init() >= 0"

# --- Exported symbols and sonames ------------------------------------------------------------
# defined_dyn LIB: the names of the dynamic symbols LIB defines, without symbol versions.
defined_dyn() { nm -D --defined-only "$1" | awk 'NF >= 3 { sub(/@.*/, "", $3); print $3 }' | sort -u; }

# expect_exports LIB SYM...: LIB defines and exports every SYM.
expect_exports() {
  local lib=$1 s
  shift
  crt_check "${lib##*/} exports $*"
  defined_dyn "$lib" >"$T/syms.txt" || crt_fail "nm -D $lib fails"
  for s in "$@"; do
    grep -qx -- "$s" "$T/syms.txt" || crt_fail "${lib##*/} does not export $s"
  done
}

# expect_soname LIB SONAME
expect_soname() {
  local so
  so=$(objdump -p "$1" | awk '$1 == "SONAME" { print $2 }')
  crt_check "${1##*/} has the soname $2"
  [[ $so == "$2" ]] || crt_fail "${1##*/} has the soname '$so', expected $2"
}

expect_exports "$LIB/libcr.so.0" cr_init cr_register_callback cr_checkpoint cr_get_restart_info \
  cr_request_checkpoint cr_poll_checkpoint cr_request_restart cri_init_checkpoint_args_t \
  cri_init_restart_args_t cr_link_me cri_signum
expect_exports "$LIB/libcr_run.so.0" cr_run_link_me cri_signum
expect_exports "$LIB/libcr_omit.so.0" cr_omit_link_me cri_signum
# libcr_run and libcr_omit are preloaded into programs that may also link libcr: an API entry
# point in them would interpose on libcr's (BLCR's stubs have none).
for l in libcr_run.so.0 libcr_omit.so.0; do
  crt_check "$l does not export libcr's API (it would interpose on libcr.so.0's)"
  defined_dyn "$LIB/$l" >"$T/syms.txt"
  for s in cr_init cr_register_callback cr_checkpoint cr_request_checkpoint; do
    ! grep -qx -- "$s" "$T/syms.txt" || crt_fail "$l exports $s"
  done
done
expect_soname "$LIB/libcr.so.0" libcr.so.0
expect_soname "$LIB/libcr_run.so.0" libcr_run.so.0
expect_soname "$LIB/libcr_omit.so.0" libcr_omit.so.0

# --- The installed cr_run and libcr.pc ---------------------------------------------------------
crt_check "the installed cr_run preloads $LIB's libraries"
grep -qF -- "'$LIB/libcr_run.so.0'" "$P/bin/cr_run" || crt_fail "$P/bin/cr_run does not name $LIB/libcr_run.so.0"
grep -qF -- "'$LIB/libcr_omit.so.0'" "$P/bin/cr_run" || crt_fail "$P/bin/cr_run does not name $LIB/libcr_omit.so.0"
crt_run installed_cr_run 10 "$P/bin/cr_run" --version
crt_expect_rc installed_cr_run 0 "the installed cr_run --version"
if [[ ${#RUN_CFLAGS[@]} -eq 0 ]]; then
  crt_run installed_preload 10 env -u LD_PRELOAD "$P/bin/cr_run" --omit sh -c 'printf "%s\n" "$LD_PRELOAD"; grep -c libcr_omit /proc/self/maps'
  crt_expect_rc installed_preload 0 "the installed cr_run --omit sh -c 'echo \$LD_PRELOAD; grep libcr_omit /proc/self/maps'"
  crt_check "the installed cr_run --omit preloads $LIB/libcr_omit.so.0, and it is mapped"
  [[ $(head -n1 "$T/installed_preload.out") == "$LIB/libcr_omit.so.0" ]] ||
    crt_fail "LD_PRELOAD under the installed cr_run --omit: $(head -n1 "$T/installed_preload.out")"
  [[ $(tail -n1 "$T/installed_preload.out") -ge 1 ]] || crt_fail "libcr_omit is not mapped into the command"
fi
crt_check "no installed text file names the build tree $CRKIT_BUILD_DIR"
! grep -rlF -- "$CRKIT_BUILD_DIR" "$P/bin/cr_run" "$LIB/pkgconfig/libcr.pc" "$P/include" ||
  crt_fail "installed files name the build tree"

# With DESTDIR (packaging), the files go under DESTDIR but name the final prefix.
crt_run install_destdir 120 env DESTDIR="$T/stage" "$CMAKE" --install "$CRKIT_BUILD_DIR" --prefix /opt/crkit-test
crt_expect_rc install_destdir 0 "DESTDIR=\$T/stage cmake --install --prefix /opt/crkit-test"
crt_check "with DESTDIR, cr_run and libcr.pc name /opt/crkit-test, not DESTDIR"
S=$T/stage/opt/crkit-test
[[ -x $S/bin/cr_run && -f $S/lib/pkgconfig/libcr.pc && -e $S/lib/libcr.so.0 ]] || crt_fail "the files are not under $S"
grep -qF -- "'/opt/crkit-test/lib/libcr_run.so.0'" "$S/bin/cr_run" || crt_fail "$S/bin/cr_run does not name /opt/crkit-test/lib"
grep -qx 'prefix=/opt/crkit-test' "$S/lib/pkgconfig/libcr.pc" || crt_fail "$S/lib/pkgconfig/libcr.pc: $(grep '^prefix=' "$S/lib/pkgconfig/libcr.pc")"
! grep -qF -- "$T/stage" "$S/bin/cr_run" "$S/lib/pkgconfig/libcr.pc" || crt_fail "DESTDIR leaked into the installed files"
[[ ! -e /opt/crkit-test ]] || crt_fail "/opt/crkit-test was created although DESTDIR was set"

# --- MPICH's real configure (opt-in, slow) ---------------------------------------------------
if [[ -n ${CRKIT_MPICH_REAL:-} ]]; then
  [[ -f $CRKIT_MPICH_REAL ]] || crt_fail "CRKIT_MPICH_REAL=$CRKIT_MPICH_REAL does not exist"
  crt_run mpich_real 1700 bash "$CRKIT_MPICH_REAL" "$P"
  tail -n 5 "$T/mpich_real.out" | sed 's/^/    /'
  crt_expect_rc mpich_real 0 "scripts/mpich-configure-check.sh $P (MPICH 4.0.2's configure)"
fi

crt_pass
