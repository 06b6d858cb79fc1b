#!/usr/bin/env bash
# files_signals.sh - acceptance: a process with a file open at an offset, an unlinked open
# file, pending blocked signals (one with siginfo), custom handlers and a sigaltstack is
# checkpointed with --kill and restarted; the program verifies all of it itself and prints
# the same "ok ..." line as an uninterrupted run.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
crt_begin files_signals

PROG=$(crt_example files_signals) || exit 1

mkdir -p "$T/ref_work" "$T/work"
crt_run reference 60 "$PROG" "$T/reference.txt" "$T/ref_work" 0
crt_expect_rc reference 0 "uninterrupted files_signals run"
want=$(cat "$T/reference.txt")
crt_log "uninterrupted result: $want"
[[ $want == "ok "* ]] || crt_fail "unexpected reference output '$want'"

crt_log "start: files_signals out.txt work 4"
CRKIT_READY="$T/ready" "$PROG" "$T/out.txt" "$T/work" 4 </dev/null >"$T/files_signals.log" 2>&1 &
pid=$!
crt_wait_ready "$T/ready" "$pid"
crt_check "tmp.bin is unlinked but open in process $pid"
found=0
for fd in "/proc/$pid/fd/"*; do
  [[ $(readlink "$fd") == *"/tmp.bin (deleted)" ]] && found=1
done
[[ $found -eq 1 ]] || crt_fail "no deleted tmp.bin among the fds of $pid"

crt_run checkpoint 60 "$CR_CHECKPOINT" --kill -f "$T/files.img" "$pid"
crt_expect_rc checkpoint 0 "cr_checkpoint --kill -f files.img $pid"
crt_reap "$pid" 137 "the checkpointed process was killed (SIGKILL)"
crt_check_image "$T/files.img"

crt_run restart 60 "$CR_RESTART" "$T/files.img"
crt_expect_rc restart 0 "cr_restart files.img"
got=$(cat "$T/out.txt")
crt_check "the restarted process's output equals the uninterrupted run's"
[[ $got == "$want" ]] || crt_fail "output is '$got', expected '$want'"
crt_check "the work dir holds only data.txt (the unlinked file did not reappear)"
left=$(find "$T/work" -mindepth 1 -printf '%f ')
[[ $left == "data.txt " ]] || crt_fail "work dir holds: $left"
crt_expect_gone "$pid" "no process is left at pid $pid"
crt_pass
