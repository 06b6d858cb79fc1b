#!/usr/bin/env bash
# bad_input.sh - acceptance: bad input gives a clear error and BLCR's exit code, and leaves
# nothing behind:
#   corrupted byte in an image     -> cr_restart exits 5 (EIO), message mentions "checksum"
#   truncated / empty image        -> cr_restart exits 5 (EIO), message mentions "truncated"
#   bad magic / unknown version    -> cr_restart exits 22 (EINVAL)
#   nonexistent PID                -> cr_checkpoint exits 3 (ESRCH), no image file is left
#   PID in use at restart (root)   -> cr_restart exits 16 (EBUSY), message names the PID;
#                                     --no-restore-pid restarts it anyway (new PID namespace)
#   someone else's process         -> cr_checkpoint exits 1 (EPERM), target untouched
# Finally the undamaged image still restarts and finishes correctly.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
crt_begin bad_input

COUNTER=$(crt_example counter) || exit 1
SLEEPER=$(crt_example sleeper) || exit 1
COUNT=30

# --- a good image to damage ----------------------------------------------------------------
CRKIT_READY="$T/ready" "$COUNTER" "$T/out.txt" "$COUNT" 100 </dev/null >"$T/counter.log" 2>&1 &
pid=$!
crt_wait_ready "$T/ready" "$pid"
crt_wait_lines "$T/out.txt" 3 "$pid"
crt_run checkpoint 60 "$CR_CHECKPOINT" --kill -f "$T/good.img" "$pid"
crt_expect_rc checkpoint 0 "cr_checkpoint --kill -f good.img $pid"
crt_reap "$pid" 137 "the checkpointed process was killed (SIGKILL)"
crt_check_image "$T/good.img"
size=$(stat -c %s "$T/good.img")

# damaged_copy NAME: a writable copy of good.img
damaged_copy() {
  if ! { cp "$T/good.img" "$T/$1" && chmod u+w "$T/$1"; }; then
    crt_fail "cannot copy good.img to $1"
  fi
}
# poke FILE OFFSET BYTE_VALUE: overwrite one byte in place
poke() {
  printf '%b' "\\$(printf '%03o' "$3")" | dd of="$1" bs=1 seek="$2" count=1 conv=notrunc status=none ||
    crt_fail "cannot write byte $3 at offset $2 of $1"
}

# --- corrupted byte in the middle --------------------------------------------------------------
damaged_copy corrupt.img
off=$((size / 2))
old=$(od -An -tu1 -j "$off" -N1 "$T/corrupt.img" | tr -d ' ')
poke "$T/corrupt.img" "$off" $((old ^ 0x5a))
cmp -s "$T/good.img" "$T/corrupt.img" && crt_fail "the corrupted copy equals the original"
crt_log "corrupt.img: byte at offset $off (of $size) changed from $old to $((old ^ 0x5a))"
crt_run corrupt 60 "$CR_RESTART" "$T/corrupt.img"
crt_expect_rc corrupt 5 "cr_restart of an image with a corrupted byte"
crt_expect_stderr corrupt 'checksum' "the error message mentions the checksum"
crt_log "message: $(head -n3 "$T/corrupt.err")"
crt_expect_gone "$pid" "nothing of the failed restart survives at pid $pid"

# --- truncated ---------------------------------------------------------------------------------
head -c $((size / 2)) "$T/good.img" >"$T/truncated.img"
crt_run truncated 60 "$CR_RESTART" "$T/truncated.img"
crt_expect_rc truncated 5 "cr_restart of an image cut in half"
crt_expect_stderr truncated 'truncated' "the error message says the image is truncated"
crt_log "message: $(head -n3 "$T/truncated.err")"
crt_expect_gone "$pid" "nothing of the failed restart survives at pid $pid"

: >"$T/empty.img"
crt_run empty 30 "$CR_RESTART" "$T/empty.img"
crt_expect_rc empty 5 "cr_restart of an empty file"
crt_expect_stderr empty 'truncated' "the error message says the image is truncated"

# --- bad magic, unsupported version ------------------------------------------------------------
damaged_copy badmagic.img
poke "$T/badmagic.img" 0 $((0x58)) # 'X'
crt_run badmagic 30 "$CR_RESTART" "$T/badmagic.img"
crt_expect_rc badmagic 22 "cr_restart of a file with a bad magic"
crt_log "message: $(head -n3 "$T/badmagic.err")"

