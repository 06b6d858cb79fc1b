# shellcheck shell=bash
# lib.sh - helpers shared by crkit's integration tests (sourced by tests/integration/*.sh).
#
# Environment, set by ctest (tests/integration/CMakeLists.txt):
#   CR_CHECKPOINT, CR_RESTART, CR_INFO   paths of the tools
#   EXAMPLES                             directory holding the example programs
# Optional:
#   CRKIT_TEST_TMPDIR   parent of the per-test temp dir (default /tmp; must be traversable by
#                       uid 65534 for the non-root tests)
#   CRKIT_KEEP_TMP=1    keep the temp dir of a failed test for inspection
#
# A test does:
#   source "$(dirname "$0")/lib.sh"
#   crt_begin NAME          # temp dir $T (mode 755, the cwd), cleanup trap, tool checks
#   ...                     # crt_log / crt_check / crt_fail / crt_run / crt_expect_rc ...
#   crt_pass
# Exit status: 0 pass, 1 fail, 77 skip (ctest SKIP_RETURN_CODE).
#
# The cleanup trap kills every process whose command line mentions $T (example programs,
# tools, restarted copies: every test passes a path inside $T to each of them), then removes
# $T, so a test never leaves processes or files behind.

set -u -o pipefail

CRT_SKIP_RC=77
CRT_NOBODY_UID=65534
# Run a command as the unprivileged user 65534 (no supplementary groups, no capabilities).
AS_NOBODY=(setpriv --reuid="$CRT_NOBODY_UID" --regid="$CRT_NOBODY_UID" --clear-groups)

CRT_NAME=${CRT_NAME:-test}
T=""
RC=0

crt_log() { printf '[%s] %s\n' "$CRT_NAME" "$*"; }

# Announce a check before making it.
crt_check() { printf '[%s] CHECK: %s\n' "$CRT_NAME" "$*"; }

crt_fail() {
  printf '[%s] FAIL: %s\n' "$CRT_NAME" "$*" >&2
  exit 1
}

crt_skip() {
  printf '[%s] SKIP: %s\n' "$CRT_NAME" "$*"
  exit "$CRT_SKIP_RC"
}

crt_pass() {
  printf '[%s] PASS\n' "$CRT_NAME"
  exit 0
}

crt_is_root() { [[ $(id -u) -eq 0 ]]; }

crt_need_root() { crt_is_root || crt_skip "needs root ($*)"; }

# Print the logs of a failed test: every *.log / *.err / *.out file in $T.
crt_dump_logs() {
  [[ -n $T && -d $T ]] || return 0
  local f
  while IFS= read -r -d '' f; do
    [[ -s $f ]] || continue
    printf -- '----- %s (last 40 lines) -----\n' "${f#"$T"/}" >&2
    tail -n 40 -- "$f" | cut -c1-400 >&2
  done < <(find "$T" -maxdepth 2 -type f \( -name '*.log' -o -name '*.err' -o -name '*.out' \) -print0 2>/dev/null | sort -z)
}

