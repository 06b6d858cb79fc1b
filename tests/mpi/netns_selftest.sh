#!/bin/bash
# netns_selftest.sh — checks tests/mpi/netns.sh and tests/mpi/nsrsh (root; about 2 s).
#   tests/mpi/netns_selftest.sh        → prints "PASS" and exits 0, or "FAIL: ..." and exits 1
# Brings up 3 nodes and checks: distinct hostnames; name resolution through the per-namespace
# hosts file; TCP node1 → node2 and head → node3 over the bridge; a loopback listener on one
# node is invisible from the others; nsrsh's ssh-style calls; and that nn_down leaves the
# machine as it found it (namespaces, /etc/netns, processes). Traffic stays on loopback and
# on the subnet nn_up created.
# shellcheck disable=SC2016
set -u
# shellcheck source=tests/mpi/netns.sh
source "$(dirname "$0")/netns.sh"

work=$(mktemp -d /tmp/netns_selftest.XXXXXX)
trap 'nn_down; rm -rf "$work"' EXIT
trap 'exit 130' INT TERM
fail() { echo "FAIL: $*" >&2; exit 1; }
ok() { echo "ok: $*"; }

# A TCP server that answers every connection with its hostname; touches READY once listening.
listen_py='
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(8)
open(sys.argv[3], "w").close()
while True:
    c, _ = s.accept(); c.sendall(("hello from %s\n" % socket.gethostname()).encode()); c.close()
'
# listen HOST BIND_ADDR PORT → starts a server in HOST's node, waits until it listens.
listen() {
  local ready=$work/ready.$1.$3
  # The background subshell reports "Terminated" when nn_down kills the server: keep that,
  # and any python error, in a log shown only on failure.
  nn_exec "$1" /usr/bin/python3 -c "$listen_py" "$2" "$3" "$ready" 2>>"$work/listen.log" &
  for ((t = 0; t < 100; t++)); do [[ -e $ready ]] && return 0; sleep 0.05; done
  cat "$work/listen.log" >&2
  fail "listener on $1 $2:$3 did not start"
}
# connect FROM ADDR PORT → prints the server's greeting; fails if nothing answers within 5 s.
connect() {
  nn_exec "$1" timeout 5 bash -c 'exec 3<>"/dev/tcp/$1/$2" && head -n1 <&3' connect "$2" "$3" 2>/dev/null
}

before_ns=$(ip netns list | awk '{print $1}')
root_host=$(hostname)

nn_up 3 || fail "nn_up 3"
ok "nn_up 3: prefix=$CRKIT_NN_PREFIX subnet=$CRKIT_NN_SUBNET hosts=($CRKIT_NN_HOSTS)"
[[ ${#CRKIT_NN_PREFIX} -le 15 ]] || fail "prefix $CRKIT_NN_PREFIX is longer than 15 characters"
for h in node1 node2 node3 head; do [[ -e /run/netns/$(nn_ns $h) ]] || fail "no namespace for $h"; done

# Hostnames: each node is its own host, and the root namespace's hostname is untouched.
names=$(for h in node1 node2 node3 head; do nn_exec "$h" hostname; done | sort -u | tr '\n' ' ')
[[ $names == "head node1 node2 node3 " ]] || fail "hostnames: '$names'"
[[ $(hostname) == "$root_host" ]] || fail "root hostname changed to $(hostname)"
ok "hostnames: $names(root still $root_host)"

# Addresses and name resolution.
[[ $(nn_addr node2) == "$CRKIT_NN_NET.0.2" && $(nn_addr head) == "$CRKIT_NN_NET.0.254" ]] || fail "nn_addr"
got=$(nn_exec node1 getent hosts node2 | awk '{print $1}')
[[ $got == "$(nn_addr node2)" ]] || fail "node1 resolves node2 to '$got'"
got=$(nn_exec node3 getent hosts head | awk '{print $1}')
[[ $got == "$(nn_addr head)" ]] || fail "node3 resolves head to '$got'"
ip -br -4 addr | grep -q "$CRKIT_NN_NET\." && fail "root namespace has an address in $CRKIT_NN_SUBNET"
ok "name resolution through /etc/netns hosts files; root namespace untouched"

# argv is passed through nn_exec unchanged (no re-splitting, no globbing).
got=$(nn_exec node1 printf '<%s>' 'a b' '*' '$HOME' '')
[[ $got == '<a b><*><$HOME><>' ]] || fail "nn_exec argv: $got"
ok "nn_exec passes argv through"

# TCP across the bridge, by name.
listen node2 0.0.0.0 7101
listen node3 0.0.0.0 7101
got=$(connect node1 node2 7101) || fail "node1 cannot reach node2:7101"
[[ $got == "hello from node2" ]] || fail "node1 → node2 got '$got'"
got=$(connect head "$(nn_addr node3)" 7101) || fail "head cannot reach node3:7101"
[[ $got == "hello from node3" ]] || fail "head → node3 got '$got'"
ok "TCP node1 → node2 and head → node3"

# Loopback is private to each node.
listen node1 127.0.0.1 7102
got=$(connect node1 127.0.0.1 7102) || fail "node1 cannot reach its own loopback listener"
[[ $got == "hello from node1" ]] || fail "node1 loopback got '$got'"
for h in node2 head; do
  connect "$h" 127.0.0.1 7102 >/dev/null && fail "$h sees node1's loopback listener"
done
connect node2 node1 7102 >/dev/null && fail "node2 reaches node1's loopback-only listener via eth0"
ok "loopback listeners are invisible from other nodes"

# nsrsh, as MPI launchers call it: ssh options, joined command words parsed by the remote sh.
got=$("$NN_NSRSH" -x -q -o StrictHostKeyChecking=no -p 22 -oBatchMode=yes root@node3 echo '$(hostname)' on '"$CRKIT_NN_PREFIX"')
[[ $got == "node3 on $CRKIT_NN_PREFIX" ]] || fail "nsrsh: '$got'"
got=$("$NN_NSRSH" -n node2 'read x || echo eof')
[[ $got == eof ]] || fail "nsrsh -n: '$got'"
"$NN_NSRSH" node2 'exit 7'; [[ $? == 7 ]] || fail "nsrsh exit status"
"$NN_NSRSH" node9 true 2>/dev/null; [[ $? == 255 ]] || fail "nsrsh to an unknown node should exit 255"
got=$("$NN_NSRSH" node1 "bash -c 'exec 3<>/dev/tcp/node2/7101 && head -n1 <&3'")
[[ $got == "hello from node2" ]] || fail "nsrsh node1 → node2: '$got'"
ok "nsrsh"

# Teardown: everything gone, including the still-running listeners.
prefix=$CRKIT_NN_PREFIX
nn_down || fail "nn_down"
ip netns list | grep -q "^$prefix" && fail "namespaces left: $(ip netns list | grep "^$prefix")"
# (Other runs may add or remove their own namespaces meanwhile: only ours are checked.)
for ns in $before_ns; do [[ -e /run/netns/$ns ]] || echo "note: namespace $ns (not ours) has gone"; done
compgen -G "/etc/netns/$prefix*" >/dev/null && fail "/etc/netns entries left"
if [[ -e $NN_ETC_MARK && -d /etc/netns && -z $(ls -A /etc/netns) ]] && ! compgen -G '/run/netns/ck*' >/dev/null; then
  fail "empty /etc/netns (made by crkit) left behind"
fi
pgrep -f "$work/ready" >/dev/null && fail "a listener still runs: $(pgrep -af "$work/ready")"
nn_down || fail "second nn_down"
ok "nn_down removed everything it created"
echo PASS
