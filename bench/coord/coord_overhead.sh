#!/usr/bin/env bash
# coord_overhead.sh - coordination overhead of crkit's global MPI snapshots (DESIGN.md
# decision 8): how long it takes from a snapshot request until every rank is quiesced
# (MPICH's libcr callback drained its channels and cr_checkpoint may freeze), next to the
# time spent writing images, for jobs of 2..12 ranks.
#
#   sudo bench/coord/coord_overhead.sh [--build-dir DIR]
#
# For every rank count N (CRKIT_BENCH_RANKS, default "2 4 6 8 10 12", even numbers): N/2
# network-namespace nodes with 2 ranks each (tests/mpi/netns.sh), cr_mpirun on the "head"
# namespace runs examples/ring_halo (ITERATIONS SLEEP_US: messages in flight most of the
# time); once rank 0 reports progress, CRKIT_BENCH_ROUNDS (default 5) snapshots are taken one
# after another with `cr_snapshot --json`, CRKIT_BENCH_PAUSE seconds apart. Recorded per
# snapshot: the coordinator's quiesce_ms (max over nodes of cr_checkpoint start -> first
# freeze: the time the ranks spend in libcr callbacks, i.e. MPICH's marker wave, before
# anything is frozen), dump_ms (max over nodes of the rest of cr_checkpoint: freeze, capture,
# write, fsync), total_ms (request -> committed manifest), the client's wall time of
# cr_snapshot and the image sizes from the manifest. Then the job is stopped (SIGTERM to
# cr_mpirun) and its checkpoint directory removed (snapshots use --keep 1).
# bench/coord/analyze.py prints the table and writes bench/results/coord.{json,md}.
#
# Environment:
#   CRKIT_BENCH_RANKS     rank counts (default "2 4 6 8 10 12")
#   CRKIT_BENCH_ROUNDS    snapshots per rank count (default 5)
#   CRKIT_BENCH_PAUSE     seconds between two snapshots (default 1)
#   CRKIT_BENCH_ITER      ring_halo iterations (default 40000/N: on 2 cores an iteration of
#                         12 oversubscribed ranks is ~20x slower than of 2). The snapshots
#                         begin after rank 0's first progress line (10% done), so the job runs
#                         about 9x that long after it; the script fails if it ends early
#   CRKIT_BENCH_SLEEP_US  ring_halo's sleep per iteration in us (default 1000)
#   CRKIT_BENCH_DIR       parent of the scratch directory (default /var/tmp)
#   CRKIT_BENCH_OUT       result files prefix (default bench/results/coord)
#   CRKIT_BINDIR          cr_mpirun & co (default BUILD/bin)
#   MPICH                 the checkpoint-enabled MPICH prefix (default: the cached build,
#                         mpi_glue/build-mpich.sh --print-prefix)
#   RING_HALO             the example (default BUILD/examples/ring_halo)
# BUILD is --build-dir (default ./build of the crkit tree), a build with
# -DCRKIT_MPI_TESTS=ON (Release for meaningful numbers).
# Needs root (network namespaces). Exit status 0, 1 on failure, 2 on bad usage.
set -u -o pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
BUILD=$REPO/build
while (($#)); do
  case $1 in
    --build-dir) BUILD=${2:?--build-dir needs a directory}; shift 2 ;;
    --build-dir=*) BUILD=${1#*=}; shift ;;
    -h | --help) sed -n '2,/^set -u/{/^set -u/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) echo "coord_overhead.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
BUILD=$(cd "$BUILD" 2>/dev/null && pwd) || { echo "coord_overhead.sh: no build directory $BUILD" >&2; exit 2; }

log() { printf '[coord %4ds] %s\n' "$SECONDS" "$*" >&2; }
die() { printf '[coord] FAIL: %s\n' "$*" >&2; exit 1; }

