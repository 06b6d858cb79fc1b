#!/usr/bin/env bash
# libcr_self.sh - acceptance: a libcr program checkpoints itself (examples/libcr_self), through
#   poll  cr_request_checkpoint(CR_SCOPE_PROC, target 0, a file descriptor) + cr_poll_checkpoint;
#   reap  the same request + cr_wait_checkpoint, cr_log_checkpoint, cr_reap_checkpoint;
#   file  the deprecated cr_request_file(PATH).
# In each case the original sees the request succeed (poll/reap > 0), its callbacks (one
# thread-context, one signal-context) saw cr_checkpoint() return 0 and cr_get_checkpoint_info()
# name the program itself as requester and target, scope CR_SCOPE_PROC and the canonical image
# path as dest; it goes on and finishes. The image restarts: in the restarted copy the request
# reports CR_ERESTARTED (poll: CR_POLL_CHKPT_ERR_POST with errno CR_ERESTARTED; reap: -1 with
# errno CR_ERESTARTED), the callbacks saw cr_checkpoint() return cr_restart's pid and
# cr_get_restart_info() name cr_restart and the canonical image path; the copy finishes with
# the same work result as the original.
#  1. poll: the original is killed by the test right after its request is done; restart.
#  2. reap, 3. file: the original runs to its end; restart afterwards.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
crt_begin libcr_self

PROG=$(crt_example libcr_self) || exit 1
STEPS=60
INTERVAL_MS=30 # about 1.8 s
AT=20
CR_ERESTARTED=2363
CR_POLL_CHKPT_ERR_POST=-2
mkdir -p "$T/sub"

# check_output FILE MODE RESULT ERRNO RET PID IMG REQUESTER: the program's output FILE says that
# the request (MODE) returned RESULT with ERRNO; both callbacks saw cr_checkpoint() return RET
# (0, or the pid of the cr_restart that restarted it, then also named by cr_get_restart_info()
# with src IMG) and cr_get_checkpoint_info() requester REQUESTER, target PID, scope 0, dest IMG.
check_output() {
  local file=$1 mode=$2 result=$3 errno=$4 ret=$5 pid=$6 img=$7 requester=$8
  crt_check "$file: request ($mode) result $result errno $errno; both callbacks saw cr_checkpoint() return $ret"
  sed 's/^/    /' "$file"
  python3 - "$file" "$mode" "$result" "$errno" "$ret" "$pid" "$img" "$requester" <<'PY' || crt_fail "$file is wrong (see above)"
import sys

path, mode, result, errno, ret, pid, img, requester = sys.argv[1:]
result, errno, ret, pid, requester = int(result), int(errno), int(ret), int(pid), int(requester)
errors = []
req, cbs = None, {}
for line in open(path):
    w = line.split()
    if not w:
        continue
    kv = dict(x.split("=", 1) for x in w[1:] if "=" in x)
    if w[0] == "request":
        req = kv
    elif w[0] == "callback":
        cbs.setdefault(kv["cb"], []).append(kv)
if req is None:
    errors.append("no request line")
elif (req["mode"], int(req["result"]), int(req["errno"])) != (mode, result, errno):
    errors.append(f"request: mode {req['mode']} result {req['result']} errno {req['errno']}, "
                  f"expected mode {mode} result {result} errno {errno}")
for cb in ("tc", "sm"):
    runs = cbs.get(cb, [])
    if len(runs) != 1:
        errors.append(f"callback {cb} ran {len(runs)} times, expected once")
        continue
    r = runs[0]
    if int(r["ret"]) != ret:
        errors.append(f"callback {cb}: cr_checkpoint() returned {r['ret']}, expected {ret}")
    got = (int(r["info"]), int(r["requester"]), int(r["target"]), int(r["scope"]), r["dest"])
    exp = (1, requester, pid, 0, img)
    if got != exp:
        errors.append(f"callback {cb}: cr_get_checkpoint_info() (present, requester, target, "
                      f"scope, dest) = {got}, expected {exp}")
    got = (int(r["rinfo"]), int(r["rrequester"]), r["src"])
    exp = (1, ret, img) if ret > 0 else (0, 0, "")
    if got != exp:
        errors.append(f"callback {cb}: cr_get_restart_info() (present, requester, src) = {got}, "
                      f"expected {exp}")
for e in errors:
    print("  ERROR: " + e)
sys.exit(1 if errors else 0)
PY
}

