#!/usr/bin/env bash
# Copies the built plugin to where GStreamer finds it, or removes it again. `make install`
# and `make uninstall` call this; tests run it directly (they cannot call cargo).
#
#   scripts/install-plugin.sh install [LIBRARY]   # default target/release/libgstquicnalu.so
#   scripts/install-plugin.sh uninstall
#
# Where, from the environment:
#   PREFIX unset or empty: the user's plugin folder, which GStreamer always scans:
#                          ${XDG_DATA_HOME:-$HOME/.local/share}/gstreamer-1.0/plugins
#   PREFIX=/usr/local:     $DESTDIR$PREFIX/$LIBDIR/gstreamer-1.0, LIBDIR defaulting to
#                          lib/<multiarch> (lib/x86_64-linux-gnu) as Debian lays it out
#   DESTDIR:               a staging root put in front of PREFIX (packaging)
#
# install records the folders it made (those missing before) in .libgstquicnalu.so.dirs next
# to the library; uninstall removes the library, the record, and those of the folders that
# are left empty, below the data folder, PREFIX or DESTDIR (whichever bounds the install).
# Folders that were there before install, or with no record (an older install), stay.
#
# PREFIX and LIBDIR may not have a `..` component: the plugin would land outside the prefix.
set -euo pipefail

NAME=libgstquicnalu.so
DIRS=".$NAME.dirs"
here="$(cd "$(dirname "$0")/.." && pwd)"

usage() {
  echo "usage: $0 install [LIBRARY] | uninstall" >&2
  exit 2
}

# dpkg's tuple first: it is the normalised one the loader uses (i386, not i686).
multiarch() {
  dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null ||
    gcc -print-multiarch 2>/dev/null ||
    true
}

# Without trailing slashes, so the walk up in uninstall meets its bound exactly.
trim() {
  local p="$1"
  while [ "${#p}" -gt 1 ] && [ "${p%/}" != "$p" ]; do p="${p%/}"; done
  printf '%s' "$p"
}

# A `..` would take the install, and uninstall's removals, outside the prefix.
no_dotdot() {
  case "/$2/" in
    */../*) echo "$1 may not contain a '..' component: $2" >&2; exit 2 ;;
  esac
}

PREFIX="$(trim "${PREFIX:-}")"
DESTDIR="$(trim "${DESTDIR:-}")"
if [ -z "$PREFIX" ]; then
  [ -z "$DESTDIR" ] || { echo "DESTDIR needs a PREFIX" >&2; exit 2; }
  root="$(trim "${XDG_DATA_HOME:-$HOME/.local/share}")"
  dir="$root/gstreamer-1.0/plugins"
else
  case "$PREFIX" in /*) ;; *) echo "PREFIX must be an absolute path: $PREFIX" >&2; exit 2 ;; esac
  no_dotdot PREFIX "$PREFIX"
  no_dotdot LIBDIR "${LIBDIR:-}"
  if [ -z "${LIBDIR:-}" ]; then
    arch="$(multiarch)"
    LIBDIR="lib${arch:+/$arch}"
  fi
  installed_dir="$PREFIX/$LIBDIR/gstreamer-1.0"
  dir="$DESTDIR$installed_dir"
  # Nothing at or above the staging root (or the prefix itself) is install's to remove.
  root="${DESTDIR:-$PREFIX}"
fi

case "${1:-}" in
  install)
    [ $# -le 2 ] || usage
    lib="${2:-${CARGO_TARGET_DIR:-$here/target}/release/$NAME}"
    [ -f "$lib" ] || { echo "no plugin at $lib: build it first (make install does)" >&2; exit 1; }
    # The folders mkdir -p is about to make, deepest first (only below the bound: uninstall
    # never removes the bound itself).
    made=()
    d="$dir"
    while [ ! -e "$d" ] && case "$d" in "$root"/?*) true ;; *) false ;; esac; do
      made+=("$d")
      d="$(dirname "$d")"
    done
    mkdir -p "$dir"
    # Only a fresh folder gets a record; over an earlier install, its record stays as it is.
    if [ "${#made[@]}" -gt 0 ]; then
      tmp="$dir/$DIRS.$$"
      printf '%s\n' "${made[@]}" >"$tmp"
      mv -f "$tmp" "$dir/$DIRS"
    fi
    # Copy then rename: a process that has the old library mapped keeps it intact.
    tmp="$dir/.$NAME.$$"
    cp "$lib" "$tmp"
    chmod 644 "$tmp"
    mv -f "$tmp" "$dir/$NAME"
    echo "installed $dir/$NAME"
    if [ -n "$PREFIX" ] && command -v pkg-config >/dev/null; then
      system="$(pkg-config --variable=pluginsdir gstreamer-1.0 2>/dev/null || true)"
      if [ -n "$system" ] && [ "$system" != "$installed_dir" ]; then
        echo "note: GStreamer's own plugins are in $system; it scans $installed_dir" \
          "only when told (GST_PLUGIN_PATH=$installed_dir)"
      fi
    fi
    ;;
  uninstall)
    [ $# -eq 1 ] || usage
    if [ -e "$dir/$NAME" ]; then
      rm -f "$dir/$NAME"
      echo "removed $dir/$NAME"
    else
      echo "nothing installed at $dir/$NAME"
    fi
    made=()
    if [ -f "$dir/$DIRS" ]; then
      mapfile -t made <"$dir/$DIRS"
      rm -f "$dir/$DIRS"
    fi
    # Only what the record lists, and of that only the library's folder and those above it,
    # strictly below the bound, and empty.
    for d in "${made[@]}"; do
      case "$dir/" in "$d"/*) ;; *) continue ;; esac
      case "$d" in "$root"/?*) ;; *) continue ;; esac
      rmdir "$d" 2>/dev/null || break
    done
    ;;
  *) usage ;;
esac
