#!/usr/bin/env bash
# cr_run.sh - the cr_run script (BLCR's cr_run: a /bin/sh wrapper that preloads libcr_run or
# libcr_omit and execs the command):
#  - LD_PRELOAD after cr_run, cr_run --omit, --run after --omit, a nested cr_run (the inner
#    one's choice replaces the outer one's), and an existing LD_PRELOAD (space or colon
#    separated) whose libcr_run / libcr_omit entries are replaced, in any directory, while
#    every other entry is kept in order;
#  - the command's arguments and exit status pass through; usage errors exit 255, a command
#    that is not found 127, one that cannot be run 126; --help, -h, -? and --version;
#  - the preloaded library is really mapped into the command (/proc/self/maps);
#  - the script is plain POSIX sh (it also runs under dash and bash --posix).
# Needs CR_RUN (the build tree's cr_run) and CRKIT_LIB_DIR (where the libraries are built),
# set by tests/integration/CMakeLists.txt.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
crt_begin cr_run

[[ -n ${CR_RUN:-} ]] || crt_fail "CR_RUN is not set (run this test through ctest, or export CR_RUN)"
[[ -n ${CRKIT_LIB_DIR:-} ]] || crt_fail "CRKIT_LIB_DIR is not set (run this test through ctest)"
crt_check "cr_run exists in the build tree and is executable"
[[ -x $CR_RUN ]] || crt_fail "CR_RUN=$CR_RUN is not an executable (is libcr configured and built?)"
RUN_LIB=$CRKIT_LIB_DIR/libcr_run.so.0
OMIT_LIB=$CRKIT_LIB_DIR/libcr_omit.so.0
crt_check "cr_run preloads the build tree's libraries by absolute path"
for lib in "$RUN_LIB" "$OMIT_LIB"; do
  [[ -f $lib ]] || crt_fail "$lib does not exist (is libcr built?)"
  grep -qF -- "'$lib'" "$CR_RUN" || crt_fail "$CR_RUN does not name $lib"
done

# The commands run under cr_run are mostly this probe. It is linked statically, so the
# dynamic linker neither loads the preloaded libraries into it nor warns about the made-up
# paths below: what it prints is exactly what cr_run passed on. (Its path is in $T, so that
# the cleanup trap finds anything left running.)
#   probe              print LD_PRELOAD ("<unset>" if unset)
#   probe args A...    print each argument as <A>
#   probe exit N       exit with status N
#   probe signal N     die of signal N
#   probe pid          print its pid
command -v cc >/dev/null || crt_fail "no C compiler 'cc' (install build-essential)"
cat >"$T/probe.c" <<'EOF'
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
int main(int argc, char **argv) {
  if (argc >= 2 && strcmp(argv[1], "args") == 0) {
    for (int i = 2; i < argc; i++) printf("<%s>", argv[i]);
    putchar('\n');
  } else if (argc == 3 && strcmp(argv[1], "exit") == 0) {
    return atoi(argv[2]);
  } else if (argc == 3 && strcmp(argv[1], "signal") == 0) {
    signal(atoi(argv[2]), SIG_DFL);
    raise(atoi(argv[2]));
    return 99;
  } else if (argc == 2 && strcmp(argv[1], "pid") == 0) {
    printf("%ld\n", (long)getpid());
  } else {
    const char *p = getenv("LD_PRELOAD");
    puts(p ? p : "<unset>");
  }
  return 0;
}
EOF
cc -std=c11 -static -O -o "$T/probe" "$T/probe.c" 2>"$T/cc_probe.err" ||
  crt_fail "cannot build a static program with cc: $(cat "$T/cc_probe.err")"
SHOW=$T/probe

# A library built with AddressSanitizer cannot be preloaded into an uninstrumented program
# (ASan's runtime must come first): then the checks that run a dynamically linked program
# under the real preload (nested cr_run, /proc/self/maps) are left to the regular build.
ASAN_LIB=0
if objdump -p "$RUN_LIB" 2>/dev/null | grep -q 'NEEDED.*libasan'; then
  ASAN_LIB=1
  crt_log "libcr_run is built with AddressSanitizer: no nested cr_run and no maps checks here"
