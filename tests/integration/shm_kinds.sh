#!/usr/bin/env bash
# shm_kinds.sh - memory shared between the processes of a tree stays shared after a restart,
# for every kind: MAP_SHARED|MAP_ANONYMOUS inherited over fork, a memfd (mapped and open), a
# POSIX shared memory object in /dev/shm, a MAP_SHARED regular file, and a /dev/shm object
# removed while mapped. Two children take turns through these regions (examples/shm_kinds.c),
# so a region restored as private copies stops the turns or breaks the counts. Checkpointed
# with --kill mid-run and restarted: the result equals an uninterrupted run's. Also checks
# that the image saves each shared page once although three processes map it.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
crt_begin shm_kinds
crt_need_root "restoring the original PIDs of a process tree"

PROG=$(crt_example shm_kinds) || exit 1
ROUNDS=300
mkdir -p "$T/ref" "$T/work"
trap 'rm -f /dev/shm/crkit-shm-kinds-*; crt_cleanup' EXIT

crt_run reference 60 "$PROG" "$T/ref" "$ROUNDS"
crt_expect_rc reference 0 "uninterrupted shm_kinds run"

CRKIT_READY="$T/ready" "$PROG" "$T/work" "$ROUNDS" </dev/null >"$T/shm_kinds.log" 2>&1 &
pid=$!
crt_wait_ready "$T/ready" "$pid"
sleep 0.3
crt_run checkpoint 60 "$CR_CHECKPOINT" --kill -f "$T/shm.img" "$pid"
crt_expect_rc checkpoint 0 "cr_checkpoint --kill -f shm.img $pid (parent and two children)"
crt_reap "$pid" 137 "the parent was killed (SIGKILL)"

crt_run info 30 "$CR_INFO" --json "$T/shm.img"
crt_expect_rc info 0 "cr_info --json shm.img"
crt_check "the image holds 3 processes, and the shared regions' pages once"
crt_json "$T/info.out" 'len(doc["processes"])' | grep -qx 3 || crt_fail "not 3 processes"
# The anonymous, memfd and removed-shm regions are saved in the image (the file and the
# /dev/shm object are mapped by path): their populated page is saved by one process only.
saved=$(crt_json "$T/info.out" 'sum(v["pages_in_image"] for v in doc["vmas"] if v["kind"] == "anon-shared")')
crt_log "pages of shared anonymous regions in the image: $saved"
[[ $saved -le 3 ]] || crt_fail "$saved pages of shared regions saved: a page was saved by more than one process"

crt_run restart 90 "$CR_RESTART" "$T/shm.img"
crt_expect_rc restart 0 "cr_restart shm.img (the children's turns need every region shared)"
crt_expect_same "$T/work/result.txt" "$T/ref/result.txt" "the restarted job's result equals the uninterrupted run's"
crt_pass
