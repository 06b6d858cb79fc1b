#!/usr/bin/env bash
# acceptance.sh - coordinated checkpoints of an MPI job on network-namespace nodes (issue 6).
#
# MPICH 4.0.2 built checkpoint-enabled against our libcr (mpi_glue/build-mpich.sh) runs
# examples/ring_halo (built with Debian's mpicc, unchanged) with 6 ranks on 3 "nodes"; every
# node is a network namespace with its own address and host name (tests/mpi/netns.sh), the
# launcher and the coordinator run on a separate head node. Phases (CRKIT_MPI_PHASES selects,
# default all):
#   main     3 snapshots while it runs (and one with a wrong token, refused), kill the job,
#            restart the 2nd snapshot on three other nodes listed in another order: the
#            checksum of an uninterrupted run
#   nolocal  all traffic over TCP (MPIR_CVAR_NOLOCAL=1): a snapshot of 3x2 ranks restarts on
#            2 nodes with 3 ranks each
#   copy     while the job runs on, a copy restarts from its latest snapshot on other nodes
#            (its PIDs are taken: new PID namespaces): both finish with the checksum
#   term     cr_snapshot --term, then cr_mpirestart on the same nodes
#   killrank a rank killed during a snapshot: it is abandoned with a clear message, leaves no
#            manifest, and the previous snapshot restarts the job
#   failsnap one node cannot write its image: the snapshot is abandoned, nothing of it is
#            left, and the job runs on to the right result
#   periodic --checkpoint-interval 2 --keep 2: the job finishes right, two snapshots are left,
#            the newest restarts
# Needs root (namespaces), CRKIT_BINDIR (cr_mpirun & co), MPICH (the build's prefix) and
# RING_HALO (the example), set by tests/mpi/CMakeLists.txt.
source "$(dirname "${BASH_SOURCE[0]}")/../integration/lib.sh"
source "$(dirname "${BASH_SOURCE[0]}")/netns.sh"
crt_begin mpi_acceptance
crt_need_root "network namespaces"
for v in CRKIT_BINDIR MPICH RING_HALO; do
  [[ -n ${!v:-} ]] || crt_fail "$v is not set (run this test through ctest -L mpi)"
done
[[ -x $MPICH/lib/libmpich.so.12 || -e $MPICH/lib/libmpich.so.12 ]] ||
  crt_fail "MPICH=$MPICH has no lib/libmpich.so.12 (run mpi_glue/build-mpich.sh)"
# crt_cleanup reads the script's status from $?: keep it across nn_down.
trap 'crt_rc=$?; nn_down >/dev/null 2>&1; (exit $crt_rc); crt_cleanup' EXIT
nn_up 6 || crt_fail "could not create the namespace nodes"

PHASES=${CRKIT_MPI_PHASES:-main nolocal copy term killrank failsnap periodic}
ITER=${CRKIT_MPI_ITER:-500}
SLEEP_US=${CRKIT_MPI_SLEEP_US:-20000} # ~10 s per run: time for several snapshots
LIBCR_DIR=$(cd "$CRKIT_BINDIR/../lib" && pwd) || crt_fail "no lib directory next to $CRKIT_BINDIR"
export LD_LIBRARY_PATH="$MPICH/lib:$LIBCR_DIR"
export PATH="$CRKIT_BINDIR:$PATH"
CKPT=$T/ckpt
mkdir -p "$CKPT"
RUN=(cr_mpirun --launcher "$NN_NSRSH" --checkpoint-dir "$CKPT" -v)
RESTART=(cr_mpirestart --launcher "$NN_NSRSH" --checkpoint-dir "$CKPT" -v ${CRKIT_MPI_RESTART_OPTS:-})