# start TAG MODE: start the program (output TAG.txt, image TAG.img, log TAG.log); sets PID.
start() {
  local tag=$1 mode=$2
  crt_log "start: libcr_self $tag.txt $tag.img $STEPS $INTERVAL_MS $AT $mode"
  CRKIT_READY="$T/$tag.ready" "$PROG" "$T/$tag.txt" "$T/$tag.img" "$STEPS" "$INTERVAL_MS" "$AT" "$mode" \
    </dev/null >"$T/$tag.log" 2>&1 &
  PID=$!
  crt_wait_ready "$T/$tag.ready" "$PID"
}

# restart TAG: restart TAG.img (named by a non-canonical path) and wait for it; sets RST.
restart() {
  local tag=$1
  crt_run "$tag.info" 30 "$CR_INFO" -q "$T/$tag.img"
  crt_expect_rc "$tag.info" 0 "cr_info -q $tag.img (the image the program wrote of itself is valid)"
  crt_bg "$tag.restart" "$CR_RESTART" "$T/sub/../$tag.img"
  RST=$BGPID
  crt_wait_bg "$RST" "$tag.restart" 0 "cr_restart $tag.img (pid $RST; waits for the restarted copy)"
}

# --- 1. poll; the original is killed after its request ----------------------------------------
start poll poll
crt_wait_until 30 "the request to be done (poll.log)" grep -q 'request done' "$T/poll.log"
crt_check "the original's cr_poll_checkpoint() returned > 0"
grep -q 'request done: result 1 errno 0' "$T/poll.log" || crt_fail "poll.log: $(grep 'request done' "$T/poll.log")"
crt_alive "$PID" || crt_fail "the program is gone after checkpointing itself"
kill -KILL "$PID"
crt_reap "$PID" 137 "the original was killed by the test"
[[ ! -e $T/poll.txt ]] || crt_fail "the original finished before it was killed"
restart poll
img=$(realpath "$T/poll.img")
check_output "$T/poll.txt" poll "$CR_POLL_CHKPT_ERR_POST" "$CR_ERESTARTED" "$RST" "$PID" "$img" "$PID"
grep '^work ' "$T/poll.txt" >"$T/poll.work"

# --- 2. reap, 3. file: the original runs to its end -------------------------------------------
for mode in reap file; do
  start "$mode" "$mode"
  crt_reap "$PID" 0 "the original ($mode) goes on after checkpointing itself and finishes"
  img=$(realpath "$T/$mode.img")
  want=1
  [[ $mode == file ]] && want=0 # cr_request_file() returns nothing
  check_output "$T/$mode.txt" "$mode" "$want" 0 0 "$PID" "$img" "$PID"
  cp -- "$T/$mode.txt" "$T/$mode.original.txt"
  grep '^work ' "$T/$mode.txt" >"$T/$mode.work"
  if [[ $mode == file ]]; then
    crt_check "cr_request_file() made the image with mode 0400"
    [[ $(stat -c %a "$T/file.img") == 400 ]] || crt_fail "file.img has mode $(stat -c %a "$T/file.img")"
  fi
  restart "$mode"
  if [[ $mode == reap ]]; then
    check_output "$T/$mode.txt" reap -1 "$CR_ERESTARTED" "$RST" "$PID" "$img" "$PID"
  else
    check_output "$T/$mode.txt" file 0 0 "$RST" "$PID" "$img" "$PID"
  fi
  grep '^work ' "$T/$mode.txt" >"$T/$mode.restarted.work"
  crt_expect_same "$T/$mode.restarted.work" "$T/$mode.work" "the restarted copy's work result equals the original's ($mode)"
done
crt_expect_same "$T/poll.work" "$T/reap.work" "the restarted copy's work result equals an uninterrupted run's (poll)"
crt_pass