fi

# preload_is LABEL WANT WHAT: the stdout of crt_run LABEL (a run of $SHOW) is exactly WANT.
preload_is() {
  local label=$1 want=$2 what=$3
  crt_expect_rc "$label" 0 "$what"
  crt_check "$what: LD_PRELOAD is '$want'"
  local got
  got=$(cat "$T/$label.out")
  [[ $got == "$want" ]] || crt_fail "$what: LD_PRELOAD is '$got', expected '$want'"
}

# --- LD_PRELOAD ------------------------------------------------------------------------------
crt_run plain 10 env -u LD_PRELOAD "$CR_RUN" "$SHOW"
preload_is plain "$RUN_LIB" "cr_run COMMAND"

crt_run omit 10 env -u LD_PRELOAD "$CR_RUN" --omit "$SHOW"
preload_is omit "$OMIT_LIB" "cr_run --omit COMMAND"

crt_run omit_run 10 env -u LD_PRELOAD "$CR_RUN" --omit --run "$SHOW"
preload_is omit_run "$RUN_LIB" "cr_run --omit --run COMMAND (the last one wins)"

if [[ $ASAN_LIB -eq 0 ]]; then
  # The inner cr_run (a /bin/sh) runs with the outer one's library preloaded.
  crt_run nested 10 env -u LD_PRELOAD "$CR_RUN" --omit "$CR_RUN" --run "$SHOW"
  preload_is nested "$RUN_LIB" "cr_run --omit cr_run --run COMMAND (--run undoes the outer --omit)"

  crt_run nested_omit 10 env -u LD_PRELOAD "$CR_RUN" "$CR_RUN" --omit "$SHOW"
  preload_is nested_omit "$OMIT_LIB" "cr_run cr_run --omit COMMAND"
fi

crt_run dashdash 10 env LD_PRELOAD= "$CR_RUN" --omit -- "$SHOW"
preload_is dashdash "$OMIT_LIB" "cr_run --omit -- COMMAND with an empty LD_PRELOAD"

# Mixed separators, empty elements, stale libcr_run/libcr_omit entries in other directories
# and without one, and a look-alike (libcr_runner.so) that is not ours. The paths need not
# exist: cr_run only edits the list.
X=$T/nonexistent
existing="$X/a/libkeep1.so $X/old/libcr_run.so.0::libcr_omit.so.0  $X/b/libcr_runner.so:$X/old/libcr_omit.so:$X/lib/libcr_run.so.0.5.5 $X/b/libkeep2.so "
kept="$X/a/libkeep1.so:$X/b/libcr_runner.so:$X/b/libkeep2.so"
crt_run replace 10 env LD_PRELOAD="$existing" "$CR_RUN" "$SHOW"
preload_is replace "$RUN_LIB:$kept" \
  "cr_run with LD_PRELOAD='$existing' (old libcr_run/libcr_omit entries replaced, others kept in order)"

crt_run replace_omit 10 env LD_PRELOAD="$existing" "$CR_RUN" --omit "$SHOW"
preload_is replace_omit "$OMIT_LIB:$kept" "cr_run --omit with the same LD_PRELOAD"

crt_run idempotent 10 env LD_PRELOAD="$RUN_LIB:$X/a/libkeep1.so" "$CR_RUN" "$SHOW"
preload_is idempotent "$RUN_LIB:$X/a/libkeep1.so" "cr_run under cr_run's own LD_PRELOAD (no duplicate)"

# --- arguments and exit status ---------------------------------------------------------------
crt_run args 10 "$CR_RUN" "$SHOW" args "a b" "" '$HOME' "*" --omit
crt_expect_rc args 0 "cr_run probe args with awkward arguments"
crt_check "the arguments reach the command unchanged (spaces, empty, \$, *, options after COMMAND)"
[[ $(cat "$T/args.out") == '<a b><><$HOME><*><--omit>' ]] || crt_fail "the probe printed '$(cat "$T/args.out")'"