[[ $(id -u) -eq 0 ]] || die "needs root (network namespaces)"
RANKS=${CRKIT_BENCH_RANKS:-2 4 6 8 10 12}
ROUNDS=${CRKIT_BENCH_ROUNDS:-5}
PAUSE=${CRKIT_BENCH_PAUSE:-1}
ITER=${CRKIT_BENCH_ITER:-auto}
SLEEP_US=${CRKIT_BENCH_SLEEP_US:-1000}
OUT=${CRKIT_BENCH_OUT:-$REPO/bench/results/coord}
CRKIT_BINDIR=${CRKIT_BINDIR:-$BUILD/bin}
RING_HALO=${RING_HALO:-$BUILD/examples/ring_halo}
if [[ -z ${MPICH:-} ]]; then
  MPICH=$(bash "$REPO/mpi_glue/build-mpich.sh" --build-dir "$BUILD" --print-prefix | tail -1) ||
    die "no checkpoint-enabled MPICH (mpi_glue/build-mpich.sh --print-prefix failed)"
fi
maxn=0
for n in $RANKS; do
  if [[ ! $n =~ ^[0-9]+$ ]] || ((n < 2 || n % 2)); then
    die "CRKIT_BENCH_RANKS: '$n' is not an even number >= 2"
  fi
  ((n > maxn)) && maxn=$n
