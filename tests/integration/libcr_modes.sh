#!/usr/bin/env bash
# libcr_modes.sh - acceptance: what libcr callbacks decide, and cr_run (examples/libcr_modes,
# whose thread-context callback does what its MODE says; examples/counter, without libcr):
#  - omit (cr_checkpoint(CR_CHECKPOINT_OMIT)): cr_checkpoint exits 3 (ESRCH, all omitted); the
#    program goes on unharmed (its callback saw a negative return) and finishes; no image file;
#  - a tree of two, the child omits: cr_checkpoint exits 0 and the image holds the parent only
#    (cr_info --json); both go on and finish; a restart of the image brings back the parent
#    alone (its callback sees > 0, its wait for the child finds none);
#  - temp42 (CR_CHECKPOINT_TEMP_FAILURE_CODE(42)): exit 42; the program goes on, its callback
#    saw a negative return; no image file;
#  - perm (CR_CHECKPOINT_PERM_FAILURE), and return1 (a callback that returns non-zero without
#    calling cr_checkpoint(), which BLCR makes a permanent failure): exit 51 (CR_EPERMFAIL) and
#    the program is killed; no image file;
#  - sleep10 (the callback sleeps 10 s) with cr_checkpoint -t 2: exit 110 (ETIMEDOUT) after about
#    2 s; the program goes on, its callback (once it wakes up) saw a negative return, and it
#    finishes; no image file;
#  - cr_run --omit counter: exit 3, counter goes on and writes 1..N;
#  - cr_run counter (libcr_run preloaded) and a plain counter: checkpoints work as without libcr
#    (--kill + restart, --run).
# The work result of every program that goes on equals an uninterrupted run's.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
crt_begin libcr_modes

[[ -n ${CR_RUN:-} ]] || crt_fail "CR_RUN is not set (run this test through ctest, or export CR_RUN)"
[[ -x $CR_RUN ]] || crt_fail "CR_RUN=$CR_RUN is not an executable (is the project built?)"
crt_link_examples libcr_modes counter
STEPS=40
INTERVAL_MS=50 # 2 s
SLOW_STEPS=130
SLOW_INTERVAL_MS=100 # 13 s: longer than the callback's 10 s sleep
CR_EOMITTED=2358

# work_line N: the work result of libcr_modes with N steps (the sum of the squares 1..N).
work_line() { echo "work steps=$1 sum=$(($1 * ($1 + 1) * (2 * $1 + 1) / 6))"; }

crt_run reference 60 "$BIN/libcr_modes" "$T/reference.txt" "$STEPS" "$INTERVAL_MS" ready
crt_expect_rc reference 0 "uninterrupted libcr_modes run"
crt_check "the uninterrupted run's work result is $(work_line "$STEPS"), and no callback ran"
[[ $(cat "$T/reference.txt") == "$(work_line "$STEPS")" ]] ||
  crt_fail "reference.txt: $(cat "$T/reference.txt")"

# start TAG STEPS INTERVAL MODE [CHILD_MODE]: start libcr_modes writing TAG.txt; sets PID.
start() {
  local tag=$1
  shift
  crt_log "start: libcr_modes $tag.txt $*"
  CRKIT_READY="$T/$tag.ready" "$BIN/libcr_modes" "$T/$tag.txt" "$@" </dev/null >"$T/$tag.log" 2>&1 &
  PID=$!
  crt_wait_ready "$T/$tag.ready" "$PID"
  sleep 0.3
}

# checkpoint TAG WANT OPTIONS... PID: cr_checkpoint OPTIONS -f TAG.img PID must exit WANT; the
# time it took is left in ELAPSED_MS.
checkpoint() {
  local tag=$1 want=$2
  shift 2
  local t0 t1
  t0=$(date +%s%N)
  crt_run "$tag.ck" 60 "$CR_CHECKPOINT" "${@:1:$#-1}" -f "$T/$tag.img" "${@: -1}"
  t1=$(date +%s%N)
  ELAPSED_MS=$(((t1 - t0) / 1000000))
  crt_log "  (took $ELAPSED_MS ms)"
  crt_expect_rc "$tag.ck" "$want" "cr_checkpoint $* (-f $tag.img)"
}

