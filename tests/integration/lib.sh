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

# ---------------------------------------------------------------------------------------------
# Helpers for process trees (several processes checkpointed as one job).

# crt_link_examples NAME...: make $T/bin/NAME a symlink to each example program and set BIN to
# $T/bin. Started through these links, every process of a job (also an exec'd pipeline stage
# whose own arguments name no file) has $T in its command line, so the cleanup trap finds it.
crt_link_examples() {
  BIN=$T/bin
  mkdir -p "$BIN" || crt_fail "cannot create $BIN"
  local e p
  for e in "$@"; do
    p=$(crt_example "$e") || exit 1
    ln -sf -- "$p" "$BIN/$e" || crt_fail "cannot link $BIN/$e"
  done
}

# crt_stat_field PID N: field N of /proc/PID/stat, counted after the "(comm)" field (1 state,
# 2 ppid, 3 pgrp, 4 session, ...). Fails (status 1, no output) if PID does not exist.
crt_stat_field() {
  local line
  { read -r line <"/proc/$1/stat"; } 2>/dev/null || return 1
  line=${line##*) }
  local -a f
  read -r -a f <<<"$line"
  [[ -n ${f[$(($2 - 1))]:-} ]] || return 1
  printf '%s\n' "${f[$(($2 - 1))]}"
}
crt_state() { crt_stat_field "$1" 1; } # R S D T t Z ...
crt_ppid() { crt_stat_field "$1" 2; }
crt_pgid() { crt_stat_field "$1" 3; }
crt_sid() { crt_stat_field "$1" 4; }

# crt_comm PID: the process's name (/proc/PID/comm).
crt_comm() { { cat "/proc/$1/comm"; } 2>/dev/null; }

# crt_tracer PID: the pid of the process tracing PID (0: none). Fails if PID does not exist.
crt_tracer() {
  local v
  v=$(awk '/^TracerPid:/ { print $2 }' "/proc/$1/status" 2>/dev/null) || return 1
  [[ -n $v ]] || return 1
  printf '%s\n' "$v"
}

# crt_children PID: the pids of PID's children (live or zombie), ascending, one per line. Scans
# /proc/*/stat (/proc/PID/task/*/children needs CONFIG_PROC_CHILDREN).
crt_children() {
  local f line pid
  local -a fl
  for f in /proc/[0-9]*/stat; do
    { read -r line <"$f"; } 2>/dev/null || continue
    pid=${f#/proc/}
    pid=${pid%/stat}
    line=${line##*) }
    read -r -a fl <<<"$line"
    [[ ${fl[1]:-} == "$1" ]] && printf '%s\n' "$pid"
  done | sort -n
}

# crt_wait_state PID STATE WHAT [TIMEOUT]: wait until PID is in STATE (one letter, e.g. T).
crt_wait_state() {
  local pid=$1 want=$2 what=$3 limit=${4:-20}
  local deadline=$((SECONDS + limit))
  until [[ $(crt_state "$pid") == "$want" ]]; do
    ((SECONDS < deadline)) ||
      crt_fail "timed out after ${limit} s waiting for $what (process $pid is in state '$(crt_state "$pid")')"
    sleep 0.05
  done
}

# crt_wait_file FILE PID [TIMEOUT]: wait until FILE exists and is not empty (e.g. a ready file
# written by some process of the job whose root is PID); fails early if PID dies.
crt_wait_file() {
  local file=$1 pid=$2 limit=${3:-60}
  local deadline=$((SECONDS + limit))
  until [[ -s $file ]]; do
    crt_alive "$pid" || crt_fail "process $pid exited before $file appeared"
    ((SECONDS < deadline)) || crt_fail "timed out after ${limit} s waiting for $file"
    sleep 0.05
  done
}

# crt_ready_value FILE KEY: the value of the "KEY value" line of a ready file (empty if none).
crt_ready_value() { awk -v k="$2" 'NR > 1 && $1 == k { print $2; exit }' "$1" 2>/dev/null; }

# crt_pids_free PID...: no process, not even a zombie, has any of the PIDs.
crt_pids_free() {
  local p
  for p in "$@"; do [[ ! -e /proc/$p ]] || return 1; done
  return 0
}

# crt_wait_pids_free TIMEOUT WHAT PID...: wait until crt_pids_free PID... (a killed process
# whose parent died too is re-parented to init and stays a zombie until init reaps it, which
# can take a few seconds; its PID cannot be restored before that).
crt_wait_pids_free() {
  local limit=$1 what=$2
  shift 2
  local deadline=$((SECONDS + limit)) p
  until crt_pids_free "$@"; do
    if ((SECONDS >= deadline)); then
      for p in "$@"; do
        [[ -e /proc/$p ]] && crt_log "  pid $p: state $(crt_state "$p"), $(tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null)"
      done
      crt_fail "timed out after ${limit} s waiting for $what"
    fi
    sleep 0.05
  done
}

# crt_restored PID PATTERN: PID runs the restored program (its command line, which comes from
# its restored memory, contains PATTERN; a stand-in of cr_restart's does not) and has been
# released (not traced). Use a PATTERN that the cr_restart command line does not contain.
crt_restored() {
  [[ -e /proc/$1 ]] || return 1
  local st
  st=$(crt_state "$1") || return 1
  [[ $st != t && $st != Z && $st != X ]] || return 1
  grep -qaF -- "$2" "/proc/$1/cmdline" 2>/dev/null || return 1
  [[ $(crt_tracer "$1") == 0 ]]
}

# crt_all_restored PATTERN PID...: crt_restored PID PATTERN for every PID.
crt_all_restored() {
  local pat=$1 p
  shift
  for p in "$@"; do crt_restored "$p" "$pat" || return 1; done
  return 0
}

# crt_bg LABEL CMD...: start CMD in the background (stdin /dev/null, stdout and stderr to
# $T/LABEL.out and $T/LABEL.err); its pid is left in BGPID. Reap it with crt_wait_bg.
crt_bg() {
  local label=$1
  shift
  crt_log "run in the background: $*"
  "$@" </dev/null >"$T/$label.out" 2>"$T/$label.err" &
  # shellcheck disable=SC2034 # read by the caller
  BGPID=$!
}

# crt_wait_bg PID LABEL WANT WHAT [TIMEOUT]: wait (up to TIMEOUT s, default 60) for the
# background command PID started by crt_bg LABEL; its exit status must be WANT, else fail
# showing its stderr.
crt_wait_bg() {
  local pid=$1 label=$2 want=$3 what=$4 limit=${5:-60} st=0
  crt_check "$what exits with status $want"
  local deadline=$((SECONDS + limit))
  while crt_alive "$pid"; do
    ((SECONDS < deadline)) || crt_fail "$what: still running after $limit s"
    sleep 0.05
  done
  { wait "$pid"; } 2>/dev/null || st=$?
  crt_log "  -> exit status $st"
  if [[ $st -ne $want ]]; then
    printf '[%s] stderr of %s:\n' "$CRT_NAME" "$label" >&2
    sed 's/^/    /' "$T/$label.err" >&2 2>/dev/null
    crt_fail "$what exited with status $st, expected $want"
  fi
}

# crt_json FILE EXPR: evaluate the Python expression EXPR with doc = the JSON document in FILE
# (e.g. the output of cr_info --json) and print the result; a list or tuple prints one item per
# line. Fails the test if FILE is not JSON or EXPR raises.
crt_json() {
  python3 - "$1" "$2" <<'PY' || crt_fail "cannot evaluate '$2' on $1"
import json, sys
with open(sys.argv[1]) as f:
    doc = json.load(f)
r = eval(sys.argv[2], {"doc": doc})
if isinstance(r, (list, tuple)):
    for x in r:
        print(x)
else:
    print(r)
PY
}

# crt_expect_same FILE WANTFILE WHAT: FILE has exactly the content of WANTFILE; else fail,
# showing the first differences.
crt_expect_same() {
  local file=$1 want=$2 what=$3
  crt_check "$what"
  [[ -f $file ]] || crt_fail "$what: $file does not exist"
  if ! cmp -s -- "$want" "$file"; then
    printf '[%s] diff %s %s (first 20 lines):\n' "$CRT_NAME" "${want#"$T"/}" "${file#"$T"/}" >&2
    diff -- "$want" "$file" 2>&1 | head -n 20 | sed 's/^/    /' >&2
    crt_fail "$what: $file differs from $want"
  fi
}

# crt_image_pids INFOJSON: the pids of the processes in an image (from cr_info --json output),
# ascending, on one line separated by spaces.
crt_image_pids() {
  crt_json "$1" '" ".join(str(p) for p in sorted(p["pid"] for p in doc["processes"]))'
}

# crt_image_pipes INFOJSON KIND: one line per pipe of fds of kind KIND (pipe or fifo) in an
# image (from cr_info --json output), grouped by pipe_ino: "INO BUFFERED READERS WRITERS".
# BUFFERED is buffered_bytes, or "inconsistent" if its fds disagree; READERS and WRITERS
# count the fds open for reading and for writing (O_RDWR counts as both).
crt_image_pipes() {
  python3 - "$1" "$2" <<'PY' || crt_fail "cannot list the pipes of $1"
import json, sys
with open(sys.argv[1]) as f:
    doc = json.load(f)
pipes = {}
for fd in doc["fds"]:
    if fd["kind"] == sys.argv[2]:
        pipes.setdefault(fd["pipe_ino"], []).append(fd)
for ino in sorted(pipes):
    fds = pipes[ino]
    sizes = {fd["buffered_bytes"] for fd in fds}
    buffered = sizes.pop() if len(sizes) == 1 else "inconsistent"
    readers = sum(1 for fd in fds if fd["flags"] & 3 in (0, 2))
    writers = sum(1 for fd in fds if fd["flags"] & 3 in (1, 2))
    print(ino, buffered, readers, writers)
PY
}

# crt_image_fds INFOJSON KIND...: describe the fds of the given kinds in an image, one per line
# (for the test log).
crt_image_fds() {
  local f=$1
  shift
  python3 - "$f" "$@" <<'PY' || crt_fail "cannot list the fds of $f"
import json, sys
with open(sys.argv[1]) as f:
    doc = json.load(f)
for fd in doc["fds"]:
    if fd["kind"] in sys.argv[2:]:
        extra = ""
        if "pipe_ino" in fd:
            extra = f" pipe_ino {fd['pipe_ino']} buffered {fd.get('buffered_bytes')}"
        print(f"pid {fd['pid']} fd {fd['fd']}: {fd['kind']} {fd.get('path', '')} "
              f"flags {fd.get('flags_text', fd['flags'])}{extra}")
PY
}

# crt_wait_released RPID LABEL PATTERN PID... : wait (up to 30 s) until every PID is restored
# and released (crt_restored PID PATTERN), while the cr_restart started by crt_bg LABEL (pid
# RPID) runs; fails early, showing its stderr, if that cr_restart ends first.
crt_wait_released() {
  local rpid=$1 label=$2 pat=$3
  shift 3
  local deadline=$((SECONDS + 30))
  until crt_all_restored "$pat" "$@"; do
    if ! crt_alive "$rpid"; then
      printf '[%s] stderr of %s:\n' "$CRT_NAME" "$label" >&2
      sed 's/^/    /' "$T/$label.err" >&2 2>/dev/null
      crt_fail "cr_restart ($label) ended before the processes $* were restored and released"
    fi
    if ((SECONDS >= deadline)); then
      local p
      for p in "$@"; do
        crt_log "  pid $p: state '$(crt_state "$p")', tracer '$(crt_tracer "$p")', $(tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null | cut -c1-200)"
      done
      crt_fail "timed out after 30 s waiting for the processes $* to be restored and released"
    fi
    sleep 0.05
  done
  crt_log "processes $* are restored and released"
}

# crt_pids_matching TEXT: the pids of the processes (other than this shell) whose command line
# contains TEXT, one per line.
crt_pids_matching() {
  local f pid
  local -a args
  for f in /proc/[0-9]*/cmdline; do
    pid=${f#/proc/}
    pid=${pid%/cmdline}
    [[ $pid == "$$" || $pid == "${BASHPID:-$$}" ]] && continue
    { mapfile -t -d '' args <"$f"; } 2>/dev/null || continue
    [[ "${args[*]}" == *"$1"* ]] && printf '%s\n' "$pid"
  done
  return 0
}