done
[[ $ITER == auto || $ITER =~ ^[1-9][0-9]*$ ]] || die "CRKIT_BENCH_ITER: '$ITER' is not a positive number"
[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || die "CRKIT_BENCH_ROUNDS: '$ROUNDS' is not a positive number"
for t in cr_mpirun cr_snapshot cr_coordd cr_agent; do
  [[ -x $CRKIT_BINDIR/$t ]] || die "no $CRKIT_BINDIR/$t (build with -DCRKIT_MPI_TESTS=ON, or set CRKIT_BINDIR)"
done
[[ -x $RING_HALO ]] || die "no ring_halo at $RING_HALO (set RING_HALO)"
[[ -e $MPICH/lib/libmpich.so.12 ]] || die "MPICH=$MPICH has no lib/libmpich.so.12"
LIBCR_DIR=$(cd "$CRKIT_BINDIR/../lib" && pwd) || die "no lib directory next to $CRKIT_BINDIR"
export LD_LIBRARY_PATH="$MPICH/lib:$LIBCR_DIR"
export PATH="$CRKIT_BINDIR:$PATH"

# shellcheck source-path=SCRIPTDIR source=../../tests/mpi/netns.sh
source "$REPO/tests/mpi/netns.sh"
W=$(mktemp -d "${CRKIT_BENCH_DIR:-/var/tmp}/crkit-coord.XXXXXX") || die "cannot create a scratch directory"
S=$W/samples
mkdir -p "$S"
JOB_PID=""
cleanup() {
  if [[ -n $JOB_PID ]] && kill -0 "$JOB_PID" 2>/dev/null; then
    kill -TERM "$JOB_PID" 2>/dev/null
    wait "$JOB_PID" 2>/dev/null
  fi
  nn_down >/dev/null 2>&1
  rm -rf -- "$W"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

nodes_max=$((maxn / 2))
nn_up "$nodes_max" || die "could not create $nodes_max namespace nodes"
log "nodes node1..node$nodes_max and head on $CRKIT_NN_SUBNET; scratch $W"

# on_head CMD...: CMD on the head node, in the foreground.
on_head() { ip netns exec "$(nn_ns head)" unshare --uts sh -c 'hostname head; exec "$@"' sh "$@"; }
now_ns() { date +%s%N; }

# Processes still inside our node namespaces (the ranks and agents of an ended job).
node_pids() {
  local i
  for ((i = 1; i <= nodes_max; i++)); do ip netns pids "$(nn_ns "node$i")" 2>/dev/null; done
}

run_ranks() {
  local n=$1 nodes=$(($1 / 2)) hosts="" i r job label ckpt iter=$ITER t_start
  [[ $iter == auto ]] && iter=$((40000 / n))
  for ((i = 1; i <= nodes; i++)); do hosts+="${hosts:+,}node$i:2"; done
  job=coordbench-$$-$n
  label=$W/job-$n
  ckpt=$W/ckpt-$n
  mkdir -p "$ckpt"
  log "N=$n: $nodes nodes ($hosts), ring_halo $iter $SLEEP_US, $ROUNDS snapshots"
  t_start=$(now_ns)
  ip netns exec "$(nn_ns head)" unshare --uts sh -c 'hostname head; exec "$@"' sh \
    cr_mpirun -v -n "$n" --hosts "$hosts" --launcher "$NN_NSRSH" --checkpoint-dir "$ckpt" \
    --keep 1 --job "$job" "$RING_HALO" "$iter" "$SLEEP_US" </dev/null >"$label.out" 2>"$label.err" &
  JOB_PID=$!
  # Ready when rank 0 reported its first tenth of the iterations (MPI_Init is long done).
  for ((i = 0; i < 3000; ++i)); do
    grep -q '^iteration' "$label.err" 2>/dev/null && break
    kill -0 "$JOB_PID" 2>/dev/null || die "N=$n: the job ended before it made progress: $(tail -5 "$label.err")"
    sleep 0.1
  done
  ((i < 3000)) || die "N=$n: no progress within 300 s: $(tail -5 "$label.err")"
  # iterations, ns from cr_mpirun's start to 10% done, load average (1, 5, 15 min)
  echo "$iter $(($(now_ns) - t_start)) $(cut -d' ' -f1-3 /proc/loadavg)" >"$S/n$n.job"
  log "N=$n: running ($(grep -m1 '^iteration' "$label.err"))"
  for ((r = 1; r <= ROUNDS; ++r)); do
    local f=$S/n$n-r$r t0 t1 rc=0 man
    t0=$(now_ns)
    on_head cr_snapshot --json "$job" >"$f.reply.json" 2>"$f.err" || rc=$?
    t1=$(now_ns)
    echo "$(((t1 - t0) / 1000)) $rc" >"$f.wall"  # microseconds, exit status
    if ((rc != 0)); then
      log "N=$n round $r: cr_snapshot failed ($rc): $(tail -1 "$f.err")"
    else
      # The manifest now: --keep 1 prunes this snapshot when the next one commits.
      if ! man=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["manifest"])' \
        "$f.reply.json") || ! cp -- "$man" "$f.manifest.json"; then
        log "N=$n round $r: no manifest to read"
      fi
      log "N=$n round $r: $(tr -d '\n' <"$f.reply.json" | head -c 300)"
    fi
    kill -0 "$JOB_PID" 2>/dev/null || die "N=$n: the job ended during the snapshots: $(tail -5 "$label.err")"
    ((r < ROUNDS)) && sleep "$PAUSE"
  done
  grep -q 'checksum=' "$label.out" &&
    die "N=$n: the job finished before the last snapshot (raise CRKIT_BENCH_ITER)"
  log "N=$n: stopping the job (last progress: $(grep '^iteration' "$label.err" | tail -1))"
  kill -TERM "$JOB_PID" 2>/dev/null
  wait "$JOB_PID" 2>/dev/null
  JOB_PID=""
  for ((i = 0; i < 100; ++i)); do
    [[ -z $(node_pids) ]] && break
    sleep 0.1
  done
  if [[ -n $(node_pids) ]]; then
    log "N=$n: processes left on the nodes after cr_mpirun ended; killing them"
    # shellcheck disable=SC2046 # a list of pids, all inside our own namespaces
    kill -KILL $(node_pids) 2>/dev/null
  fi
  rm -rf -- "$ckpt"
}

for n in $RANKS; do run_ranks "$n"; done

python3 "$HERE/analyze.py" --samples "$S" --out "$OUT" --repo "$REPO" \
  --ranks "$RANKS" --rounds "$ROUNDS" --iterations "$ITER" --sleep-us "$SLEEP_US" \
  --pause "$PAUSE" --bindir "$CRKIT_BINDIR" --mpich "$MPICH" ||
  die "analyze.py failed"