# on_head LABEL LIMIT CMD...: run CMD on the head node (crt_run: LABEL.out/.err, RC)
on_head() {
  local label=$1 limit=$2
  shift 2
  crt_run "$label" "$limit" ip netns exec "$(nn_ns head)" unshare --uts sh -c 'hostname head; exec "$@"' sh "$@"
}
# bg_head LABEL CMD...: start CMD on the head node in the background; sets BG_PID
bg_head() {
  local label=$1
  shift
  ip netns exec "$(nn_ns head)" unshare --uts sh -c 'hostname head; exec "$@"' sh "$@" \
    </dev/null >"$T/$label.out" 2>"$T/$label.err" &
  BG_PID=$!
}
ranks_gone() { ! pgrep -f "ring_halo $ITER $SLEEP_US" >/dev/null; }
checksum_of() { grep -o 'checksum=[0-9a-f]*' "$T/$1.out" | tail -1; }
expect_checksum() {
  local label=$1 what=$2 got
  got=$(checksum_of "$label")
  crt_check "$what prints the uninterrupted run's $REF (got '${got:-nothing}')"
  [[ $got == "$REF" ]] || {
    sed 's/^/    /' "$T/$label.err" | tail -40 >&2
    crt_fail "$what: checksum '${got:-none}', expected $REF"
  }
}
# wait_progress LABEL N: until the job's rank 0 reported iteration N0% (stderr lines)
wait_progress() {
  local label=$1 n=$2 i
  for ((i = 0; i < 300; ++i)); do
    (($(grep -c '^iteration' "$T/$label.err" 2>/dev/null || true) >= n)) && return 0
    sleep 0.1
  done
  crt_fail "$label made no progress: $(tail -5 "$T/$label.err")"
}
snapshot() { # snapshot LABEL JOB [cr_snapshot options]: the snapshot dir on LABEL.out
  local label=$1 job=$2
  shift 2
  on_head "$label" 120 cr_snapshot "$@" "$job"
}

# The reference: an uninterrupted run (no sleeping: the sleep does not change the result).
on_head ref 120 "${RUN[@]}" -n 6 --hosts node1:2,node2:2,node3:2 --job ref "$RING_HALO" "$ITER" 0
crt_expect_rc ref 0 "an uninterrupted cr_mpirun -n 6 on node1..3"
REF=$(checksum_of ref)
[[ -n $REF ]] || crt_fail "the reference run printed no checksum: $(tail -5 "$T/ref.out")"
crt_log "reference: $REF"

phase_main() {
  bg_head main "${RUN[@]}" -n 6 --hosts node1:2,node2:2,node3:2 --job main "$RING_HALO" "$ITER" "$SLEEP_US"
  local job=$BG_PID s
  wait_progress main 2
  for s in 1 2 3; do
    snapshot "snap$s" main
    crt_expect_rc "snap$s" 0 "cr_snapshot main (#$s) while the job runs"
    sleep 1
  done
  # The coordinator answers only its token: a wrong one is refused (EACCES), naming why.
  local coord
  coord=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["coord"])' \
    "${CRKIT_RUN_DIR:-/tmp/crkit-$(id -u)}/jobs/main.json") || crt_fail "no registry record of job main"
  on_head badtoken 30 env CRKIT_COORD_TOKEN=0000000000000000000000000000000000000000 \
    cr_snapshot --coord "$coord" main
  crt_expect_rc badtoken 13 "cr_snapshot --coord $coord with a wrong token (EACCES)"
  crt_check "the refusal says authentication failed"
  grep -q "authentication failed" "$T/badtoken.err" || crt_fail "stderr: $(cat "$T/badtoken.err")"
  local dir2
  dir2=$(tail -1 "$T/snap2.out")
  [[ -f $dir2/manifest.json ]] || crt_fail "cr_snapshot printed '$dir2', which has no manifest.json"
  kill -9 "$job"
  # The agents lose the launcher and the coordinator: the ranks die with them.
  pkill -9 -f "cr_agent --coord .* --job main " 2>/dev/null || true
  crt_wait_until 20 "the killed job's ranks to end" ranks_gone
  crt_check "the job was killed before it finished"
  grep -q 'checksum=' "$T/main.out" && crt_fail "the job finished before it was killed (make it run longer)"
  on_head main_rs 180 "${RESTART[@]}" --hosts node6:2,node4:2,node5:2 --job main_rs "$dir2"
  crt_expect_rc main_rs 0 "cr_mpirestart of snapshot 2 on node6,node4,node5"
  expect_checksum main_rs "the job restarted from snapshot 2 on three other nodes"
  crt_log "main: restarted on other nodes: $REF"
}

