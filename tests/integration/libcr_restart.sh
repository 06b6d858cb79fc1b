#!/usr/bin/env bash
# libcr_restart.sh - acceptance: a libcr program restarts an image itself (examples/libcr_restart:
# cr_request_restart + cr_poll_restart, then waitpid on the restored root):
#  1. an image of counter (no libcr), made with cr_checkpoint --kill: with CR_RSTRT_RESTORE_PID
#     (the original is gone) cr_poll_restart returns the original pid; that process is the
#     caller's child (its parent in /proc is the caller) and waitpid gives its exit status 0;
#     the counter's output continues to 1..N;
#  2. an image of a libcr program (examples/libcr_modes), made with --kill: the same, and the
#     restored program's callback saw cr_checkpoint() return the pid of the requester (the
#     caller of cr_request_restart); its work result equals an uninterrupted run's;
#  3. an image made with --run while the original still runs: with CR_RSTRT_RESTORE_PID the
#     request fails with EBUSY (its pid is in use); once the original has finished, a request
#     without CR_RSTRT_RESTORE_PID (new PID namespace) restores it as the caller's child too.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
crt_begin libcr_restart

crt_link_examples libcr_restart libcr_modes counter
COUNT=30
STEPS=40
INTERVAL_MS=50
EBUSY=16

# request TAG IMAGE pid|nopid WANT_EXIT: run libcr_restart (output TAG.txt); it must exit WANT.
request() {
  local tag=$1 img=$2 flags=$3
  crt_bg "$tag" "$BIN/libcr_restart" "$T/$tag.txt" "$img" "$flags"
  REQ=$BGPID
  crt_wait_bg "$REQ" "$tag" 0 "libcr_restart $tag.txt ${img##*/} $flags (pid $REQ)"
  sed 's/^/    /' "$T/$tag.txt"
}

# field TAG LINE KEY: the value of KEY=... on the line of TAG.txt that starts with LINE.
field() { sed -n "s/^$2 .*\<$3=\([^ ]*\).*/\1/p" "$T/$1.txt"; }

# restored_ok TAG [PID]: the request succeeded, the restored root (PID, if given) was the
# requester's child and exited 0. Sets ROOT.
restored_ok() {
  local tag=$1 want=${2:-}
  crt_check "$tag: cr_request_restart returned 0"
  [[ $(field "$tag" request rc) == 0 ]] || crt_fail "$tag: $(head -n1 "$T/$tag.txt")"
  ROOT=$(field "$tag" restored pid)
  crt_check "$tag: cr_poll_restart returned the restored root's pid${want:+ ($want, the original pid)}"
  [[ $ROOT =~ ^[0-9]+$ && $ROOT -gt 0 ]] || crt_fail "$tag: cr_poll_restart returned '$ROOT'"
  [[ -z $want || $ROOT == "$want" ]] || crt_fail "$tag: cr_poll_restart returned $ROOT, expected $want"
  crt_check "$tag: the restored root $ROOT was the requester's ($REQ) child"
  [[ $(field "$tag" restored ppid) == "$REQ" && $(field "$tag" restored self) == "$REQ" ]] ||
    crt_fail "$tag: $(grep '^restored' "$T/$tag.txt")"
  crt_check "$tag: waitpid on it gave exit status 0"
  [[ $(field "$tag" status exit) == 0 ]] || crt_fail "$tag: $(grep '^status' "$T/$tag.txt")"
}

# work_line N: the work result of libcr_modes with N steps.
work_line() { echo "work steps=$1 sum=$(($1 * ($1 + 1) * (2 * $1 + 1) / 6))"; }