for st in 0 1 42 255; do
  crt_run exit 10 "$CR_RUN" "$SHOW" exit "$st"
  crt_expect_rc exit "$st" "cr_run probe exit $st (the command's status)"
done
crt_run omit_exit 10 "$CR_RUN" --omit -- "$SHOW" exit 7
crt_expect_rc omit_exit 7 "cr_run --omit -- probe exit 7"
crt_run signal 10 "$CR_RUN" "$SHOW" signal 15
crt_expect_rc signal 143 "cr_run probe signal 15 (killed by SIGTERM: 128+15)"

crt_run exec_pid 10 sh -c 'echo $$; exec "$0" "$1" pid' "$CR_RUN" "$SHOW"
crt_expect_rc exec_pid 0 "sh: echo \$\$; exec cr_run probe pid"
crt_check "cr_run execs the command (it runs in cr_run's own process)"
mapfile -t pids <"$T/exec_pid.out"
[[ ${#pids[@]} -eq 2 && ${pids[0]} == "${pids[1]}" ]] || crt_fail "the pids before and under cr_run differ: ${pids[*]}"

# --- usage, help, version, errors ------------------------------------------------------------
for opt in --help -h '-?'; do
  crt_run help 10 "$CR_RUN" "$opt"
  crt_expect_rc help 0 "cr_run $opt"
  crt_check "cr_run $opt prints the usage on stdout, nothing on stderr"
  grep -q '^Usage: cr_run ' "$T/help.out" || crt_fail "cr_run $opt printed no 'Usage: cr_run' line"
  grep -q -- '--omit' "$T/help.out" || crt_fail "cr_run $opt does not describe --omit"
  [[ ! -s $T/help.err ]] || crt_fail "cr_run $opt wrote to stderr: $(cat "$T/help.err")"
done

crt_run version 10 "$CR_RUN" --version
crt_expect_rc version 0 "cr_run --version"
crt_check "cr_run --version prints 'cr_run (crkit) VERSION'"
grep -Eq '^cr_run \(crkit\) [0-9]+\.[0-9]+\.[0-9]+$' "$T/version.out" ||
  crt_fail "cr_run --version printed '$(cat "$T/version.out")'"

crt_run nocmd 10 "$CR_RUN"
crt_expect_rc nocmd 255 "cr_run without a command (usage error)"
crt_expect_stderr nocmd 'no COMMAND' "cr_run without a command says that COMMAND is missing"
crt_check "a usage error prints nothing on stdout"
[[ ! -s $T/nocmd.out ]] || crt_fail "cr_run without a command wrote to stdout: $(cat "$T/nocmd.out")"
for args in "--omit" "--run --" "--"; do
  # shellcheck disable=SC2086 # the words of $args are separate options
  crt_run nocmd2 10 "$CR_RUN" $args
  crt_expect_rc nocmd2 255 "cr_run $args (no command)"
done

crt_run badopt 10 "$CR_RUN" --frobnicate true
crt_expect_rc badopt 255 "cr_run --frobnicate true (unknown option)"
crt_expect_stderr badopt "unknown option '--frobnicate'" "cr_run names the unknown option"

crt_run notfound 10 "$CR_RUN" crkit-no-such-command-here arg
crt_expect_rc notfound 127 "cr_run crkit-no-such-command-here (not found)"
crt_expect_stderr notfound 'crkit-no-such-command-here: command not found' "cr_run names the missing command"

crt_run notfound_path 10 "$CR_RUN" "$T/missing/prog"
crt_expect_rc notfound_path 127 "cr_run $T/missing/prog (no such file)"
crt_expect_stderr notfound_path "$T/missing/prog: No such file" "cr_run names the missing file"

crt_run dashcmd 10 "$CR_RUN" -- --help
crt_expect_rc dashcmd 127 "cr_run -- --help (a command named --help, not found)"
crt_expect_stderr dashcmd '--help: command not found' "after --, --help is the command"

printf 'echo hi\n' >"$T/noexec.sh"
chmod 644 "$T/noexec.sh"
crt_run noexec 10 "$CR_RUN" "$T/noexec.sh"
crt_expect_rc noexec 126 "cr_run on a file without execute permission"
crt_expect_stderr noexec "noexec.sh: Permission denied" "cr_run says why it cannot run the file"

mkdir -p "$T/bin" && cp -- "$SHOW" "$T/bin/crkit-show" || crt_fail "cannot copy $SHOW to $T/bin"
crt_run pathsearch 10 env -u LD_PRELOAD PATH="/nonexistent-crkit:$T/bin" "$CR_RUN" crkit-show
preload_is pathsearch "$RUN_LIB" "cr_run crkit-show found through PATH"
crt_run pathcwd 10 env -u LD_PRELOAD PATH="/nonexistent-crkit:" "$CR_RUN" probe
preload_is pathcwd "$RUN_LIB" "cr_run probe found through an empty PATH element (the cwd, $T)"

# --- the library is really loaded ------------------------------------------------------------
if [[ $ASAN_LIB -eq 0 ]]; then
  crt_run maps 10 "$CR_RUN" grep -F libcr_ /proc/self/maps
  crt_expect_rc maps 0 "cr_run grep libcr_ /proc/self/maps"
  crt_check "libcr_run.so.0 from the build tree is mapped into the command, libcr_omit is not"
  real_run=$(readlink -f -- "$RUN_LIB")
  grep -qF -- "$real_run" "$T/maps.out" || crt_fail "$real_run is not in the command's maps: $(cat "$T/maps.out")"
  ! grep -q 'libcr_omit' "$T/maps.out" || crt_fail "libcr_omit is mapped too"
  crt_check "the dynamic linker had nothing to complain about"
  [[ ! -s $T/maps.err ]] || crt_fail "stderr of the command: $(cat "$T/maps.err")"

  crt_run maps_omit 10 "$CR_RUN" --omit grep -F libcr_ /proc/self/maps
  crt_expect_rc maps_omit 0 "cr_run --omit grep libcr_ /proc/self/maps"
  crt_check "with --omit, libcr_omit.so.0 is mapped and libcr_run is not"
  real_omit=$(readlink -f -- "$OMIT_LIB")
  grep -qF -- "$real_omit" "$T/maps_omit.out" || crt_fail "$real_omit is not in the command's maps"
  ! grep -q 'libcr_run' "$T/maps_omit.out" || crt_fail "libcr_run is mapped too"

  crt_run maps_child 10 "$CR_RUN" sh -c 'grep -cF libcr_run /proc/self/maps'
  crt_expect_rc maps_child 0 "cr_run sh -c 'grep libcr_run /proc/self/maps'"
  crt_check "the command's children inherit the preload"
  [[ $(cat "$T/maps_child.out") -ge 1 ]] || crt_fail "libcr_run is not mapped into a child of the command"
fi

# --- portability -----------------------------------------------------------------------------
crt_check "cr_run's shebang is /bin/sh"
[[ $(head -n1 -- "$CR_RUN") == '#!/bin/sh' ]] || crt_fail "first line is '$(head -n1 -- "$CR_RUN")'"
for sh in dash "bash --posix"; do
  command -v "${sh%% *}" >/dev/null || { crt_log "no ${sh%% *}: not checked"; continue; }
  # shellcheck disable=SC2086 # "bash --posix" is a command and an option
  crt_run posix 10 env LD_PRELOAD="$X/a/libkeep1.so $X/old/libcr_run.so.0" $sh "$CR_RUN" --omit "$SHOW"
  preload_is posix "$OMIT_LIB:$X/a/libkeep1.so" "cr_run under $sh"
done

crt_pass
