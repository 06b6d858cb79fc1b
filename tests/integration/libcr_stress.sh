#!/usr/bin/env bash
# libcr_stress.sh - stress: critical sections against a stream of checkpoint requests for 30 s
# (examples/libcr_stress: a worker thread enters and leaves critical sections in a loop, changing
# two counters that are equal outside a section; a requester thread asks for checkpoints of its
# own process one after the other, cr_request_checkpoint + cr_poll_checkpoint), while this script
# runs cr_checkpoint --run against the program in a loop (default scope, as a user would). Then:
#  - no deadlock: every cr_checkpoint ends (60 s limit each) and the program finishes on time;
#  - no request is lost or fails: every cr_checkpoint exits 0, or 16 (EBUSY) when it overlapped
#    another request; every request from inside ends with poll > 0 or EBUSY;
#  - the callbacks ran exactly once per successful checkpoint (outside + inside), always saw
#    cr_checkpoint() return 0, and never found a thread inside a critical section (the counters
#    were equal);
#  - the worker kept going: many iterations, and never more than 2 s without one.
# All checks are made and all problems listed before the test fails. It takes about 35 s and
# runs in the default suite.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
crt_begin libcr_stress

PROG=$(crt_example libcr_stress) || exit 1
DURATION=30    # seconds of requests from outside
PROG_SECONDS=32 # the program runs a little longer: the last request from outside finds it
PAUSE_MS=20    # between two requests from inside

crt_log "start: libcr_stress out.txt $PROG_SECONDS self.img $PAUSE_MS"
CRKIT_READY="$T/ready" "$PROG" "$T/out.txt" "$PROG_SECONDS" "$T/self.img" "$PAUSE_MS" </dev/null >"$T/prog.log" 2>&1 &
pid=$!
crt_wait_ready "$T/ready" "$pid"

crt_log "cr_checkpoint --run -f ext.img $pid in a loop for $DURATION s"
ext_ok=0 ext_ok_uncalled=0 ext_busy=0 ext_other=0 ext_total=0
declare -A other_rcs=()
deadline=$((SECONDS + DURATION))
while ((SECONDS < deadline)); do
  crt_alive "$pid" || crt_fail "the program ended while it was being checkpointed (see prog.log)"
  rc=0
  timeout -k 5 60 "$CR_CHECKPOINT" --run -f "$T/ext.img" "$pid" </dev/null >"$T/ck.out" 2>"$T/ck.err" || rc=$?
  ((++ext_total))
  case $rc in
    0)
      ((++ext_ok))
      # (for the report: a checkpoint that ran no callbacks says so)
      grep -q 'without running its libcr callbacks' "$T/ck.err" && ((++ext_ok_uncalled))
      ;;
    16) ((++ext_busy)) ;;
    124 | 137) crt_fail "cr_checkpoint --run $pid did not end within 60 s (a deadlock?): $(cat "$T/ck.err")" ;;
    *)
      ((++ext_other))
      other_rcs[$rc]=$((${other_rcs[$rc]:-0} + 1))
      [[ -s $T/ck_other.err ]] || cp -- "$T/ck.err" "$T/ck_other.err"
      sed "s/^/[rc $rc] /" "$T/ck.err" >>"$T/ck_others.log"
      ;;
  esac
  sleep 0.02
done
crt_log "cr_checkpoint ran $ext_total times: $ext_ok succeeded, $ext_busy found another request (EBUSY), $ext_other failed otherwise"
crt_check "the program finishes on time (no deadlock)"
limit=$((SECONDS + 60))
while crt_alive "$pid"; do
  ((SECONDS < limit)) || crt_fail "the program is still running 60 s after its end"
  sleep 0.1
done
prog_rc=0
wait "$pid" || prog_rc=$?
crt_log "  -> exit status $prog_rc"
[[ -s $T/out.txt ]] || crt_fail "the program wrote no output (exit status $prog_rc)"
sed 's/^/    /' "$T/out.txt"