# --- 1. counter, --kill, restore its pid --------------------------------------------------------
crt_log "start: counter counter.txt $COUNT 100"
CRKIT_READY="$T/counter.ready" "$BIN/counter" "$T/counter.txt" "$COUNT" 100 </dev/null >"$T/counter.log" 2>&1 &
pid=$!
crt_wait_ready "$T/counter.ready" "$pid"
crt_wait_lines "$T/counter.txt" 5 "$pid"
crt_run counter.ck 60 "$CR_CHECKPOINT" --kill -f "$T/counter.img" "$pid"
crt_expect_rc counter.ck 0 "cr_checkpoint --kill -f counter.img $pid"
crt_reap "$pid" 137 "the counter was killed (SIGKILL)"
request counter.req "$T/counter.img" pid
restored_ok counter.req "$pid"
crt_expect_seq "$T/counter.txt" "$COUNT"
crt_expect_gone "$pid" "no process is left at pid $pid"

# --- 2. a libcr program, --kill, restore its pid ------------------------------------------------
crt_log "start: libcr_modes modes.txt $STEPS $INTERVAL_MS ready"
CRKIT_READY="$T/modes.ready" "$BIN/libcr_modes" "$T/modes.txt" "$STEPS" "$INTERVAL_MS" ready </dev/null >"$T/modes.log" 2>&1 &
pid=$!
crt_wait_ready "$T/modes.ready" "$pid"
sleep 0.3
crt_run modes.ck 60 "$CR_CHECKPOINT" --kill -f "$T/modes.img" "$pid"
crt_expect_rc modes.ck 0 "cr_checkpoint --kill -f modes.img $pid"
crt_reap "$pid" 137 "the libcr program was killed (SIGKILL)"
request modes.req "$T/modes.img" pid
restored_ok modes.req "$pid"
crt_check "the restored program's work result is $(work_line "$STEPS") and its callback saw cr_checkpoint() return the requester's pid $REQ"
[[ $(head -n1 "$T/modes.txt") == "$(work_line "$STEPS")" ]] || crt_fail "modes.txt: $(cat "$T/modes.txt")"
grep -qx "callback n=1 ret=$REQ" "$T/modes.txt" || crt_fail "modes.txt: $(cat "$T/modes.txt")"

# --- 3. --run: the pid is in use; later, without CR_RSTRT_RESTORE_PID ----------------------------
crt_log "start: libcr_modes busy.txt $STEPS $INTERVAL_MS ready"
CRKIT_READY="$T/busy.ready" "$BIN/libcr_modes" "$T/busy.txt" "$STEPS" "$INTERVAL_MS" ready </dev/null >"$T/busy.log" 2>&1 &
pid=$!
crt_wait_ready "$T/busy.ready" "$pid"
sleep 0.3
crt_run busy.ck 60 "$CR_CHECKPOINT" --run -f "$T/busy.img" "$pid"
crt_expect_rc busy.ck 0 "cr_checkpoint --run -f busy.img $pid"
request busy.req "$T/busy.img" pid
crt_check "with CR_RSTRT_RESTORE_PID, cr_request_restart fails with EBUSY while the original ($pid) runs"
[[ $(field busy.req request rc) == -1 && $(field busy.req request errno) == "$EBUSY" ]] ||
  crt_fail "busy.req: $(cat "$T/busy.req.txt")"
crt_alive "$pid" || crt_fail "the original $pid is gone after the failed restart request"
crt_reap "$pid" 0 "the original goes on and finishes"
crt_check "the original's work result is $(work_line "$STEPS"); its callback saw 0"
[[ $(cat "$T/busy.txt") == "$(work_line "$STEPS")"$'\n'"callback n=1 ret=0" ]] || crt_fail "busy.txt: $(cat "$T/busy.txt")"
request busy.nopid "$T/busy.img" nopid
restored_ok busy.nopid
crt_check "the program restored in a new PID namespace finished with the work result $(work_line "$STEPS"); its callback saw > 0"
[[ $(head -n1 "$T/busy.txt") == "$(work_line "$STEPS")" ]] || crt_fail "busy.txt: $(cat "$T/busy.txt")"
ret=$(sed -n 's/^callback n=1 ret=//p' "$T/busy.txt")
[[ $ret =~ ^[0-9]+$ && $ret -gt 0 ]] || crt_fail "busy.txt: $(cat "$T/busy.txt")"
crt_pass
