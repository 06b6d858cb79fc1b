#!/usr/bin/env bash
# threads_simd.sh - acceptance: 4 pthreads doing floating-point and SIMD work, synchronised with
# a mutex and condition variables, checkpointed with --kill mid-run and restarted, end with the
# same checksum as an uninterrupted run.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
crt_begin threads_simd

PROG=$(crt_example threads_simd) || exit 1

crt_run reference 120 "$PROG" "$T/reference.txt" 1
crt_expect_rc reference 0 "uninterrupted threads_simd run"
want=$(cat "$T/reference.txt")
crt_log "uninterrupted result: $want"
[[ $want == "checksum "* ]] || crt_fail "unexpected reference output '$want'"

crt_log "start: threads_simd restarted.txt 5"
CRKIT_READY="$T/ready" "$PROG" "$T/restarted.txt" 5 </dev/null >"$T/threads_simd.log" 2>&1 &
pid=$!
crt_wait_ready "$T/ready" "$pid"
sleep 1.5
crt_alive "$pid" || crt_fail "threads_simd ended before the checkpoint"
crt_check "process $pid has 5 threads"
threads=$(awk '/^Threads:/ { print $2 }' "/proc/$pid/status")
[[ $threads -eq 5 ]] || crt_fail "process $pid has $threads threads, expected 5"

crt_run checkpoint 60 "$CR_CHECKPOINT" --kill -f "$T/threads.img" "$pid"
crt_expect_rc checkpoint 0 "cr_checkpoint --kill -f threads.img $pid"
crt_reap "$pid" 137 "the checkpointed process was killed (SIGKILL)"
crt_check_image "$T/threads.img"
crt_check "the run was interrupted before it wrote a result"
[[ ! -s $T/restarted.txt ]] || crt_fail "restarted.txt already has a result: $(cat "$T/restarted.txt")"

crt_run restart 120 "$CR_RESTART" "$T/threads.img"
crt_expect_rc restart 0 "cr_restart threads.img"
got=$(cat "$T/restarted.txt")
crt_check "the restarted run's checksum equals the uninterrupted run's ($want)"
[[ $got == "$want" ]] || crt_fail "restarted run wrote '$got', expected '$want'"
crt_expect_gone "$pid" "no process is left at pid $pid"
crt_pass
