#!/usr/bin/env bash
# checkpoint_safety.sh - cr_checkpoint never harms its target, and concurrent checkpoints to one
# file never clobber each other:
#  a. SIGTERM sent to cr_checkpoint at random small delays (0-30 ms), and right after it froze
#     the target (TracerPid set): every time the target keeps running, untraced and not
#     stopped; cr_checkpoint exits 0 or dies of SIGTERM (143); a cancelled checkpoint leaves no
#     image, a finished one a valid image; no temporary file is left. threads_simd still ends
#     with the checksum of an uninterrupted run.
#  b. Two concurrent checkpoints to the same file (of the same process: one may fail cleanly;
#     of two processes: both succeed) leave a valid image and no temporary file.
#  c. --clobber onto an existing 0644 file, and the atomic default under umask 0777, leave an
#     image of mode 0400.
#  d. Failing to create the file names the user's file (and the temporary one).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
crt_begin checkpoint_safety

PROG=$(crt_example threads_simd) || exit 1
SLEEPER=$(crt_example sleeper) || exit 1

crt_run reference 120 "$PROG" "$T/reference.txt" 1
crt_expect_rc reference 0 "uninterrupted threads_simd run"
want=$(cat "$T/reference.txt")
crt_log "uninterrupted result: $want"
[[ $want == "checksum "* ]] || crt_fail "unexpected reference output '$want'"

# The target runs (paced) for about 14 s: long enough for every part below.
crt_log "start: threads_simd run.txt 14"
CRKIT_READY="$T/ready" "$PROG" "$T/run.txt" 14 </dev/null >"$T/threads_simd.log" 2>&1 &
pid=$!
crt_wait_ready "$T/ready" "$pid"

# status_field PID FIELD: a field of /proc/PID/status (bash builtins only: fast).
status_field() {
  local k v
  while read -r k v; do
    [[ $k == "$2:" ]] && { printf '%s\n' "${v%% *}"; return 0; }
  done 2>/dev/null <"/proc/$1/status"
  return 1
}

# target_ok WHAT: the target is alive, and none of its threads is traced or stopped.
target_ok() {
  crt_alive "$pid" || crt_fail "$1: the target $pid died"
  local task tracer state
  for task in /proc/"$pid"/task/*; do
    task=${task##*/}
    tracer=$(status_field "$task" TracerPid) || continue # thread just exited
    state=$(status_field "$task" State) || continue
    [[ $tracer == 0 ]] || crt_fail "$1: thread $task of the target is still traced by $tracer"
    [[ $state != T && $state != t ]] || crt_fail "$1: thread $task of the target is stopped ($state)"
  done
}

# no_temp_files WHAT: no temporary image file is left in $T.
no_temp_files() {
  local left
  left=$(find "$T" -maxdepth 1 -name '.*.tmp*' -printf '%f ')
  [[ -z $left ]] || crt_fail "$1: temporary files left behind: $left"
}

# valid_image FILE WHAT: cr_info accepts FILE.
valid_image() {
  timeout 30 "$CR_INFO" -q "$1" </dev/null >"$T/info.out" 2>"$T/info.err" ||
    crt_fail "$2: $1 is not a valid image: $(cat "$T/info.err")"
}

# wait_ck PID: wait (at most 30 s) for the background cr_checkpoint PID; its status goes to ST.
wait_ck() {
  local deadline=$((SECONDS + 30))
  while crt_alive "$1"; do
    ((SECONDS < deadline)) || crt_fail "cr_checkpoint $1 still runs after 30 s"
    sleep 0.01
  done
  ST=0
  { wait "$1"; } 2>/dev/null || ST=$?
}

# --- a. SIGTERM during the checkpoint ----------------------------------------------------------
n_done=0 n_cancelled=0 n_late=0 n_early=0

