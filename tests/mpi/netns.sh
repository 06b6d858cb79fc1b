# netns.sh — network-namespace "nodes" for multi-node MPI tests on one machine (root only).
# Sourced bash library (shared/reference/machine.md §4). Usage:
#
#   source tests/mpi/netns.sh
#   trap nn_down EXIT              # nn_down is idempotent and removes only what nn_up made
#   nn_up 3                        # nodes node1..node3 plus "head", on one private bridge
#   nn_exec head mpiexec.mpich -f hosts -launcher ssh -launcher-exec "$NN_NSRSH" ... ./app
#   nn_exec node2 ss -ltn          # any command, argv passed through unchanged
#   nn_addr node2                  # -> 10.X.0.2 (head is 10.X.0.254)
#
# Functions:
#   nn_up COUNT        create namespaces ${NN_PREFIX}node1..COUNT and ${NN_PREFIX}head, each
#                      with lo up and a veth eth0 = 10.X.0.N/24 (head: .254) on a bridge that
#                      lives in its own namespace ${NN_PREFIX}hub (the root namespace gets no
#                      address or link). Every namespace gets /etc/netns/<ns>/hosts listing all
#                      nodes and head, which `ip netns exec` bind-mounts over /etc/hosts.
#                      Returns 1 (having cleaned up) on failure. One set of nodes per shell.
#   nn_down            kill what still runs inside our namespaces, delete them and their
#                      /etc/netns directories. Safe to call twice, or when nn_up failed half-way.
#                      Returns 1 if something could not be removed.
#   nn_exec HOST CMD…  run CMD in HOST's namespace, in a new UTS namespace whose hostname is
#                      HOST (so MPI sees distinct hosts). HOST is nodeN or head.
#   nn_addr HOST       print HOST's IPv4 address.
#   nn_ns HOST         print HOST's namespace name.
# Variables set by nn_up (exported: tests/mpi/nsrsh and child scripts use them):
#   CRKIT_NN_PREFIX    the namespace prefix of this run, e.g. ck12345-9f3a-
#   CRKIT_NN_NET       the first two octets, e.g. 10.213; CRKIT_NN_SUBNET e.g. 10.213.0.0/24
#   CRKIT_NN_HOSTS     "node1 node2 ... head";  NN_NSRSH: absolute path of tests/mpi/nsrsh
#
# Sharing the machine: the prefix is unique per run ($$ plus a random suffix, checked against
# existing namespaces), the subnet is picked from 10.200-250.0.0/24 avoiding every 10.X seen in
# any named namespace or in root's addresses and routes, and the choice is made under a flock
# held until our addresses exist, so concurrent runs never pick the same one. (Each run's bridge
# is private anyway; distinct subnets keep diagnostics and firewall rules unambiguous.)
# Traffic rule (machine.md): use only loopback and the addresses nn_up created.
# shellcheck shell=bash disable=SC2016

NN_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
NN_NSRSH=$NN_DIR/nsrsh
NN_LOCK=/run/lock/crkit-netns.lock
NN_ETC_MARK=/run/lock/crkit-netns.etc-created  # "a crkit run created /etc/netns"
NN_CREATED_NS=()                               # namespaces we made, in creation order
NN_CREATED_ETC=()                              # /etc/netns/<ns> directories we made

_nn_err() { echo "netns.sh: $*" >&2; }

# Run the rest of the arguments with the global lock held (fd closed afterwards).
_nn_locked() {
  local fd rc
  exec {fd}>"$NN_LOCK" || return 1
  flock -w 60 "$fd" || { _nn_err "cannot lock $NN_LOCK"; exec {fd}>&-; return 1; }
  "$@"; rc=$?
  exec {fd}>&-
  return $rc
}

# Second octets X of every 10.X.* address or route visible in any named namespace or in root.
_nn_used_octets() {
  { ip -all netns exec ip -br -4 addr 2>/dev/null; ip -br -4 addr; ip -4 route; } |
    grep -oE '(^|[^0-9.])10\.[0-9]{1,3}\.' | grep -oE '10\.[0-9]+' | cut -d. -f2 | sort -un
}

_nn_pick_net() {
  local used x i start=$((200 + RANDOM % 51))
  used=" $(_nn_used_octets | tr '\n' ' ') "
  for ((i = 0; i < 51; i++)); do
    x=$((200 + (start - 200 + i) % 51))
    [[ $used == *" $x "* ]] || { echo "10.$x"; return 0; }
  done
  _nn_err "no free subnet in 10.200-250.0.0/24"; return 1
}

_nn_add_ns() {
  ip netns add "$1" || return 1
  NN_CREATED_NS+=("$1")
  ip -n "$1" link set lo up
}