phase_nolocal() {
  bg_head nl "${RUN[@]}" --nolocal -n 6 --hosts node1:2,node2:2,node3:2 --job nl "$RING_HALO" "$ITER" "$SLEEP_US"
  local job=$BG_PID
  wait_progress nl 2
  snapshot nl_snap nl
  crt_expect_rc nl_snap 0 "cr_snapshot of the all-TCP job"
  kill -9 "$job"
  pkill -9 -f "cr_agent --coord .* --job nl " 2>/dev/null || true
  crt_wait_until 20 "the killed job's ranks to end" ranks_gone
  on_head nl_rs 180 "${RESTART[@]}" --hosts node4:3,node5:3 --job nl_rs "$(tail -1 "$T/nl_snap.out")"
  crt_expect_rc nl_rs 0 "cr_mpirestart of a 3x2 all-TCP snapshot on 2 nodes x 3 ranks"
  expect_checksum nl_rs "the all-TCP job restarted on 2 nodes with 3 ranks each"
}

phase_copy() {
  bg_head orig "${RUN[@]}" -n 6 --hosts node1:2,node2:2,node3:2 --job orig "$RING_HALO" "$ITER" "$SLEEP_US"
  local job=$BG_PID
  wait_progress orig 2
  snapshot copy_snap orig
  crt_expect_rc copy_snap 0 "cr_snapshot orig"
  on_head copy 300 "${RESTART[@]}" --hosts node4:2,node5:2,node6:2 --job copy "$(tail -1 "$T/copy_snap.out")"
  crt_expect_rc copy 0 "a copy restarted while the original runs (new PID namespaces)"
  expect_checksum copy "the copy"
  wait "$job" || crt_fail "the original job failed (status $?): $(tail -5 "$T/orig.err")"
  expect_checksum orig "the original job, which ran on"
}

phase_term() {
  bg_head term "${RUN[@]}" -n 6 --hosts node1:2,node2:2,node3:2 --job term "$RING_HALO" "$ITER" "$SLEEP_US"
  local job=$BG_PID
  wait_progress term 2
  snapshot term_snap term --term
  crt_expect_rc term_snap 0 "cr_snapshot --term"
  local rc=0
  wait "$job" || rc=$?
  crt_check "the job ended after cr_snapshot --term with status 0 (cr_mpirun status $rc)"
  ((rc == 0)) || crt_fail "cr_mpirun exited with $rc after --term: $(tail -5 "$T/term.err")"
  grep -q 'checksum=' "$T/term.out" && crt_fail "the job finished instead of being terminated"
  [[ -f $(tail -1 "$T/term_snap.out")/manifest.json ]] || crt_fail "the --term snapshot has no manifest"
  on_head term_rs 180 "${RESTART[@]}" --job term_rs "$(tail -1 "$T/term_snap.out")"
  crt_expect_rc term_rs 0 "cr_mpirestart on the same nodes"
  expect_checksum term_rs "the terminated job restarted on its nodes"
}