# Every check is made and every problem reported, so that one run shows all that went wrong.
PROBLEMS=()
problem() {
  printf '[%s]   PROBLEM: %s\n' "$CRT_NAME" "$*" >&2
  PROBLEMS+=("$*")
}
# get LINE KEY: the value of KEY=... on the line of out.txt that starts with LINE.
get() { sed -n "s/^$1 .*\<$2=\([^ ]*\).*/\1/p" "$T/out.txt"; }

crt_check "every cr_checkpoint exited 0 or 16 (EBUSY, overlapping another request)"
if ((ext_other > 0)); then
  summary=""
  for rc in "${!other_rcs[@]}"; do summary+=" exit $rc: ${other_rcs[$rc]} times;"; done
  sed "s/[0-9]\+/N/g" "$T/ck_others.log" | sort | uniq -c | sort -rn | head -n 6 | sed 's/^/    /' >&2
  problem "$ext_other of $ext_total cr_checkpoint runs failed otherwise:$summary first: $(head -n 3 "$T/ck_other.err" | tr '\n' ' ')"
fi
crt_check "some checkpoints from outside succeeded ($ext_ok)"
((ext_ok >= 10)) || problem "only $ext_ok of $ext_total checkpoints from outside succeeded"
crt_run info 30 "$CR_INFO" -q "$T/ext.img"
((RC == 0)) || problem "cr_info -q ext.img (the last image from outside) exited $RC: $(head -n 2 "$T/info.err")"

n=$(get stress iterations)
crt_check "the counters changed in the critical sections are equal: a = b = iterations ($n)"
[[ -n $n && $(get stress a) == "$n" && $(get stress b) == "$n" ]] || problem "$(head -n1 "$T/out.txt")"
crt_check "no callback found a thread inside a critical section"
[[ $(get callbacks violations) == 0 ]] || problem "$(grep '^callbacks' "$T/out.txt")"
self_ok=$(get self ok)
crt_check "every request from inside ended with poll > 0 or EBUSY; some succeeded ($self_ok)"
[[ $(get self errors) == 0 ]] ||
  problem "requests from inside: $(grep '^self' "$T/out.txt"); $(grep -v ready "$T/prog.log" | sort | uniq -c | head -n 3 | tr '\n' ' ')"
(($(get self requests) == self_ok + $(get self busy) + $(get self errors))) || problem "$(grep '^self' "$T/out.txt")"
((self_ok >= 10)) || problem "only $self_ok requests from inside succeeded: $(grep '^self' "$T/out.txt")"
total=$((ext_ok + self_ok))
crt_check "the callbacks ran once per successful checkpoint ($ext_ok from outside + $self_ok from inside = $total), and cr_checkpoint() returned 0 every time"
tc=$(get callbacks tc) tc_ok=$(get callbacks tc_ok) sig=$(get callbacks sig) sig_ok=$(get callbacks sig_ok)
[[ $tc == "$total" && $tc_ok == "$total" && $sig == "$total" && $sig_ok == "$total" ]] ||
  problem "callbacks: thread-context $tc runs ($tc_ok returned 0, last failure $(get callbacks tc_last_fail)), signal-context $sig runs ($sig_ok returned 0); expected $total; $ext_ok_uncalled of the successful checkpoints from outside warned that they ran no callbacks"
gap=$(get progress max_gap_ms)
crt_check "the worker kept going: $n iterations, at most $gap ms between two"
((n >= 1000)) || problem "only $n iterations in $PROG_SECONDS s"
((gap < 2000)) || problem "the worker made no progress for $gap ms"
crt_check "the program's own checks passed (exit status 0)"
((prog_rc == 0)) || problem "the program exited with status $prog_rc: $(grep -v ready "$T/prog.log" | tail -n 1)"
((${#PROBLEMS[@]} == 0)) || crt_fail "${#PROBLEMS[@]} problems (see above); the first: ${PROBLEMS[0]}"
crt_pass
