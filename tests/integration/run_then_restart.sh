#!/usr/bin/env bash
# run_then_restart.sh - acceptance: checkpoint with the default --run (the process keeps going
# and finishes normally), then restart the image after the original has exited: the restarted
# copy resumes from the checkpoint - its output file is truncated back to the checkpoint-time
# size and continued - and again ends with exactly 1..N. Also covers the default destination
# ./context.PID.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
crt_begin run_then_restart

COUNTER=$(crt_example counter) || exit 1
COUNT=30
INTERVAL_MS=100

crt_log "start: counter out.txt $COUNT $INTERVAL_MS"
CRKIT_READY="$T/ready" "$COUNTER" "$T/out.txt" "$COUNT" "$INTERVAL_MS" </dev/null >"$T/counter.log" 2>&1 &
pid=$!
crt_wait_ready "$T/ready" "$pid"
crt_wait_lines "$T/out.txt" 5 "$pid"

crt_run checkpoint 60 "$CR_CHECKPOINT" "$pid"
crt_expect_rc checkpoint 0 "cr_checkpoint $pid (defaults: --run, ./context.$pid)"
img=$T/context.$pid
crt_check_image "$img"
at=$(crt_lines "$T/out.txt")
crt_log "out.txt had about $at lines at the checkpoint"
crt_check "process $pid keeps running after the checkpoint (not stopped, not traced)"
crt_alive "$pid" || crt_fail "process $pid is gone after a --run checkpoint"
grep -q '^TracerPid:[[:space:]]*0$' "/proc/$pid/status" || crt_fail "process $pid is still traced"
crt_wait_lines "$T/out.txt" $((at + 2)) "$pid"
crt_reap "$pid" 0 "the original process finishes normally"
crt_expect_seq "$T/out.txt" "$COUNT"

crt_run restart 60 "$CR_RESTART" "$img"
crt_expect_rc restart 0 "cr_restart context.$pid (after the original exited)"
crt_expect_seq "$T/out.txt" "$COUNT"
crt_check "the copy resumed (no second 'ready') and its log was truncated back (one 'done')"
ready_lines=$(grep -c 'counter: ready' "$T/counter.log")
done_lines=$(grep -c 'counter: done' "$T/counter.log")
[[ $ready_lines -eq 1 && $done_lines -eq 1 ]] ||
  crt_fail "counter.log has $ready_lines 'ready' and $done_lines 'done' lines, expected 1 and 1"
crt_expect_gone "$pid" "no process is left at pid $pid"
crt_pass