# sigterm_once HOW: start cr_checkpoint, send it SIGTERM (HOW: a delay in ms, or "frozen": as
# soon as the target is traced), and check the outcome. Sets OUTCOME.
sigterm_once() {
  local how=$1 img=$T/sig.img
  rm -f "$img"
  "$CR_CHECKPOINT" -f "$img" "$pid" </dev/null >"$T/sig.out" 2>"$T/sig.err" &
  local ck=$!
  if [[ $how == frozen ]]; then
    local deadline=$((SECONDS + 10)) st_ck
    while [[ $(status_field "$pid" TracerPid) == 0 ]]; do
      read -r _ _ st_ck _ 2>/dev/null <"/proc/$ck/stat" || break
      [[ $st_ck == Z ]] && break
      ((SECONDS < deadline)) || crt_fail "the target was not frozen within 10 s"
    done
  else
    sleep "$(printf '0.%03d' "$how")"
  fi
  kill -TERM "$ck" 2>/dev/null
  wait_ck "$ck"
  case $ST in
    0)
      [[ -f $img ]] || crt_fail "cr_checkpoint exited 0 but left no image"
      valid_image "$img" "a checkpoint that finished before SIGTERM"
      OUTCOME=finished
      ;;
    143)
      if grep -q 'cancelled by SIGTERM' "$T/sig.err"; then
        [[ ! -e $img ]] || crt_fail "a checkpoint cancelled by SIGTERM left an image"
        OUTCOME=cancelled
      elif [[ -e $img ]]; then
        grep -q 'then received SIGTERM' "$T/sig.err" ||
          crt_fail "cr_checkpoint died of SIGTERM, left an image and did not say so"
        valid_image "$img" "a checkpoint completed before SIGTERM"
        OUTCOME=late
      else
        OUTCOME=early # killed before it blocked the signal: before the target was frozen
      fi
      ;;
    *)
      sed 's/^/    /' "$T/sig.err" >&2
      crt_fail "cr_checkpoint sent SIGTERM ($how) ended with status $ST, expected 0 or 143"
      ;;
  esac
  target_ok "after SIGTERM ($how ms) to cr_checkpoint ($OUTCOME)"
  no_temp_files "after SIGTERM ($how) to cr_checkpoint"
  case $OUTCOME in
    finished) n_done=$((n_done + 1)) ;;
    cancelled) n_cancelled=$((n_cancelled + 1)) ;;
    late) n_late=$((n_late + 1)) ;;
    early) n_early=$((n_early + 1)) ;;
  esac
}

crt_check "SIGTERM to cr_checkpoint at random delays of 0-30 ms (25 times, at most 6 s)"
limit=$((SECONDS + 6))
for delay in $(shuf -i 0-30 -n 25); do
  ((SECONDS < limit)) || break
  sigterm_once "$delay"
done
crt_log "random delays: $n_done finished, $n_cancelled cancelled, $n_late signalled after the dump, $n_early killed before freezing"

crt_check "SIGTERM to cr_checkpoint as soon as the target is frozen (5 times)"
before=$n_cancelled
for _ in 1 2 3 4 5; do sigterm_once frozen; done
crt_log "while frozen: $((n_cancelled - before)) of 5 cancelled"
((n_cancelled > before)) || crt_fail "no SIGTERM sent while the target was frozen cancelled the checkpoint"
rm -f "$T/sig.img"

# --- b. concurrent checkpoints to one file -----------------------------------------------------
crt_check "two concurrent checkpoints of the same process to one file (5 times)"
for i in 1 2 3 4 5; do
  rm -f "$T/same.img"
  "$CR_CHECKPOINT" -f "$T/same.img" "$pid" </dev/null >"$T/same1.out" 2>"$T/same1.err" &
  c1=$!
  "$CR_CHECKPOINT" -f "$T/same.img" "$pid" </dev/null >"$T/same2.out" 2>"$T/same2.err" &
  c2=$!
  wait_ck "$c1"
  st1=$ST
  wait_ck "$c2"
  st2=$ST
  crt_log "round $i: exit statuses $st1 and $st2"
  for st in $st1 $st2; do
    ((st < 128)) || crt_fail "a concurrent cr_checkpoint died of a signal (status $st)"
  done
  [[ $st1 -eq 0 || $st2 -eq 0 ]] || {
    cat "$T/same1.err" "$T/same2.err" >&2
    crt_fail "neither concurrent checkpoint succeeded ($st1, $st2)"
  }
  [[ $st1 -eq 0 ]] || grep -q 'checkpoint failed' "$T/same1.err" || crt_fail "the failing checkpoint gave no reason"
  [[ $st2 -eq 0 ]] || grep -q 'checkpoint failed' "$T/same2.err" || crt_fail "the failing checkpoint gave no reason"
  valid_image "$T/same.img" "after two concurrent checkpoints"
  target_ok "after two concurrent checkpoints"
  no_temp_files "after two concurrent checkpoints"
