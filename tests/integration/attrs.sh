#!/usr/bin/env bash
# attrs.sh - acceptance: process attributes survive checkpoint --kill and restart: umask,
# cwd, rlimits, personality, process and thread names, ITIMER_REAL (still firing after the
# restart) and ITIMER_VIRTUAL (value kept), a thread blocked in pthread_cond_wait that is
# joined afterwards (clear-tid address and futex wait restored).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
crt_begin attrs

PROG=$(crt_example attrs) || exit 1
mkdir -p "$T/ref_work" "$T/work"
crt_run reference 60 "$PROG" "$T/reference.txt" "$T/ref_work" 1
crt_expect_rc reference 0 "uninterrupted attrs run"
want=$(cat "$T/reference.txt")
[[ $want == "ok "* ]] || crt_fail "unexpected reference output '$want'"

CRKIT_READY="$T/ready" "$PROG" "$T/out.txt" "$T/work" 3 </dev/null >"$T/attrs.log" 2>&1 &
pid=$!
crt_wait_ready "$T/ready" "$pid"
sleep 0.5
crt_run checkpoint 60 "$CR_CHECKPOINT" --kill -f "$T/attrs.img" "$pid"
crt_expect_rc checkpoint 0 "cr_checkpoint --kill -f attrs.img $pid"
crt_reap "$pid" 137 "the checkpointed process was killed (SIGKILL)"
crt_check_image "$T/attrs.img"

crt_run restart 60 "$CR_RESTART" "$T/attrs.img"
crt_expect_rc restart 0 "cr_restart attrs.img (the program verifies its attributes itself)"
got=$(cat "$T/out.txt")
crt_check "the restarted process's result equals the uninterrupted run's"
[[ $got == "$want" ]] || crt_fail "output is '$got', expected '$want'"
crt_pass