# no_image TAG: a failed checkpoint left no file behind, not even a temporary one.
no_image() {
  crt_check "no image file (nor a temporary one) is left for $1"
  local left
  left=$(find "$T" -maxdepth 1 \( -name "$1.img" -o -name ".$1.img.tmp*" \) -printf '%f ')
  [[ -z $left ]] || crt_fail "files left behind: $left"
}

# finished TAG PID STEPS: the program PID finished (exit 0) with the work result of STEPS steps.
finished() {
  local tag=$1 pid=$2 steps=$3
  crt_reap "$pid" 0 "$tag: the program goes on and finishes (exit 0)"
  crt_check "$tag: the work result is $(work_line "$steps")"
  [[ $(head -n1 "$T/$tag.txt") == "$(work_line "$steps")" ]] ||
    crt_fail "$tag.txt: $(cat "$T/$tag.txt" 2>/dev/null)"
}

# callback_rets TAG: the return values its callback got from cr_checkpoint(), space separated.
callback_rets() { sed -n 's/^callback n=[0-9]* ret=\(-\{0,1\}[0-9]*\)$/\1/p' "$T/$1.txt" | xargs; }

# expect_negative TAG: the callback ran once and cr_checkpoint() returned < 0 to it.
expect_negative() {
  local rets
  rets=$(callback_rets "$1")
  crt_check "$1: the callback ran once and cr_checkpoint() returned a negative value to it ($rets)"
  [[ $rets =~ ^-[0-9]+$ ]] || crt_fail "$1: the callback got '$rets' from cr_checkpoint()"
}

# --- the callback sleeps 10 s, cr_checkpoint -t 2 (runs on while the others are tested) -------
start sleep "$SLOW_STEPS" "$SLOW_INTERVAL_MS" sleep10
sleeper=$PID
checkpoint sleep 110 -t 2 "$sleeper"
crt_expect_stderr sleep.ck 'time limit' "cr_checkpoint -t 2 says that the time limit was exceeded"
crt_check "cr_checkpoint -t 2 gave up after about 2 s (took $ELAPSED_MS ms)"
((ELAPSED_MS >= 1800 && ELAPSED_MS < 6000)) || crt_fail "it took $ELAPSED_MS ms"
crt_check "the program goes on after the timeout"
crt_alive "$sleeper" || crt_fail "process $sleeper is gone after the timed-out checkpoint"
no_image sleep

# --- omit -------------------------------------------------------------------------------------
start omit "$STEPS" "$INTERVAL_MS" omit
checkpoint omit 3 "$PID"
crt_expect_stderr omit.ck 'omitted' "cr_checkpoint says that the process was omitted"
no_image omit
finished omit "$PID" "$STEPS"
expect_negative omit
crt_log "  (the omitted process's callback got $(callback_rets omit); CR_EOMITTED is $CR_EOMITTED)"

# --- a tree of two, the child omits ------------------------------------------------------------
start tree "$STEPS" "$INTERVAL_MS" ready omit
parent=$PID
child=$(crt_ready_value "$T/tree.ready" child)
crt_check "the child $child of $parent runs"
[[ $(crt_ppid "$child") == "$parent" ]] || crt_fail "process $child is not a child of $parent"
checkpoint tree 0 --run "$parent"
crt_check_image "$T/tree.img"
crt_run tree.info 30 "$CR_INFO" --json "$T/tree.img"
crt_expect_rc tree.info 0 "cr_info --json tree.img"
crt_check "the image holds the parent $parent only (the child omitted itself)"
got=$(crt_image_pids "$T/tree.info.out")
[[ $got == "$parent" ]] || crt_fail "the image holds the processes '$got', expected '$parent'"
finished tree "$parent" "$STEPS"
crt_check "the parent's callback saw 0, and its child finished with status 0"
[[ $(callback_rets tree) == 0 ]] || crt_fail "the parent's callback got '$(callback_rets tree)'"
grep -qx 'child exit=0' "$T/tree.txt" || crt_fail "tree.txt: $(cat "$T/tree.txt")"
crt_check "the child goes on and finishes with the work result $(work_line "$STEPS")"
[[ $(head -n1 "$T/tree.txt.child") == "$(work_line "$STEPS")" ]] ||
  crt_fail "tree.txt.child: $(cat "$T/tree.txt.child" 2>/dev/null)"
