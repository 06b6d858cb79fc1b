#!/usr/bin/env bash
# nonroot.sh - acceptance: unprivileged use.
#  1. An unprivileged user (uid 65534 via setpriv when run as root, else the caller) checkpoints
#     their own counter with --kill and restarts it with a plain cr_restart (no capabilities:
#     it restarts in a new user + PID namespace); the counter finishes with exactly 1..N.
#  2. (root only) The administrator's one-time step: a copy of cr_restart gets
#     cap_checkpoint_restore (setcap). Run by uid 65534 it restores the counter with its
#     ORIGINAL pid in the initial PID namespace, owned by uid 65534.
#  3. (root only) That capable cr_restart refuses (exit 1, EPERM) an image of another user
#     (root's process), even when the image file is readable.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
crt_begin nonroot

if crt_is_root; then
  AS=("${AS_NOBODY[@]}")
  crt_tools_for_nobody counter
  U=$T/u
  crt_nobody_dir "$U"
  RUN_UID=$CRT_NOBODY_UID
else
  AS=()
  U=$T
  RUN_UID=$(id -u)
fi
COUNTER=$(crt_example counter) || exit 1

# as_user_touch FILE: create FILE owned by the unprivileged user (so that a restarted process
# running as that user can reopen it for writing).
as_user_touch() { "${AS[@]}" touch "$1" || crt_fail "cannot create $1 as uid $RUN_UID"; }

# start_counter TAG COUNT: start counter as the unprivileged user in $U; sets CPID.
start_counter() {
  local tag=$1 count=$2
  as_user_touch "$U/$tag.log"
  crt_log "start as uid $RUN_UID: counter $tag.txt $count 100"
  "${AS[@]}" env -C "$U" CRKIT_READY="$U/$tag.ready" "$COUNTER" "$U/$tag.txt" "$count" 100 \
    </dev/null >"$U/$tag.log" 2>&1 &
  CPID=$!
  crt_wait_ready "$U/$tag.ready" "$CPID"
  crt_wait_lines "$U/$tag.txt" 5 "$CPID"
  crt_check "counter $CPID runs as uid $RUN_UID"
  [[ $(stat -c %u "/proc/$CPID") == "$RUN_UID" ]] || crt_fail "counter $CPID is not owned by uid $RUN_UID"
}

# --- 1. unprivileged checkpoint and restart (new user + PID namespace) --------------------------
start_counter plain 40
pid=$CPID
crt_run ckpt_plain 60 "${AS[@]}" "$CR_CHECKPOINT" --kill -f "$U/plain.img" "$pid"
crt_expect_rc ckpt_plain 0 "cr_checkpoint --kill by uid $RUN_UID of its own process $pid"
crt_reap "$pid" 137 "the checkpointed process was killed (SIGKILL)"
crt_check_image "$U/plain.img"
crt_check "the image belongs to uid $RUN_UID"
[[ $(stat -c %u "$U/plain.img") == "$RUN_UID" ]] || crt_fail "plain.img is owned by uid $(stat -c %u "$U/plain.img")"

crt_run rst_plain 60 "${AS[@]}" env -C "$U" "$CR_RESTART" "$U/plain.img"
crt_expect_rc rst_plain 0 "cr_restart (no capabilities) by uid $RUN_UID"
crt_expect_seq "$U/plain.txt" 40

if ! crt_is_root; then
  crt_log "SKIP (part): the capable cr_restart (setcap) needs root"
  crt_pass
fi

# --- 2. capable cr_restart restores the original pid --------------------------------------------
mkdir -p "$T/capbin" && chmod 755 "$T/capbin"
CAP_RESTART=$T/capbin/cr_restart
if ! { cp -- "$CR_RESTART" "$CAP_RESTART" && chmod 755 "$CAP_RESTART"; }; then
  crt_fail "cannot copy cr_restart"
fi
crt_check "setcap cap_checkpoint_restore+ep on a copy of cr_restart"
setcap cap_checkpoint_restore+ep "$CAP_RESTART" ||
  crt_fail "setcap failed (does the file system of $T support security xattrs?)"