phase_killrank() {
  bg_head kr "${RUN[@]}" -n 6 --hosts node1:2,node2:2,node3:2 --job kr "$RING_HALO" "$ITER" "$SLEEP_US"
  local job=$BG_PID
  wait_progress kr 2
  snapshot kr1 kr
  crt_expect_rc kr1 0 "cr_snapshot kr (the good one)"
  # Rank 3, found by its PMI_ID.
  local p victim=""
  for p in $(pgrep -f "ring_halo $ITER $SLEEP_US"); do
    tr '\0' '\n' <"/proc/$p/environ" 2>/dev/null | grep -qx 'PMI_ID=3' && victim=$p
  done
  [[ -n $victim ]] || crt_fail "rank 3 not found"
  # Stopped, rank 3 cannot take part in the channel drain: the snapshot is surely in progress
  # (its directory exists) when the rank is killed.
  kill -STOP "$victim"
  bg_head kr2 cr_snapshot kr
  local snap_pid=$BG_PID
  crt_wait_until 30 "snapshot 2 to start" test -d "$CKPT/kr/snap-000002"
  sleep 0.5
  kill -9 "$victim"
  local rc=0
  wait "$snap_pid" || rc=$?
  crt_check "cr_snapshot fails when a rank dies during it (status $rc)"
  ((rc != 0)) || crt_fail "cr_snapshot succeeded although rank 3 was killed"
  crt_check "its message says the snapshot was abandoned because a rank ended: $(tail -1 "$T/kr2.err")"
  grep -Eqi 'abandoned.*(rank [0-9]+ .*ended|node 1)' "$T/kr2.err" || crt_fail "no such message: $(cat "$T/kr2.err")"
  local partial
  partial=$(find "$CKPT/kr" -maxdepth 1 -name 'snap-*' | sort | tail -n +2)
  [[ -z $partial ]] || crt_fail "the abandoned snapshot left $partial"
  wait "$job" 2>/dev/null || true
  crt_wait_until 20 "the killed job's ranks to end" ranks_gone
  on_head kr_rs 180 "${RESTART[@]}" --job kr_rs "$(tail -1 "$T/kr1.out")"
  crt_expect_rc kr_rs 0 "cr_mpirestart of the previous snapshot"
  expect_checksum kr_rs "the job restarted from the snapshot before the failed one"
}

phase_failsnap() {
  # node 1's image path is taken by a directory: its cr_checkpoint fails, the others cancel.
  mkdir -p "$CKPT/fs/snap-000001/node-1.img"
  bg_head fs "${RUN[@]}" -n 6 --hosts node1:2,node2:2,node3:2 --job fs "$RING_HALO" "$ITER" "$SLEEP_US"
  local job=$BG_PID
  wait_progress fs 2
  snapshot fs1 fs
  crt_check "cr_snapshot fails when a node cannot write its image (status $RC)"
  ((RC != 0)) || crt_fail "cr_snapshot succeeded"
  grep -Eqi 'abandoned.*node 1' "$T/fs1.err" || crt_fail "the message does not say which node failed: $(cat "$T/fs1.err")"
  crt_check "the abandoned snapshot left nothing"
  [[ ! -e $CKPT/fs/snap-000001 ]] || crt_fail "$CKPT/fs/snap-000001 is still there: $(ls -la "$CKPT/fs/snap-000001")"
  local rc=0
  wait "$job" || rc=$?
  ((rc == 0)) || crt_fail "the job failed after the abandoned snapshot (status $rc): $(tail -5 "$T/fs.err")"
  expect_checksum fs "the job that ran on after the failed snapshot"
}

phase_periodic() {
  on_head per 180 "${RUN[@]}" --checkpoint-interval 2 --keep 2 -n 6 --hosts node1:2,node2:2,node3:2 --job per "$RING_HALO" "$ITER" "$SLEEP_US"
  crt_expect_rc per 0 "cr_mpirun --checkpoint-interval 2 --keep 2"
  expect_checksum per "the job checkpointed every 2 s"
  local snaps
  mapfile -t snaps < <(find "$CKPT/per" -maxdepth 2 -name manifest.json | sort)
  crt_check "--keep 2 left two committed snapshots (found ${#snaps[@]})"
  ((${#snaps[@]} == 2)) || crt_fail "expected 2 snapshots in $CKPT/per, found: ${snaps[*]}"
  on_head per_rs 180 "${RESTART[@]}" --job per_rs "$(dirname "${snaps[1]}")"
  crt_expect_rc per_rs 0 "cr_mpirestart of the newest periodic snapshot"
  expect_checksum per_rs "the job restarted from its newest periodic snapshot"
}

for ph in $PHASES; do
  crt_log "=== phase $ph"
  "phase_$ph"
done
crt_pass
