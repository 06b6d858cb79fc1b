#!/usr/bin/env bash
# demo.sh - checkpoint, kill and restart a running job, step by step.
#
# Starts examples/counter (it appends 1, 2, 3, ... to a file), checkpoints it with --kill,
# shows the image with cr_info, restarts it with cr_restart and shows that the output
# continues exactly where it stopped: no gap, no repeat. Then the same for a process tree:
# a shell pipeline producer | filter | consumer, checkpointed with the data in its pipes.
#
# Usage: scripts/demo.sh   (after building; BUILD_DIR defaults to build. CR_CHECKPOINT,
#                           CR_RESTART, CR_INFO and EXAMPLES override where things are.)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
BUILD_DIR=${BUILD_DIR:-build}

find_built() { # NAME: the built executable NAME under $BUILD_DIR
  local p
  for p in "$BUILD_DIR/bin/$1" "$BUILD_DIR/node/tools/$1" "$BUILD_DIR/examples/$1"; do
    [[ -x $p ]] && { echo "$(cd "$(dirname "$p")" && pwd)/$1"; return 0; }
  done
  p=$(find "$BUILD_DIR" -type f -name "$1" -perm -u+x 2>/dev/null | head -n1)
  [[ -n $p ]] && { echo "$(cd "$(dirname "$p")" && pwd)/$1"; return 0; }
  echo "demo: $1 not found under $BUILD_DIR - build first (scripts/setup.sh)" >&2
  return 1
}

CR_CHECKPOINT=${CR_CHECKPOINT:-$(find_built cr_checkpoint)}
CR_RESTART=${CR_RESTART:-$(find_built cr_restart)}
CR_INFO=${CR_INFO:-$(find_built cr_info)}
example() { # NAME: an example program
  if [[ -n ${EXAMPLES:-} ]]; then echo "$EXAMPLES/$1"; else find_built "$1"; fi
}
COUNTER=$(example counter)
PRODUCER=$(example producer)
FILTER=$(example filter)
CONSUMER=$(example consumer)

COUNT=30
INTERVAL_MS=200
D=$(mktemp -d "${TMPDIR:-/tmp}/crkit-demo.XXXXXX")
pid=""
cleanup() {
  [[ -n $pid ]] && kill -KILL "$pid" 2>/dev/null
  # The pipeline's stages, should the demo stop half-way.
  pkill -KILL -f "$D/" 2>/dev/null || true
  rm -rf "$D"
}
trap cleanup EXIT
cd "$D"

if [[ -t 1 ]]; then B=$'\033[1m' N=$'\033[0m'; else B="" N=""; fi
step() { printf '\n%s== %s%s\n' "$B" "$*" "$N"; }
show() { printf '   $ %s\n' "$*"; }
oneline() { tr '\n' ' ' <"$1"; }
die() { printf '\ndemo FAILED: %s\n' "$*" >&2; exit 1; }

step "1. start a job: counter writes 1..$COUNT to out.txt, one number every $INTERVAL_MS ms"
show "counter out.txt $COUNT $INTERVAL_MS &"
CRKIT_READY="$D/ready" "$COUNTER" "$D/out.txt" "$COUNT" "$INTERVAL_MS" </dev/null >"$D/counter.log" 2>&1 &
pid=$!
for _ in $(seq 100); do [[ $(wc -l <"$D/out.txt" 2>/dev/null || echo 0) -ge 6 ]] && break; sleep 0.1; done
echo "   running as pid $pid; out.txt so far: $(oneline "$D/out.txt")"

step "2. checkpoint it into job.img and kill it (cr_checkpoint --kill)"
show "cr_checkpoint --kill -f job.img $pid"
# (the outer 2>/dev/null only hides bash's "Killed" notice about the job)
rc=0
{ "$CR_CHECKPOINT" --kill -f "$D/job.img" "$pid" 2>"$D/checkpoint.err"; } 2>/dev/null || rc=$?
sed 's/^/   /' "$D/checkpoint.err"
[[ $rc -eq 0 ]] || die "cr_checkpoint exited with status $rc"
{ wait "$pid"; } 2>/dev/null || true
pid_done=$pid
pid=""
kill -0 "$pid_done" 2>/dev/null && die "process $pid_done still runs"
at=$(wc -l <"$D/out.txt")
stat -c '   job.img: %s bytes, mode %a (%A), owner %U' "$D/job.img"
echo "   process $pid_done is gone; out.txt stops at $at: $(oneline "$D/out.txt")"
sleep 1
echo "   one second later out.txt still stops at $(wc -l <"$D/out.txt") (nothing runs)"

