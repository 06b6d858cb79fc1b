#!/usr/bin/env bash
# workers.sh - acceptance: a parent and its forked workers, sharing a MAP_SHARED anonymous
# region and a pipe (workers -> parent, the parent blocked in read()), with a zombie child.
#  1. cr_checkpoint -T --kill of the parent mid-run: exits 0 and warns about the zombie; the
#     image holds the parent and the 4 workers, not the zombie; cr_restart exits 0 and the
#     output equals an uninterrupted run's (the workers still share their memory: they would
#     time out or compute wrong values otherwise; the parent's read() goes on); after the
#     restart the parent's wait for the zombie finds no such child (ECHILD).
#  2. (root: checks original PIDs) One worker is stopped (SIGSTOP) before the checkpoint
#     (--kill): the image marks it as stopped; after the restart that worker (same PID) is
#     stopped again while the others run; on SIGCONT the job completes with the reference
#     output and cr_restart exits 0.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
crt_begin workers

crt_link_examples workers
NW=4
ROUNDS=80 # 40 ms per round: about 3.2 s

crt_run reference 60 "$BIN/workers" "$T/reference.txt" "$NW" "$ROUNDS"
crt_expect_rc reference 0 "uninterrupted workers run"
[[ $(tail -n1 "$T/reference.txt") == "done $NW $ROUNDS" ]] ||
  crt_fail "unexpected reference output: $(tail -n1 "$T/reference.txt")"
grep -q 'zombie child .* reaped at the end' "$T/reference.err" ||
  crt_fail "the uninterrupted run did not reap its zombie child: $(cat "$T/reference.err")"

# start_job TAG: start the workers job writing $T/TAG.txt; wait until it is ready. Sets ROOT
# (the parent), ZOMBIE and WPIDS (the workers' pids).
start_job() {
  local tag=$1
  crt_log "start: workers $tag.txt $NW $ROUNDS"
  CRKIT_READY="$T/$tag.ready" "$BIN/workers" "$T/$tag.txt" "$NW" "$ROUNDS" </dev/null >"$T/$tag.log" 2>&1 &
  ROOT=$!
  crt_wait_ready "$T/$tag.ready" "$ROOT"
  ZOMBIE=$(crt_ready_value "$T/$tag.ready" zombie)
  WPIDS=()
  local w
  for ((w = 0; w < NW; w++)); do WPIDS+=("$(crt_ready_value "$T/$tag.ready" "worker$w")"); done
  crt_log "parent $ROOT, workers ${WPIDS[*]}, zombie $ZOMBIE"
  crt_check "the tree: $NW workers running, the extra child a zombie"
  [[ $(crt_state "$ZOMBIE") == Z ]] || crt_fail "child $ZOMBIE is in state '$(crt_state "$ZOMBIE")', expected Z"
  for w in "${WPIDS[@]}"; do
    crt_alive "$w" || crt_fail "worker $w is not running"
    [[ $(crt_ppid "$w") == "$ROOT" ]] || crt_fail "worker $w is not a child of $ROOT"
  done
}

# check_image TAG: the image TAG.img holds the parent and the workers, and not the zombie.
check_image() {
  local tag=$1
  crt_run "$tag.info" 30 "$CR_INFO" --json "$T/$tag.img"
  crt_expect_rc "$tag.info" 0 "cr_info --json $tag.img"
  crt_check "the image holds the parent and the $NW workers, not the zombie"
  local got want
  got=$(crt_image_pids "$T/$tag.info.out")
  want=$(printf '%s\n' "$ROOT" "${WPIDS[@]}" | sort -n | xargs)
  [[ $got == "$want" ]] || crt_fail "the image holds the processes '$got', expected '$want'"
  crt_image_fds "$T/$tag.info.out" pipe external-pipe | sed 's/^/    /'
  crt_check "the image holds one pipe: the parent's read end and the $NW workers' write ends"
  local pipes ino readers writers
  pipes=$(crt_image_pipes "$T/$tag.info.out" pipe)
  [[ $(grep -c . <<<"$pipes") -eq 1 ]] || crt_fail "expected 1 pipe in the image, got: ${pipes:-none}"
  read -r ino _ readers writers <<<"$pipes"
  [[ $readers -eq 1 && $writers -eq $NW ]] ||
    crt_fail "pipe $ino: $readers read ends and $writers write ends, expected 1 and $NW"
}

