#!/usr/bin/env bash
# stopped.sh - a process stopped with SIGSTOP stays stopped: after a --run checkpoint (the
# original) and after a restart (the copy); it continues correctly on SIGCONT. Also
# cr_restart --stop: the restarted process starts stopped.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
crt_begin stopped

COUNTER=$(crt_example counter) || exit 1
state_of() { awk '{ sub(/^.*\) /, ""); print $1 }' "/proc/$1/stat" 2>/dev/null; }
wait_state() { # PID STATE WHAT
  crt_wait_until 20 "$3" bash -c "[[ \$(awk '{ sub(/^.*\\) /, \"\"); print \$1 }' /proc/$1/stat 2>/dev/null) == $2 ]]"
}

CRKIT_READY="$T/ready" "$COUNTER" "$T/out.txt" 40 50 </dev/null >"$T/counter.log" 2>&1 &
pid=$!
crt_wait_ready "$T/ready" "$pid"
crt_wait_lines "$T/out.txt" 3 "$pid"
kill -STOP "$pid"
wait_state "$pid" T "process $pid to stop"

crt_run checkpoint 60 "$CR_CHECKPOINT" -f "$T/stopped.img" "$pid"
crt_expect_rc checkpoint 0 "cr_checkpoint (--run) of the stopped process $pid"
sleep 0.3
crt_check "the original process $pid is still stopped after the checkpoint"
[[ $(state_of "$pid") == T ]] || crt_fail "process $pid is in state $(state_of "$pid"), expected T"
kill -KILL "$pid"
crt_reap "$pid" 137 "the original was killed"

"$CR_RESTART" "$T/stopped.img" </dev/null >"$T/restart.out" 2>"$T/restart.err" &
rpid=$!
crt_check "the restarted process $pid comes back stopped"
wait_state "$pid" T "restarted process $pid in state T"
sleep 0.3
[[ $(state_of "$pid") == T ]] || crt_fail "restarted process $pid left the stopped state by itself"
kill -CONT "$pid"
st=0
wait "$rpid" || st=$?
crt_check "cr_restart exits 0 once the continued process finishes"
[[ $st -eq 0 ]] || { sed 's/^/    /' "$T/restart.err" >&2; crt_fail "cr_restart exited with $st"; }
crt_expect_seq "$T/out.txt" 40

# cr_restart --stop on an image of a running process.
rm -f "$T/ready"
CRKIT_READY="$T/ready" "$COUNTER" "$T/out2.txt" 30 50 </dev/null >"$T/counter2.log" 2>&1 &
pid=$!
crt_wait_ready "$T/ready" "$pid"
crt_run checkpoint2 60 "$CR_CHECKPOINT" --kill -f "$T/running.img" "$pid"
crt_expect_rc checkpoint2 0 "cr_checkpoint --kill of running process $pid"
crt_reap "$pid" 137 "the checkpointed process was killed"
"$CR_RESTART" --stop "$T/running.img" </dev/null >"$T/restart2.out" 2>"$T/restart2.err" &
rpid=$!
wait_state "$pid" T "cr_restart --stop to leave process $pid stopped"
kill -CONT "$pid"
st=0
wait "$rpid" || st=$?
[[ $st -eq 0 ]] || { sed 's/^/    /' "$T/restart2.err" >&2; crt_fail "cr_restart --stop exited with $st"; }
crt_expect_seq "$T/out2.txt" 30
crt_pass