done
crt_check_image "$T/same.img"

crt_log "start: sleeper sleeper.txt 60"
CRKIT_READY="$T/sready" "$SLEEPER" "$T/sleeper.txt" 60 </dev/null >"$T/sleeper.log" 2>&1 &
spid=$!
crt_wait_ready "$T/sready" "$spid"
crt_check "two concurrent checkpoints of two processes to one file both succeed (5 times)"
for i in 1 2 3 4 5; do
  "$CR_CHECKPOINT" -f "$T/two.img" "$pid" </dev/null >"$T/two1.out" 2>"$T/two1.err" &
  c1=$!
  "$CR_CHECKPOINT" -f "$T/two.img" "$spid" </dev/null >"$T/two2.out" 2>"$T/two2.err" &
  c2=$!
  wait_ck "$c1"
  st1=$ST
  wait_ck "$c2"
  st2=$ST
  [[ $st1 -eq 0 && $st2 -eq 0 ]] || {
    cat "$T/two1.err" "$T/two2.err" >&2
    crt_fail "round $i: concurrent checkpoints of $pid and $spid exited $st1 and $st2, expected 0 and 0"
  }
  valid_image "$T/two.img" "after concurrent checkpoints of two processes"
  target_ok "after concurrent checkpoints of two processes"
  crt_alive "$spid" || crt_fail "the sleeper $spid died"
  no_temp_files "after concurrent checkpoints of two processes"
done
kill "$spid"
crt_reap "$spid" 143 "the sleeper ends on SIGTERM"

# --- c. image mode -----------------------------------------------------------------------------
echo old >"$T/clob.img"
chmod 0644 "$T/clob.img"
crt_run clobber 30 "$CR_CHECKPOINT" --clobber -f "$T/clob.img" "$pid"
crt_expect_rc clobber 0 "cr_checkpoint --clobber onto an existing 0644 file"
crt_check_image "$T/clob.img"
valid_image "$T/clob.img" "--clobber"
crt_run clobber2 30 "$CR_CHECKPOINT" --clobber -f "$T/clob.img" "$pid"
crt_expect_rc clobber2 0 "cr_checkpoint --clobber onto the image it wrote (0400)"
crt_check_image "$T/clob.img"
valid_image "$T/clob.img" "--clobber again"

crt_run umask 30 bash -c 'umask 0777 && exec "$@"' umask "$CR_CHECKPOINT" -f "$T/umask.img" "$pid"
crt_expect_rc umask 0 "cr_checkpoint (atomic) under umask 0777"
crt_check_image "$T/umask.img"
target_ok "after the mode checks"
no_temp_files "after the mode checks"

# --- d. the error names the user's file --------------------------------------------------------
echo "not a directory" >"$T/notdir"
crt_run notdir 30 "$CR_CHECKPOINT" -f "$T/notdir/job.img" "$pid"
crt_expect_rc notdir 20 "cr_checkpoint into a path below a regular file (ENOTDIR)"
crt_expect_stderr notdir "creating checkpoint file $T/notdir/job\.img \(temporary $T/notdir/\.job\.img\.tmp\.[A-Za-z0-9]{6}\): Not a directory" \
  "the error names the file and its temporary name"
target_ok "after the failed checkpoint"

# --- the target finishes with the right result -------------------------------------------------
crt_reap "$pid" 0 "threads_simd finishes after all the checkpoints"
got=$(cat "$T/run.txt")
crt_check "its checksum equals the uninterrupted run's ($want)"
[[ $got == "$want" ]] || crt_fail "threads_simd wrote '$got', expected '$want'"
crt_pass
