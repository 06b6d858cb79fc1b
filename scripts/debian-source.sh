# shellcheck shell=bash
# debian-source.sh - fetch a Debian bookworm source package with `apt-get source`, once.
# Sourced, not run:
#
#   . scripts/debian-source.sh
#   debian_source_fetch CACHE PACKAGE DIRNAME || exit 1
#   # -> the unpacked source is in "$DEBIAN_SOURCE_DIR" (= CACHE/src/DIRNAME)
#
# CACHE is a writable directory; DIRNAME is the directory dpkg-source unpacks to (for example
# mpich-4.0.2). The first call runs `apt-get update` on a private sources list holding one
# deb-src entry for bookworm, then `apt-get source PACKAGE`, and marks the result with
# DIRNAME/.crkit-unpacked; later calls find the marker and only set DEBIAN_SOURCE_DIR. The
# sources list, package lists and download cache live in CACHE/apt, so the system's apt
# configuration and lists are never touched (nothing to add and remove again). The unpacked
# tree is published by a rename, and CACHE/src.lock serialises concurrent fetches, so a
# reader never sees half a source tree. Treat the tree as read-only: it is shared by every
# caller that uses the same CACHE (build out of tree, or copy it before patching).
#
# The archive is the one the system's apt sources use for Debian bookworm (else any Debian
# archive); CRKIT_DEBIAN_MIRROR=URI overrides it. Messages go to stdout (progress) and
# stderr (errors), prefixed with "$DEBIAN_SOURCE_WHO: " (default: the calling script's
# name). Returns 0 on success, 1 with a message on stderr on failure; it never exits.

# _debian_source_who: the prefix of this helper's messages.
_debian_source_who() {
  local who=${DEBIAN_SOURCE_WHO:-$(basename -- "$0")}
  printf '%s' "${who%.sh}"
}

_debian_source_log() { echo "$(_debian_source_who): $*"; }
_debian_source_err() { echo "$(_debian_source_who): $*" >&2; }

# _debian_source_as_root CMD...: run CMD as root (directly, or through sudo).
_debian_source_as_root() {
  if [[ $(id -u) -eq 0 ]]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1; then
    sudo "$@"
  else
    _debian_source_err "not root and no sudo: run as root: $*"
    return 1
  fi
}