rets=$(sed -n 's/^callback n=1 ret=//p' "$T/tree.txt.child")
crt_check "the omitted child's callback saw a negative return ($rets)"
[[ $rets =~ ^-[0-9]+$ ]] || crt_fail "the omitted child's callback got '$rets' from cr_checkpoint()"
crt_wait_pids_free 20 "the tree's pids to be free" "$parent" "$child"
crt_bg tree.restart "$CR_RESTART" "$T/tree.img"
rst=$BGPID
crt_wait_bg "$rst" tree.restart 0 "cr_restart tree.img (the parent alone)"
crt_check "the restarted parent's callback saw cr_restart's pid $rst; it has no child to wait for"
[[ $(callback_rets tree) == "$rst" ]] || crt_fail "the restarted parent's callback got '$(callback_rets tree)'"
grep -qx 'child ECHILD' "$T/tree.txt" || crt_fail "tree.txt: $(cat "$T/tree.txt")"
[[ $(head -n1 "$T/tree.txt") == "$(work_line "$STEPS")" ]] || crt_fail "tree.txt: $(cat "$T/tree.txt")"

# --- temporary failure with a code ------------------------------------------------------------
start temp "$STEPS" "$INTERVAL_MS" temp42
checkpoint temp 42 "$PID"
no_image temp
finished temp "$PID" "$STEPS"
expect_negative temp

# --- permanent failures: the job is killed ------------------------------------------------------
for mode in perm return1; do
  start "$mode" "$STEPS" "$INTERVAL_MS" "$mode"
  checkpoint "$mode" 51 "$PID"
  crt_reap "$PID" 137 "$mode: the program was killed (SIGKILL)"
  no_image "$mode"
  [[ ! -e $T/$mode.txt ]] || crt_fail "$mode: the killed program wrote its output"
done

# --- cr_run --omit, cr_run, no libcr at all -----------------------------------------------------
COUNT=30
start_counter() {
  local tag=$1
  shift
  crt_log "start: $* counter $tag.txt $COUNT 100"
  CRKIT_READY="$T/$tag.ready" "$@" "$BIN/counter" "$T/$tag.txt" "$COUNT" 100 </dev/null >"$T/$tag.log" 2>&1 &
  PID=$!
  crt_wait_ready "$T/$tag.ready" "$PID"
}
start_counter run_omit "$CR_RUN" --omit
crt_check "cr_run --omit preloaded libcr_omit into counter"
grep -q 'libcr_omit\.so' "/proc/$PID/maps" || crt_fail "libcr_omit is not mapped into process $PID"
checkpoint run_omit 3 "$PID"
no_image run_omit
crt_reap "$PID" 0 "cr_run --omit counter goes on and finishes"
crt_expect_seq "$T/run_omit.txt" "$COUNT"

start_counter run "$CR_RUN"
crt_check "cr_run preloaded libcr_run into counter"
grep -q 'libcr_run\.so' "/proc/$PID/maps" || crt_fail "libcr_run is not mapped into process $PID"
crt_wait_lines "$T/run.txt" 5 "$PID"
checkpoint run 0 --kill "$PID"
crt_reap "$PID" 137 "cr_run counter was killed (SIGKILL)"
crt_check_image "$T/run.img"
crt_run run.restart 60 "$CR_RESTART" "$T/run.img"
crt_expect_rc run.restart 0 "cr_restart run.img (counter under libcr_run)"
crt_expect_seq "$T/run.txt" "$COUNT"

start_counter plain
crt_wait_lines "$T/plain.txt" 5 "$PID"
checkpoint plain 0 --run "$PID"
crt_check_image "$T/plain.img"
crt_reap "$PID" 0 "counter (no libcr) goes on after cr_checkpoint --run and finishes"
crt_expect_seq "$T/plain.txt" "$COUNT"

# --- the sleeping callback has woken up meanwhile -----------------------------------------------
finished sleep "$sleeper" "$SLOW_STEPS"
expect_negative sleep
crt_pass
