#!/usr/bin/env bash
# tree_busy.sh - a process tree (examples/workers: a parent, 4 workers, a zombie) is
# checkpointed with --run while it keeps running; then, while the original still runs:
#  - cr_restart of the image is refused with exit 16 (EBUSY) and a message that names a PID
#    of the tree as in use; nothing of it is left behind and the original is unharmed;
#  - a copy of the job's directory is made and cr_restart --no-restore-pid --relocate
#    WORK=WORK2 restarts the tree in a new PID namespace, working in the copy: it exits 0 and
#    the copy writes the reference result into WORK2;
#  - the original finishes by itself with the reference result in WORK.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
crt_begin tree_busy
crt_need_root "restoring PIDs (EBUSY) and new PID namespaces without a user namespace"

crt_link_examples workers # outside $T/work: the program is not relocated
NW=4
ROUNDS=100 # 40 ms per round: about 4 s

mkdir -p "$T/ref" "$T/work"
crt_run reference 60 env -C "$T/ref" "$BIN/workers" "$T/ref/out.txt" "$NW" "$ROUNDS"
crt_expect_rc reference 0 "uninterrupted workers run"

crt_log "start in $T/work: workers out.txt $NW $ROUNDS"
(cd "$T/work" && CRKIT_READY="$T/ready" exec "$BIN/workers" "$T/work/out.txt" "$NW" "$ROUNDS" \
  </dev/null >"$T/work/workers.log" 2>&1) &
root=$!
crt_wait_ready "$T/ready" "$root"
all=("$root")
for ((w = 0; w < NW; w++)); do all+=("$(crt_ready_value "$T/ready" "worker$w")"); done
crt_log "tree: ${all[*]}"
sleep 0.3

crt_run checkpoint 60 "$CR_CHECKPOINT" -f "$T/job.img" "$root"
crt_expect_rc checkpoint 0 "cr_checkpoint (--run) -f job.img $root (the tree)"
crt_check "the whole tree keeps running after the checkpoint (not stopped, not traced)"
for p in "${all[@]}"; do
  crt_alive "$p" || crt_fail "process $p is gone after a --run checkpoint"
  [[ $(crt_state "$p") != [Tt] ]] || crt_fail "process $p is stopped (state $(crt_state "$p"))"
  [[ $(crt_tracer "$p") == 0 ]] || crt_fail "process $p is still traced by $(crt_tracer "$p")"
done

crt_run busy 60 "$CR_RESTART" "$T/job.img"
crt_expect_rc busy 16 "cr_restart while the original tree runs (its PIDs are in use)"
crt_expect_stderr busy "in use" "the message says a PID is in use"
crt_check "the message names a PID of the tree"
named=0
for p in "${all[@]}"; do grep -qw -- "$p" "$T/busy.err" && named=1; done
[[ $named -eq 1 ]] || crt_fail "the message names none of ${all[*]}: $(cat "$T/busy.err")"
crt_check "the refused restart left nothing behind"
left=$(crt_pids_matching "$T/job.img" | xargs)
[[ -z $left ]] || crt_fail "processes left by the refused cr_restart: $left"
crt_check "the original tree is unharmed by the refused restart"
for p in "${all[@]}"; do crt_alive "$p" || crt_fail "process $p died"; done
[[ $(crt_children "$root" | grep -cvx "$(crt_ready_value "$T/ready" zombie)") -eq $NW ]] ||
  crt_fail "the parent has children '$(crt_children "$root" | xargs)', expected its $NW workers and the zombie"

cp -a "$T/work" "$T/work2" || crt_fail "cannot copy $T/work"
crt_check "the original is still running when the copy starts"
crt_alive "$root" || crt_fail "the original finished too early (machine too slow?)"
crt_run copy 60 "$CR_RESTART" --no-restore-pid --relocate "$T/work=$T/work2" "$T/job.img"
crt_expect_rc copy 0 "cr_restart --no-restore-pid --relocate $T/work=$T/work2 job.img"
crt_expect_same "$T/work2/out.txt" "$T/ref/out.txt" "the copy wrote the reference result into work2"
crt_check "the copy did not find the zombie (not restored), the original did"
grep -q 'not found at the end (ECHILD' "$T/work2/workers.log" ||
  crt_fail "work2/workers.log has no ECHILD line: $(tail -n 5 "$T/work2/workers.log")"

crt_reap "$root" 0 "the original tree finishes by itself"
crt_expect_same "$T/work/out.txt" "$T/ref/out.txt" "the original wrote the reference result into work"
grep -q 'reaped at the end (exit status 0)' "$T/work/workers.log" ||
  crt_fail "work/workers.log: the original did not reap its zombie: $(tail -n 5 "$T/work/workers.log")"
crt_pass