damaged_copy badversion.img
poke "$T/badversion.img" 8 99 # u32 version at offset 8 (little-endian)
crt_run badversion 30 "$CR_RESTART" "$T/badversion.img"
crt_expect_rc badversion 22 "cr_restart of an image with an unknown format version"
crt_expect_stderr badversion 'version' "the error message mentions the version"
crt_log "message: $(head -n3 "$T/badversion.err")"

# --- nonexistent PID ---------------------------------------------------------------------------
nopid=$(crt_free_pid)
crt_run nopid 30 "$CR_CHECKPOINT" -f "$T/nopid.img" "$nopid"
crt_expect_rc nopid 3 "cr_checkpoint of the nonexistent pid $nopid"
crt_log "message: $(head -n3 "$T/nopid.err")"
crt_check "no image or temporary file is left behind"
leftover=$(find "$T" -maxdepth 1 -name '*nopid.img*' -printf '%f ')
[[ -z $leftover ]] || crt_fail "left behind: $leftover"

# --- PID in use at restart; --no-restore-pid ---------------------------------------------------
CRKIT_READY="$T/ready_s" "$SLEEPER" "$T/sleeper.txt" 8 </dev/null >"$T/sleeper.log" 2>&1 &
spid=$!
crt_wait_ready "$T/ready_s" "$spid"
crt_run ckpt_sleeper 60 "$CR_CHECKPOINT" -f "$T/sleeper.img" "$spid"
crt_expect_rc ckpt_sleeper 0 "cr_checkpoint (--run) of sleeper $spid"
crt_alive "$spid" || crt_fail "sleeper $spid is gone after a --run checkpoint"
if crt_is_root; then
  crt_run busy 60 "$CR_RESTART" "$T/sleeper.img"
  crt_expect_rc busy 16 "cr_restart while pid $spid is still in use"
  crt_expect_stderr busy "(^|[^0-9])$spid([^0-9]|\$)" "the error message names pid $spid"
  crt_log "message: $(head -n3 "$T/busy.err")"
else
  crt_log "SKIP (part): EBUSY for a PID in use needs root (an unprivileged restart uses a new PID namespace)"
fi
crt_run copy 60 "$CR_RESTART" --no-restore-pid "$T/sleeper.img"
crt_expect_rc copy 0 "cr_restart --no-restore-pid while the original still runs (a copy in a new PID namespace)"
crt_reap "$spid" 0 "the original sleeper finishes normally"

# --- someone else's process --------------------------------------------------------------------
if crt_is_root; then
  crt_tools_for_nobody sleeper
  crt_nobody_dir "$T/u"
  CRKIT_READY="$T/ready_o" "$SLEEPER" "$T/other.txt" 30 </dev/null >"$T/other.log" 2>&1 &
  opid=$!
  crt_wait_ready "$T/ready_o" "$opid"
  crt_run other 30 "${AS_NOBODY[@]}" "$CR_CHECKPOINT" -f "$T/u/other.img" "$opid"
  crt_expect_rc other 1 "cr_checkpoint by uid $CRT_NOBODY_UID of root's process $opid"
  crt_log "message: $(head -n3 "$T/other.err")"
  crt_check "no image is left and process $opid is untouched (running, not traced)"
  [[ ! -e $T/u/other.img ]] || crt_fail "an image was written"
  crt_alive "$opid" || crt_fail "process $opid died"
  grep -q '^TracerPid:[[:space:]]*0$' "/proc/$opid/status" || crt_fail "process $opid is traced"
  state=$(awk '/^State:/ { print $2 }' "/proc/$opid/status")
  [[ $state != T && $state != t ]] || crt_fail "process $opid is stopped (state $state)"
  kill -KILL "$opid" && wait "$opid" 2>/dev/null
elif [[ -r /proc/1/status && $(stat -c %u /proc/1) != "$(id -u)" ]]; then
  crt_run other 30 "$CR_CHECKPOINT" -p -f "$T/other.img" 1
  crt_expect_rc other 1 "cr_checkpoint -p 1 (a process of another user)"
  [[ ! -e $T/other.img ]] || crt_fail "an image was written"
else
  crt_log "SKIP (part): no process of another user to try"
fi

# --- the undamaged image still works ------------------------------------------------------------
crt_run restart 60 "$CR_RESTART" "$T/good.img"
crt_expect_rc restart 0 "cr_restart good.img after all the failed attempts"
crt_expect_seq "$T/out.txt" "$COUNT"
crt_pass