# debian_archive: print "URI<TAB>KEYRING" of the system's apt source for Debian bookworm (else
# of any Debian archive): deb822 *.sources files and one-line *.list files. KEYRING may be empty.
debian_archive() {
  local f files=()
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
    [[ -f $f ]] && files+=("$f")
  done
  [[ ${#files[@]} -gt 0 ]] || return 1
  awk '
    function has(list, word) { return (" " list " ") ~ (" " word " ") }
    function consider(uri, suites, key) {
      if (uri == "") return
      if (bookworm == "" && has(suites, "bookworm")) bookworm = uri "\t" key
      if (anydeb == "" && uri ~ /\/debian\/?$/) anydeb = uri "\t" key
    }
    function flush() {
      if (has(types, "deb") && tolower(enabled) != "no") { split(uris, u, " "); consider(u[1], suites, signed) }
      types = uris = suites = signed = enabled = ""
    }
    FNR == 1 { flush() }
    /^[ \t]*#/ { next }
    FILENAME ~ /\.sources$/ {
      if ($0 ~ /^[ \t]*$/) { flush(); next }
      key = tolower($1); $1 = ""; sub(/^ +/, "")
      if (key == "types:") types = $0
      else if (key == "uris:") uris = $0
      else if (key == "suites:") suites = $0
      else if (key == "signed-by:") signed = $0
      else if (key == "enabled:") enabled = $0
      next
    }
    $1 == "deb" {
      i = 2; key = ""
      if ($2 ~ /^\[/) {
        for (; i <= NF; i++) {
          if ($i ~ /^\[?signed-by=/) { key = $i; sub(/^\[?signed-by=/, "", key); sub(/\]$/, "", key) }
          if ($i ~ /\]$/) { i++; break }
        }
      }
      consider($i, $(i + 1), key)
    }
    END { flush(); if (bookworm != "") print bookworm; else if (anydeb != "") print anydeb; else exit 1 }
  ' "${files[@]}"
}

# debian_source_fetch CACHE PACKAGE DIRNAME: see the header. Sets DEBIAN_SOURCE_DIR.
debian_source_fetch() {
  if [[ $# -ne 3 ]]; then
    _debian_source_err "debian_source_fetch: 3 arguments expected (CACHE PACKAGE DIRNAME), got $#"
    return 1
  fi
  local cache=$1 package=$2 dirname=$3
  local src=$cache/src/$dirname
  # shellcheck disable=SC2034 # the result, read by the caller
  DEBIAN_SOURCE_DIR=$src
  if [[ -f $src/.crkit-unpacked ]]; then
    _debian_source_log "using the cached $package source in $src"
    return 0
  fi
  mkdir -p "$cache" 2>/dev/null || {
    _debian_source_err "cannot create the cache directory $cache (set CRKIT_CACHE_DIR to a writable directory)"
    return 1
  }
  local lockfd rc=0
  exec {lockfd}>"$cache/src.lock" || {
    _debian_source_err "cannot open the lock file $cache/src.lock"
    return 1
  }
  flock "$lockfd" || {
    _debian_source_err "cannot lock $cache/src.lock"
    exec {lockfd}>&-
    return 1
  }
  if [[ -f $src/.crkit-unpacked ]]; then # another run fetched it while we waited
    _debian_source_log "using the cached $package source in $src"
  else
    _debian_source_fetch_locked "$cache" "$package" "$dirname" || rc=1
  fi
  exec {lockfd}>&-
  return "$rc"
}

# _debian_source_fetch_locked CACHE PACKAGE DIRNAME: the fetch itself, under CACHE/src.lock.
_debian_source_fetch_locked() {
  local cache=$1 package=$2 dirname=$3
  local uri keyring line opts="" apt=$1/apt
  if ! command -v dpkg-source >/dev/null 2>&1; then
    _debian_source_log "installing dpkg-dev (apt-get source unpacks with dpkg-source)"
    _debian_source_as_root env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 \
      install -y --no-install-recommends dpkg-dev || {
      _debian_source_err "cannot install dpkg-dev (apt-get install failed, see above)"
      return 1
    }
  fi
  if [[ -n ${CRKIT_DEBIAN_MIRROR:-} ]]; then
    uri=$CRKIT_DEBIAN_MIRROR
    keyring=""
  else
    line=$(debian_archive) || {
      _debian_source_err "no Debian archive in the apt sources (/etc/apt/sources.list*); set CRKIT_DEBIAN_MIRROR=URI"
      return 1
    }
    uri=${line%%$'\t'*}
    keyring=${line#*$'\t'}
  fi
  [[ -z $keyring && -f /usr/share/keyrings/debian-archive-keyring.gpg ]] &&
    keyring=/usr/share/keyrings/debian-archive-keyring.gpg
  mkdir -p "$apt/sources.list.d" "$apt/lists/partial" "$apt/cache/archives/partial" || {
    _debian_source_err "cannot create the private apt directories under $apt"
    return 1
  }
  [[ -n $keyring ]] && opts="[signed-by=$keyring] "
  printf 'deb-src %s%s bookworm main\n' "$opts" "$uri" >"$apt/sources.list"
  _debian_source_log "source package index: $(cat "$apt/sources.list")"
  # Private sources, lists and cache: neither the system's sources nor its package lists change.
  local apt_private=(apt-get -o Dir::Etc::SourceList="$apt/sources.list"
    -o Dir::Etc::SourceParts="$apt/sources.list.d" -o Dir::State::Lists="$apt/lists"
    -o Dir::Cache="$apt/cache" -o APT::Get::List-Cleanup=false)
  "${apt_private[@]}" update || {
    _debian_source_err "apt-get update of the bookworm source index failed ($uri)"
    return 1
  }
  rm -rf "$cache/src.new"
  mkdir -p "$cache/src.new"
  # As root, apt downloads as the user _apt, which must be able to write there.
  if [[ $(id -u) -eq 0 ]] && id _apt >/dev/null 2>&1; then
    chown _apt "$cache/src.new"
  fi
  (cd "$cache/src.new" && "${apt_private[@]}" source "$package") || {
    _debian_source_err "apt-get source $package failed (see above)"
    return 1
  }
  if [[ ! -d $cache/src.new/$dirname ]]; then
    local got=("$cache/src.new"/*)
    _debian_source_err "apt-get source $package did not unpack $dirname (got: ${got[*]##*/})"
    return 1
  fi
  touch "$cache/src.new/$dirname/.crkit-unpacked"
  # Publish: move every file apt left (the .dsc, tarballs and the unpacked tree) into src/,
  # replacing older copies; other packages' sources in src/ stay.
  mkdir -p "$cache/src"
  local entry
  for entry in "$cache/src.new"/*; do
    rm -rf "$cache/src/${entry##*/}"
    mv "$entry" "$cache/src/" || {
      _debian_source_err "cannot move $entry into $cache/src"
      return 1
    }
  done
  rmdir "$cache/src.new"
  _debian_source_log "$package source unpacked in $cache/src/$dirname"
}