# Kill (SIGKILL) every process whose command line mentions the temp dir.
crt_kill_ours() {
  [[ -n $T ]] || return 0
  local f pid
  for _ in 1 2 3; do
    local found=0
    # grep's own command line mentions $T too; it has exited by the time we get its name.
    while IFS= read -r f; do
      pid=${f#/proc/}
      pid=${pid%/cmdline}
      [[ $pid == "$$" || $pid == "${BASHPID:-$$}" ]] && continue
      if kill -KILL "$pid" 2>/dev/null; then
        found=1
      fi
    done < <(grep -laF -- "$T/" /proc/[0-9]*/cmdline 2>/dev/null)
    [[ $found -eq 0 ]] && break
    sleep 0.2
  done
  local j
  for j in $(jobs -p); do kill -KILL "$j" 2>/dev/null; done
  wait 2>/dev/null
  return 0
}

crt_cleanup() {
  local rc=$?
  trap - EXIT
  crt_kill_ours
  if [[ $rc -ne 0 && $rc -ne $CRT_SKIP_RC ]]; then
    crt_dump_logs
    if [[ ${CRKIT_KEEP_TMP:-0} == 1 ]]; then
      printf '[%s] kept %s\n' "$CRT_NAME" "$T" >&2
      exit "$rc"
    fi
  fi
  cd / && rm -rf -- "$T"
  exit "$rc"
}

# Close every inheritable file descriptor above 2 of this shell. ctest hands its tests some
# (its log file open for writing, a pipe); a checkpointed example would inherit them, its
# restart would then reopen (and truncate!) ctest's log, and an unprivileged restart would
# fail on them. bash's own descriptors (the script it reads) are close-on-exec and stay.
crt_close_inherited_fds() {
  local f fd flags
  for f in "/proc/$$/fdinfo/"*; do
    fd=${f##*/}
    [[ $fd =~ ^[0-9]+$ ]] || continue
    ((fd > 2)) || continue
    flags=$(awk '/^flags:/ { print $2 }' "$f" 2>/dev/null) || continue
    [[ -n $flags ]] || continue
    # O_CLOEXEC is 02000000 (octal)
    if (((8#$flags & 8#2000000) == 0)); then
      eval "exec $fd>&-"
    fi
  done
}

# crt_begin NAME: check the environment, make the temp dir $T and cd into it.
crt_begin() {
  CRT_NAME=$1
  crt_close_inherited_fds
  local v
  for v in CR_CHECKPOINT CR_RESTART CR_INFO EXAMPLES; do
    [[ -n ${!v:-} ]] || crt_fail "$v is not set (run this test through ctest, or export $v)"
  done
  for v in CR_CHECKPOINT CR_RESTART CR_INFO; do
    [[ -x ${!v} ]] || crt_fail "$v=${!v} is not an executable (is the project built?)"
  done
  [[ -d $EXAMPLES ]] || crt_fail "EXAMPLES=$EXAMPLES is not a directory (is the project built?)"
  T=$(mktemp -d "${CRKIT_TEST_TMPDIR:-/tmp}/crkit-it-$CRT_NAME.XXXXXX") || crt_fail "mktemp failed"
  chmod 755 "$T"
  trap crt_cleanup EXIT
  trap 'exit 143' TERM
  trap 'exit 130' INT
  cd "$T" || crt_fail "cannot cd to $T"
  crt_log "temp dir $T (running as uid $(id -u))"
}

# crt_example NAME: path of an example program (fails if it is not built).
crt_example() {
  local p="$EXAMPLES/$1"
  [[ -x $p ]] || crt_fail "example program $p is missing (is the project built?)"
  printf '%s\n' "$p"
}

# crt_wait_until TIMEOUT_S WHAT CMD...: poll CMD every 50 ms until it succeeds.
crt_wait_until() {
  local limit=$1 what=$2
  shift 2
  local deadline=$((SECONDS + limit))
  until "$@"; do
    ((SECONDS < deadline)) || crt_fail "timed out after ${limit} s waiting for $what"
    sleep 0.05
  done
}

# crt_alive PID: the process exists and is not a zombie.
crt_alive() {
  local st
  st=$(awk '{ sub(/^.*\) /, ""); print $1 }' "/proc/$1/stat" 2>/dev/null) || return 1
  [[ -n $st && $st != Z && $st != X ]]
}

# crt_wait_ready READYFILE PID [TIMEOUT]: wait until the example at PID said "ready"
# (its $CRKIT_READY file exists); check that the file names PID. Fails early if PID dies.
crt_wait_ready() {
  local file=$1 pid=$2 limit=${3:-60}
  local deadline=$((SECONDS + limit))
  until [[ -s $file ]]; do
    crt_alive "$pid" || crt_fail "process $pid exited before it became ready ($file)"
    ((SECONDS < deadline)) || crt_fail "timed out after ${limit} s waiting for $file"
    sleep 0.05
  done
  local got
  got=$(head -n1 -- "$file")
  [[ $got == "$pid" ]] || crt_fail "$file says pid '$got', expected $pid"
  crt_log "process $pid is ready"
}

# crt_lines FILE: number of lines in FILE (0 if missing).
crt_lines() {
  if [[ -f $1 ]]; then wc -l <"$1" | tr -d ' '; else echo 0; fi
}

# crt_wait_lines FILE N PID [TIMEOUT]: wait until FILE has at least N lines (written by the
# process PID; fails early if it dies).
crt_wait_lines() {
  local file=$1 n=$2 pid=$3 limit=${4:-30}
  local deadline=$((SECONDS + limit))
  until [[ $(crt_lines "$file") -ge $n ]]; do
    crt_alive "$pid" || crt_fail "process $pid exited before $file had $n lines"
    ((SECONDS < deadline)) || crt_fail "timed out after ${limit} s waiting for $n lines in $file"
    sleep 0.05
  done
}

# crt_run LABEL TIMEOUT CMD...: run CMD (stdin /dev/null) with a time limit; its stdout and
# stderr go to $T/LABEL.out and $T/LABEL.err; its exit status is left in RC.
crt_run() {
  local label=$1 limit=$2
  shift 2
  crt_log "run: $*"
  RC=0
  # The outer 2>/dev/null swallows bash's "Killed" notice for a background job that the
  # command killed (cr_checkpoint --kill); the command's own stderr goes to LABEL.err.
  { timeout -k 5 "$limit" "$@" </dev/null >"$T/$label.out" 2>"$T/$label.err"; } 2>/dev/null || RC=$?
  crt_log "  -> exit status $RC"
}

# crt_expect_rc LABEL WANT [WHAT]: RC (from crt_run LABEL) must be WANT; else fail, showing
# the command's stderr.
crt_expect_rc() {
  local label=$1 want=$2 what=${3:-$1}
  crt_check "$what exits with status $want"
  if [[ $RC -ne $want ]]; then
    local extra=""
    [[ $RC -eq 124 ]] && extra=" (124: timed out)"
    printf '[%s] stderr of %s:\n' "$CRT_NAME" "$label" >&2
    sed 's/^/    /' "$T/$label.err" >&2 2>/dev/null
    crt_fail "$what exited with status $RC$extra, expected $want"
  fi
}

# crt_expect_stderr LABEL REGEX WHAT: the stderr of crt_run LABEL matches REGEX
# (extended, case-insensitive).
crt_expect_stderr() {
  local label=$1 re=$2 what=$3
  crt_check "$what"
  if ! grep -Eqi -- "$re" "$T/$label.err"; then
    printf '[%s] stderr of %s:\n' "$CRT_NAME" "$label" >&2
    sed 's/^/    /' "$T/$label.err" >&2
    crt_fail "$what: stderr of $label does not match /$re/"
  fi
}

# crt_reap PID WANT WHAT: wait for our background child PID; its exit status must be WANT
# (137 = killed by SIGKILL).
crt_reap() {
  local pid=$1 want=$2 what=$3 st=0
  crt_check "$what"
  # A killed process must be gone at once; one that should finish gets up to 60 s.
  local limit=60
  [[ $want -eq 137 ]] && limit=10
  local deadline=$((SECONDS + limit))
  while crt_alive "$pid"; do
    ((SECONDS < deadline)) || crt_fail "$what: process $pid is still running after $limit s"
    sleep 0.05
  done
  { wait "$pid"; } 2>/dev/null || st=$? # no "Killed" job notice from bash
  [[ $st -eq $want ]] || crt_fail "$what: process $pid ended with status $st, expected $want"
}

# crt_expect_seq FILE N: FILE holds exactly the lines 1..N.
crt_expect_seq() {
  local file=$1 n=$2
  crt_check "$file holds exactly 1..$n (no gap, no repeat)"
  [[ -f $file ]] || crt_fail "$file does not exist"
  if ! seq 1 "$n" | cmp -s - "$file"; then
    local lines first_bad
    lines=$(crt_lines "$file")
    first_bad=$(awk -v n="$n" 'BEGIN { e = 1 } { if ($0 != e) { print NR ": \"" $0 "\" (expected " e ")"; exit } e++ }
                END { if (e <= n && NR == e - 1) print "file ends after line " NR }' "$file")
    crt_fail "$file is not 1..$n: $lines lines; first difference at line ${first_bad:-?}"
  fi
}

# crt_expect_gone PID WHAT: no live process has PID.
crt_expect_gone() {
  crt_check "$2"
  if crt_alive "$1"; then
    crt_fail "$2: process $1 is still alive ($(tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null))"
  fi
}

# crt_check_image FILE: the image exists, is a regular non-empty file of mode 0400.
crt_check_image() {
  local img=$1
  crt_check "image $img exists, is non-empty and has mode 0400"
  [[ -f $img ]] || crt_fail "image $img was not created"
  [[ -s $img ]] || crt_fail "image $img is empty"
  local mode
  mode=$(stat -c %a -- "$img")
  [[ $mode == 400 ]] || crt_fail "image $img has mode $mode, expected 400"
  crt_log "image size $(stat -c %s -- "$img") bytes"
}

# crt_free_pid: print a PID that no process uses now.
crt_free_pid() {
  local max p
  max=$(cat /proc/sys/kernel/pid_max)
  for ((p = max - 1; p > max - 1000; p--)); do
    [[ -e /proc/$p ]] || { echo "$p"; return 0; }
  done
  crt_fail "no free PID found"
}

# crt_nobody_can_exec PATH: uid 65534 can execute PATH.
crt_nobody_can_exec() { "${AS_NOBODY[@]}" test -x "$1" -a -r "$1" 2>/dev/null; }

# crt_tools_for_nobody EXAMPLE...: make the tools and the given examples executable by uid
# 65534. If the build tree is not reachable by that user, copy them into $T/bin (mode 755)
# and repoint CR_CHECKPOINT, CR_RESTART, CR_INFO and EXAMPLES there.
crt_tools_for_nobody() {
  local ok=1 p e
  for p in "$CR_CHECKPOINT" "$CR_RESTART" "$CR_INFO"; do crt_nobody_can_exec "$p" || ok=0; done
  for e in "$@"; do crt_nobody_can_exec "$EXAMPLES/$e" || ok=0; done
  if [[ $ok -eq 1 ]]; then
    crt_log "uid $CRT_NOBODY_UID can run the tools from the build tree"
    return 0
  fi
  crt_log "the build tree is not accessible to uid $CRT_NOBODY_UID: copying tools and examples to $T/bin"
  mkdir -p "$T/bin" && chmod 755 "$T/bin"
  if ! cp -- "$CR_CHECKPOINT" "$CR_RESTART" "$CR_INFO" "$T/bin/"; then
    crt_fail "cannot copy the tools to $T/bin"
  fi
  for e in "$@"; do cp -- "$EXAMPLES/$e" "$T/bin/$e" || crt_fail "cannot copy $e"; done
  chmod 755 "$T"/bin/*
  CR_CHECKPOINT=$T/bin/${CR_CHECKPOINT##*/}
  CR_RESTART=$T/bin/${CR_RESTART##*/}
  CR_INFO=$T/bin/${CR_INFO##*/}
  EXAMPLES=$T/bin
  for p in "$CR_CHECKPOINT" "$CR_RESTART" "$CR_INFO"; do
    crt_nobody_can_exec "$p" || crt_fail "uid $CRT_NOBODY_UID cannot execute $p even after copying"
  done
}

# crt_nobody_dir PATH: make a directory owned by uid 65534 (mode 755).
crt_nobody_dir() {
  if ! { mkdir -p "$1" && chown "$CRT_NOBODY_UID:$CRT_NOBODY_UID" "$1" && chmod 755 "$1"; }; then
    crt_fail "cannot create $1 for uid $CRT_NOBODY_UID"
  fi
}