getcap "$CAP_RESTART" | grep -q cap_checkpoint_restore || crt_fail "getcap does not show the capability"

start_counter cap 60
pid=$CPID
crt_run ckpt_cap 60 "${AS[@]}" "$CR_CHECKPOINT" --kill -f "$U/cap.img" "$pid"
crt_expect_rc ckpt_cap 0 "cr_checkpoint --kill by uid $RUN_UID of its own process $pid"
crt_reap "$pid" 137 "the checkpointed process was killed (SIGKILL)"
crt_check_image "$U/cap.img"

crt_log "run in the background: ${AS[*]} $CAP_RESTART $U/cap.img"
"${AS[@]}" env -C "$U" "$CAP_RESTART" "$U/cap.img" </dev/null >"$T/rst_cap.out" 2>"$T/rst_cap.err" &
rpid=$!
crt_check "the restarted counter appears with its original pid $pid, in our PID namespace, as uid $RUN_UID"
our_ns=$(readlink /proc/self/ns/pid)
deadline=$((SECONDS + 40))
seen=0
while ((SECONDS < deadline)); do
  if crt_alive "$pid" && grep -qaF -- "$U/cap.txt" "/proc/$pid/cmdline" 2>/dev/null; then
    seen=1
    break
  fi
  crt_alive "$rpid" || break
  sleep 0.02
done
if [[ $seen -ne 1 ]]; then
  st=0
  wait "$rpid" || st=$?
  sed 's/^/    /' "$T/rst_cap.err" >&2
  crt_fail "no process with pid $pid running counter appeared (capable cr_restart exited with $st)"
fi
ns=$(readlink "/proc/$pid/ns/pid")
nspid=$(awk '/^NSpid:/ { $1 = ""; sub(/^ /, ""); print }' "/proc/$pid/status")
owner=$(awk '/^Uid:/ { print $2 }' "/proc/$pid/status")
crt_log "pid $pid: pid namespace $ns (ours $our_ns), NSpid '$nspid', uid $owner"
[[ $ns == "$our_ns" ]] || crt_fail "the restarted process is in another PID namespace ($ns)"
[[ $nspid == "$pid" ]] || crt_fail "the restarted process has NSpid '$nspid', expected '$pid'"
[[ $owner == "$RUN_UID" ]] || crt_fail "the restarted process runs as uid $owner, expected $RUN_UID"
st=0
wait "$rpid" || st=$?
crt_check "the capable cr_restart exits 0"
if [[ $st -ne 0 ]]; then
  sed 's/^/    /' "$T/rst_cap.err" >&2
  crt_fail "capable cr_restart exited with $st"
fi
crt_expect_seq "$U/cap.txt" 60

# --- 3. the capable cr_restart refuses another user's image --------------------------------------
crt_log "start as root: counter root.txt 40 100"
CRKIT_READY="$T/root.ready" "$COUNTER" "$T/root.txt" 40 100 </dev/null >"$T/root.log" 2>&1 &
pid=$!
crt_wait_ready "$T/root.ready" "$pid"
crt_wait_lines "$T/root.txt" 3 "$pid"
crt_run ckpt_root 60 "$CR_CHECKPOINT" --kill -f "$T/root.img" "$pid"
crt_expect_rc ckpt_root 0 "cr_checkpoint --kill by root of root's process $pid"
crt_reap "$pid" 137 "the checkpointed process was killed (SIGKILL)"
chmod 0444 "$T/root.img" # readable, so the refusal must come from the ownership check
before=$(cksum <"$T/root.txt")
crt_run refuse 60 "${AS[@]}" env -C "$U" "$CAP_RESTART" "$T/root.img"
crt_expect_rc refuse 1 "capable cr_restart by uid $RUN_UID of root's image (EPERM)"
crt_log "message: $(head -n3 "$T/refuse.err")"
crt_expect_gone "$pid" "no process was restored at pid $pid"
crt_check "root's output file is untouched"
[[ $(cksum <"$T/root.txt") == "$before" ]] || crt_fail "root.txt changed"
crt_pass
