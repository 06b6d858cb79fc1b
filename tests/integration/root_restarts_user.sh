#!/usr/bin/env bash
# root_restarts_user.sh - root restarting another user's image:
#  - a symlink planted (by the user) in place of a file the process had open for writing
#    must not make root open or truncate the link's target: the restart fails and the
#    root-only file is untouched;
#  - otherwise the process comes back as that user (uids, gids), with no capabilities, in a
#    session of its own (not in root's, whose terminal it could push input into), still
#    dumpable (its owner can checkpoint it again), and finishes correctly;
#  - an image file the user owns restores only that user's processes: one that claims to be
#    root's (a crafted image) is refused with EPERM before anything is created.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
crt_begin root_restarts_user
crt_need_root "restarting another user's image as root"

crt_tools_for_nobody counter
COUNTER=$(crt_example counter) || exit 1
U=$T/u
crt_nobody_dir "$U"

start_user_counter() { # NAME COUNT -> CPID
  "${AS_NOBODY[@]}" touch "$U/$1.txt" || crt_fail "cannot create $U/$1.txt"
  rm -f "$U/$1.ready"
  "${AS_NOBODY[@]}" env -C "$U" CRKIT_READY="$U/$1.ready" "$COUNTER" "$U/$1.txt" "$2" 50 \
    </dev/null >/dev/null 2>&1 &
  CPID=$!
  crt_wait_ready "$U/$1.ready" "$CPID"
  crt_wait_lines "$U/$1.txt" 3 "$CPID"
}

# --- the planted symlink ------------------------------------------------------------------
echo "root only" >"$T/victim"
chmod 600 "$T/victim"
start_user_counter evil 60
pid=$CPID
crt_run ck_evil 60 "${AS_NOBODY[@]}" "$CR_CHECKPOINT" --kill -f "$U/evil.img" "$pid"
crt_expect_rc ck_evil 0 "checkpoint by the user of its own process $pid"
crt_reap "$pid" 137 "the checkpointed process was killed"
"${AS_NOBODY[@]}" bash -c "rm -f '$U/evil.txt' && ln -s '$T/victim' '$U/evil.txt'" || crt_fail "cannot plant the symlink"
crt_run rs_evil 60 "$CR_RESTART" "$U/evil.img"
crt_check "root's restart of the image refuses the planted symlink"
[[ $RC -ne 0 ]] || crt_fail "cr_restart succeeded through a symlink to a root-only file"
crt_log "message: $(head -n2 "$T/rs_evil.err")"
[[ $(cat "$T/victim") == "root only" ]] || crt_fail "the root-only file was modified"
crt_expect_gone "$pid" "nothing was left running at pid $pid"

# --- a normal restart by root ----------------------------------------------------------------
start_user_counter good 60
pid=$CPID
crt_run ck_good 60 "${AS_NOBODY[@]}" "$CR_CHECKPOINT" --kill -f "$U/good.img" "$pid"
crt_expect_rc ck_good 0 "checkpoint by the user of its own process $pid"
crt_reap "$pid" 137 "the checkpointed process was killed"
"$CR_RESTART" "$U/good.img" </dev/null >"$T/rs_good.out" 2>"$T/rs_good.err" &
rpid=$!
lines=$(crt_lines "$U/good.txt")
# New lines appear only once the restored process has been released.
crt_wait_until 20 "the restarted process $pid to write again" \
  bash -c "[[ \$(wc -l <'$U/good.txt') -gt $lines ]]"
uids=$(awk '/^Uid:/ { print $2, $3, $4, $5 }' "/proc/$pid/status")
gids=$(awk '/^Gid:/ { print $2, $3, $4, $5 }' "/proc/$pid/status")
caps=$(awk '/^CapPrm:/ { print $2 }' "/proc/$pid/status")
n=$CRT_NOBODY_UID
crt_check "the restarted process runs as uid/gid $n with no capabilities (uids '$uids', gids '$gids', CapPrm $caps)"
[[ $uids == "$n $n $n $n" && $gids == "$n $n $n $n" ]] || crt_fail "wrong credentials"
[[ $caps == 0000000000000000 ]] || crt_fail "the restarted process holds capabilities $caps"
crt_check "it is not in root's session (no terminal of root's to push input into)"
[[ $(crt_sid "$pid") != $(crt_sid "$rpid") && $(crt_sid "$pid") == "$pid" ]] ||
  crt_fail "the restarted process is in session $(crt_sid "$pid"), cr_restart in $(crt_sid "$rpid")"
crt_run again 60 "${AS_NOBODY[@]}" "$CR_CHECKPOINT" -f "$U/again.img" "$pid"
crt_expect_rc again 0 "its owner can checkpoint the restarted process again (dumpable)"
st=0
wait "$rpid" || st=$?
[[ $st -eq 0 ]] || { sed 's/^/    /' "$T/rs_good.err" >&2; crt_fail "cr_restart exited with $st"; }
crt_expect_seq "$U/good.txt" 60

# --- an image the user owns but that claims root's identity -------------------------------
# (made by root checkpointing a root process, then given to the user: the same bytes a user
# could craft)
"$COUNTER" "$T/rootjob.txt" 100 50 </dev/null >/dev/null 2>&1 &
rootpid=$!
crt_wait_lines "$T/rootjob.txt" 2 "$rootpid"
crt_run rootck 60 "$CR_CHECKPOINT" --kill -f "$U/claims_root.img" "$rootpid"
crt_expect_rc rootck 0 "root checkpoints its own process"
crt_reap "$rootpid" 137 "root's process was killed"
chown "$CRT_NOBODY_UID" "$U/claims_root.img"
crt_run forged 60 "$CR_RESTART" "$U/claims_root.img"
crt_expect_rc forged 1 "root restarting a user-owned image that claims uid 0 (EPERM)"
crt_expect_stderr forged "uid 0.*belongs to uid $CRT_NOBODY_UID" "the message names the claimed uid and the file's owner"
crt_expect_gone "$rootpid" "nothing was restarted at pid $rootpid"
crt_pass