step "3. look inside the image (cr_info)"
show "cr_info job.img"
"$CR_INFO" "$D/job.img" >"$D/info.txt" # not piped into head: that would end cr_info with SIGPIPE
head -n 24 "$D/info.txt" | sed 's/^/   /'
echo "   ... (cr_info --json job.img gives the same as JSON)"

step "4. restart it (cr_restart waits for the job and exits with its status)"
show "cr_restart job.img"
rc=0
"$CR_RESTART" "$D/job.img" </dev/null || rc=$?
echo "   cr_restart exited with status $rc"
[[ $rc -eq 0 ]] || die "cr_restart exited with status $rc"

step "5. the output continued where it stopped"
before=$(head -n "$at" "$D/out.txt" | tr '\n' ' ')
after=$(tail -n +"$((at + 1))" "$D/out.txt" | tr '\n' ' ')
echo "   before the checkpoint: $before"
echo "   after the restart:     $after"
if seq 1 "$COUNT" | cmp -s - "$D/out.txt"; then
  echo "   out.txt is exactly 1..$COUNT: no gap, no repeat."
else
  die "out.txt is not 1..$COUNT: $(oneline "$D/out.txt")"
fi

LINES=100
step "6. a process tree: sh -c 'producer $LINES | filter | consumer squares.txt' (4 processes)"
show "sh -c 'producer $LINES 10000 | filter 20000 | consumer squares.txt 40000 5' &"
CRKIT_READY="$D/ready2" sh -c "$(printf '%q %d 10000 | %q 20000 | %q %q 40000 5' "$PRODUCER" "$LINES" \
  "$FILTER" "$CONSUMER" "$D/squares.txt")" </dev/null >"$D/pipeline.log" 2>&1 &
pid=$!
for _ in $(seq 100); do [[ -s $D/ready2 ]] && break; sleep 0.1; done
sleep 0.5 # the producer is fastest, the consumer slowest: both pipes fill up
echo "   sh is pid $pid; squares.txt so far: $(wc -l <"$D/squares.txt") lines"
show "cr_checkpoint --kill -f tree.img $pid"
rc=0
{ "$CR_CHECKPOINT" --kill -f "$D/tree.img" "$pid" 2>"$D/checkpoint2.err"; } 2>/dev/null || rc=$?
sed 's/^/   /' "$D/checkpoint2.err"
[[ $rc -eq 0 ]] || die "cr_checkpoint of the pipeline exited with status $rc"
{ wait "$pid"; } 2>/dev/null || true
pid=""
at=$(wc -l <"$D/squares.txt")
"$CR_INFO" "$D/tree.img" >"$D/info2.txt"
echo "   the image holds $(grep -c '^Process ' "$D/info2.txt") processes:"
grep '^Process ' "$D/info2.txt" | sed 's/^/     /'
echo "   and the data that was in flight in the pipes:"
grep ' pipe ' "$D/info2.txt" | grep -v ' 0 B buffered' | sed 's/^ */     /'
show "cr_restart tree.img"
rc=0
"$CR_RESTART" "$D/tree.img" </dev/null || rc=$?
echo "   cr_restart exited with status $rc (the status of sh)"
[[ $rc -eq 0 ]] || die "cr_restart of the pipeline exited with status $rc"
want=$(for ((x = 1; x <= LINES; x++)); do echo "$x $((x * x))"; done; echo "done $LINES $((LINES * (LINES + 1) / 2))")
[[ $(cat "$D/squares.txt") == "$want" ]] || die "squares.txt is not the squares of 1..$LINES"
echo "   squares.txt had $at lines at the checkpoint; now all $LINES squares and '$(tail -n1 "$D/squares.txt")':"
echo "   nothing in the pipes was lost or repeated. Demo OK."