# --- 1. checkpoint --kill mid-run, restart -------------------------------------------------
start_job kill
sleep 0.4 # a few more rounds
crt_run checkpoint 60 "$CR_CHECKPOINT" -T --kill -f "$T/kill.img" "$ROOT"
crt_expect_rc checkpoint 0 "cr_checkpoint -T --kill -f kill.img $ROOT"
crt_expect_stderr checkpoint zombie "cr_checkpoint warns that it skipped a zombie"
crt_reap "$ROOT" 137 "the parent was killed (SIGKILL)"
for p in "${WPIDS[@]}"; do crt_expect_gone "$p" "worker $p is gone"; done
crt_wait_pids_free 20 "the killed workers to be reaped" "${WPIDS[@]}"
check_image kill

crt_run restart 60 "$CR_RESTART" "$T/kill.img"
crt_expect_rc restart 0 "cr_restart kill.img (waits for the parent)"
crt_expect_same "$T/kill.txt" "$T/reference.txt" "the restarted job's output equals the uninterrupted run's"
crt_check "the restarted parent found no zombie child (ECHILD), and said 'done' once"
grep -q 'zombie child .* not found at the end (ECHILD' "$T/kill.log" ||
  crt_fail "kill.log has no ECHILD line for the zombie: $(tail -n 5 "$T/kill.log")"
[[ $(grep -c '^workers: done' "$T/kill.log") -eq 1 ]] || crt_fail "kill.log does not have exactly one 'done' line"
for p in "$ROOT" "${WPIDS[@]}"; do crt_expect_gone "$p" "no process is left at pid $p"; done

# --- 2. a stopped worker stays stopped -------------------------------------------------------
if ! crt_is_root; then
  crt_log "part 2 (a stopped worker, checked by its original PID) needs root: skipped"
  crt_pass
fi
start_job stop
stopped=${WPIDS[1]}
kill -STOP "$stopped"
crt_wait_state "$stopped" T "worker $stopped to stop"
sleep 0.2
crt_run checkpoint2 60 "$CR_CHECKPOINT" --kill -f "$T/stop.img" "$ROOT"
crt_expect_rc checkpoint2 0 "cr_checkpoint --kill -f stop.img $ROOT (worker $stopped stopped)"
crt_reap "$ROOT" 137 "the parent was killed (SIGKILL)"
crt_wait_pids_free 20 "the killed workers to be reaped" "${WPIDS[@]}"
check_image stop
crt_check "the image marks worker $stopped (only) as stopped"
got=$(crt_json "$T/stop.info.out" '" ".join(str(p["pid"]) for p in doc["processes"] if p["was_stopped"])')
[[ $got == "$stopped" ]] || crt_fail "stopped processes in the image: '$got', expected '$stopped'"

crt_bg restart2 "$CR_RESTART" "$T/stop.img"
rpid=$BGPID
crt_wait_released "$rpid" restart2 "$T/stop.txt" "$ROOT" "${WPIDS[@]}"
crt_check "after the restart worker $stopped is stopped (T) and the others run"
sleep 0.5
[[ $(crt_state "$stopped") == T ]] || crt_fail "worker $stopped is in state '$(crt_state "$stopped")', expected T"
for p in "$ROOT" "${WPIDS[@]}"; do
  [[ $p == "$stopped" ]] && continue
  st=$(crt_state "$p")
  [[ $st == [RSD] ]] || crt_fail "process $p is in state '$st', expected running or sleeping"
done
crt_alive "$rpid" || crt_fail "cr_restart ended while a worker was stopped"
kill -CONT "$stopped"
crt_wait_bg "$rpid" restart2 0 "cr_restart stop.img (after SIGCONT to worker $stopped)"
crt_expect_same "$T/stop.txt" "$T/reference.txt" "the continued job's output equals the uninterrupted run's"
for p in "$ROOT" "${WPIDS[@]}"; do crt_expect_gone "$p" "no process is left at pid $p"; done
crt_pass