# Under the lock: choose the subnet, create everything that carries an address.
_nn_create() {
  local count=$1 i host ns hosts
  CRKIT_NN_NET=$(_nn_pick_net) || return 1
  CRKIT_NN_SUBNET=$CRKIT_NN_NET.0.0/24
  local hub=${CRKIT_NN_PREFIX}hub
  _nn_add_ns "$hub" || return 1
  ip -n "$hub" link add br0 type bridge && ip -n "$hub" link set br0 up || return 1
  for ((i = 1; i <= count + 1; i++)); do
    if ((i <= count)); then host=node$i; else host='head'; fi
    ns=$(nn_ns "$host")
    _nn_add_ns "$ns" || return 1
    # Created directly inside the two namespaces: the names never exist in root's namespace.
    ip link add "v$i" netns "$hub" type veth peer name eth0 netns "$ns" || return 1
    ip -n "$hub" link set "v$i" master br0 up &&
      ip -n "$ns" addr add "$(nn_addr "$host")/24" dev eth0 &&
      ip -n "$ns" link set eth0 up || return 1
  done
  if [[ ! -d /etc/netns ]]; then
    mkdir /etc/netns && : >"$NN_ETC_MARK" || return 1
  fi
  hosts=$(printf '127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n'
    for host in $CRKIT_NN_HOSTS; do echo "$(nn_addr "$host") $host"; done)
  for host in $CRKIT_NN_HOSTS; do
    ns=$(nn_ns "$host")
    mkdir "/etc/netns/$ns" || return 1
    NN_CREATED_ETC+=("/etc/netns/$ns")
    printf '%s\n' "$hosts" >"/etc/netns/$ns/hosts" || return 1
  done
}

nn_up() {
  local count=$1 i
  if [[ ! $count =~ ^[0-9]+$ ]] || ((count < 1 || count > 253)); then
    _nn_err "usage: nn_up COUNT (1..253)"; return 1
  fi
  if ((${#NN_CREATED_NS[@]})); then _nn_err "nodes are already up (nn_down first)"; return 1; fi
  # ≤ 15 characters ("ck" + pid ≤ 7 digits + "-" + 4 hex + "-"), unique on this machine.
  for ((i = 0; i < 10; i++)); do
    CRKIT_NN_PREFIX=ck$$-$(printf '%04x' $((RANDOM % 65536)))-
    ip netns list | grep -q "^$CRKIT_NN_PREFIX" || break
  done
  CRKIT_NN_HOSTS=$(for ((i = 1; i <= count; i++)); do printf 'node%d ' "$i"; done)head
  export CRKIT_NN_PREFIX CRKIT_NN_NET CRKIT_NN_SUBNET CRKIT_NN_HOSTS NN_NSRSH
  if ! _nn_locked _nn_create "$count"; then
    _nn_err "nn_up $count failed; cleaning up"
    nn_down; return 1
  fi
}

_nn_remove_etc_root() {
  # The last crkit run that leaves an empty /etc/netns behind removes it, if crkit made it.
  if [[ -e $NN_ETC_MARK ]] && rmdir /etc/netns 2>/dev/null; then rm -f "$NN_ETC_MARK"; fi
  return 0
}

nn_down() {
  local ns pids i d rc=0
  for ns in "${NN_CREATED_NS[@]}"; do
    # Processes still inside would keep the namespace alive after `ip netns del`.
    pids=$(ip netns pids "$ns" 2>/dev/null)
    # shellcheck disable=SC2086 # a list of pids
    [[ -n $pids ]] && kill -TERM $pids 2>/dev/null
  done
  for ((i = 0; i < 20; i++)); do
    pids=$(for ns in "${NN_CREATED_NS[@]}"; do ip netns pids "$ns" 2>/dev/null; done)
    [[ -z $pids ]] && break
    # shellcheck disable=SC2086
    ((i == 19)) && kill -KILL $pids 2>/dev/null
    sleep 0.1
  done
  for ((i = ${#NN_CREATED_NS[@]} - 1; i >= 0; i--)); do
    ns=${NN_CREATED_NS[i]}
    ip netns del "$ns" 2>/dev/null
    [[ -e /run/netns/$ns ]] && { _nn_err "cannot delete namespace $ns"; rc=1; }
  done
  for d in "${NN_CREATED_ETC[@]}"; do
    [[ $d == /etc/netns/"$CRKIT_NN_PREFIX"* ]] && rm -rf -- "$d"
    [[ -e $d ]] && { _nn_err "cannot remove $d"; rc=1; }
  done
  if ((${#NN_CREATED_NS[@]})); then _nn_locked _nn_remove_etc_root; fi
  NN_CREATED_NS=() NN_CREATED_ETC=()
  return $rc  # bash keeps a script's exit status across `trap nn_down EXIT` regardless
}

nn_ns() {
  case $1 in
    head | node[1-9] | node[1-9][0-9] | node[1-9][0-9][0-9])
      [[ -n ${CRKIT_NN_PREFIX:-} ]] || { _nn_err "nn_up first"; return 1; }
      echo "$CRKIT_NN_PREFIX$1" ;;
    *) _nn_err "unknown host '$1'"; return 1 ;;
  esac
}

nn_addr() {
  [[ -n ${CRKIT_NN_NET:-} ]] || { _nn_err "nn_up first"; return 1; }
  case $1 in
    head) echo "$CRKIT_NN_NET.0.254" ;;
    node[1-9] | node[1-9][0-9] | node[1-9][0-9][0-9]) echo "$CRKIT_NN_NET.0.${1#node}" ;;
    *) _nn_err "unknown host '$1'"; return 1 ;;
  esac
}

nn_exec() {
  local host=$1 ns
  ns=$(nn_ns "$host") || return 1
  shift
  # argv goes through "$@" untouched; only HOST is a separate positional parameter.
  ip netns exec "$ns" unshare --uts -- /bin/sh -c 'hostname "$1" && shift && exec "$@"' nn_exec "$host" "$@"
}
