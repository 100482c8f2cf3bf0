#!/usr/bin/env bash
# Builds moq-dev's programs that the MoQ tests and the benchmark run against, at pinned
# versions, once per machine:
#   relay  moq-relay, the relay; prints the binary's path
#   gst    moq-gst's moqsink and moqsrc; prints the folder holding libgstmoq.so
# Usage: install-moq-peers.sh relay|gst ...  (one printed path per name, in order).
#
# The cache is $QUICNALU_CACHE, else ${XDG_CACHE_HOME:-$HOME/.cache}/quicnalu, outside any
# clone: every clone on the machine shares it. Each build has a folder named for its crate,
# version and checksum, so a new pin builds anew and an old one is never mistaken for it.
# Idempotent and safe to run from two clones at once (one build at a time, under a lock).
#
# Each crate comes through cargo: a throw-away manifest depends on the exact version, and
# cargo fetches it and checks it against the registry's checksum, which must be the one
# pinned here. Both crates' Cargo.lock pin webpki-roots 1.0.11, which the package index
# reachable here lacks, so that one entry moves back to 1.0.10 before a --locked build.
# Built together (`relay gst`), they share one target folder: most of their dependencies
# are the same.
set -euo pipefail

export PATH="$HOME/.cargo/bin:$PATH"
CACHE="${QUICNALU_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/quicnalu}"
CARGO_HOME="${CARGO_HOME:-$HOME/.cargo}"

# Sets CRATE, VERSION, SHA256, DIR (the cache folder) and ARTIFACT (what is printed).
pin() {
  case "$1" in
    relay)
      CRATE=moq-relay VERSION=0.17.10
      SHA256=888587f1cff521c7edf15f4e5695eba2d3a3373c5da57fcb0ccd9ae55cca3cad
      DIR="$CACHE/$CRATE-$VERSION-${SHA256:0:16}"
      ARTIFACT="$DIR/bin/moq-relay" ;;
    gst)
      CRATE=moq-gst VERSION=0.4.20
      SHA256=abefb072a8e06276f774840f1265a9bd53dd8ce8a462313fc982595d3bb83fb0
      DIR="$CACHE/$CRATE-$VERSION-${SHA256:0:16}"
      ARTIFACT="$DIR" ;;
    *)
      echo "install-moq-peers.sh: unknown peer '$1' (relay or gst)" >&2
      exit 2 ;;
  esac
}

installed() {
  case "$1" in
    relay) [ -x "$ARTIFACT" ] ;;
    gst) [ -f "$DIR/libgstmoq.so" ] ;;
  esac
}

# Unpacks $CRATE-$VERSION's source into $WORK, checked against SHA256.
fetch() {
  local manifest="$WORK/fetch-$CRATE"
  mkdir -p "$manifest/src"
  : >"$manifest/src/lib.rs"
  cat >"$manifest/Cargo.toml" <<EOF
[package]
name = "fetch-$CRATE"
version = "0.0.0"
edition = "2021"
publish = false

[dependencies]
$CRATE = "=$VERSION"
EOF
  (cd "$manifest" && cargo fetch --quiet)
  # The checksum cargo checked the download against.
  local locked
  locked="$(grep -A3 "^name = \"$CRATE\"$" "$manifest/Cargo.lock" | sed -n 's/^checksum = "\(.*\)"$/\1/p')"
  if [ "$locked" != "$SHA256" ]; then
    echo "install-moq-peers.sh: $CRATE $VERSION has checksum '$locked', pinned $SHA256" >&2
    exit 1
  fi
  local archive
  archive="$(ls "$CARGO_HOME"/registry/cache/*/"$CRATE-$VERSION.crate" | head -n 1)"
  echo "$SHA256  $archive" | sha256sum -c --quiet -
  tar -xzf "$archive" -C "$WORK"
}

build() {
  # Staged beside the cache folder, so that the last step is one rename.
  local src="$WORK/$CRATE-$VERSION" stage="$DIR.part"
  rm -rf "$stage"
  (cd "$src" && cargo update --quiet -p webpki-roots --precise 1.0.10)
  case "$1" in
    relay)
      # Only `noq`: the tests need raw QUIC and WebTransport, not iroh, mDNS, WebSocket or
      # Unix sockets (about 70 fewer crates).
      cargo install --quiet --locked --path "$src" --root "$stage" --target-dir "$WORK/target" \
        --no-default-features --features noq ;;
    gst)
      (cd "$src" && cargo build --quiet --release --locked --target-dir "$WORK/target")
      mkdir -p "$stage"
      cp "$WORK/target/release/libgstmoq.so" "$stage/" ;;
  esac
  rm -rf "$DIR"
  mv "$stage" "$DIR"
}

mkdir -p "$CACHE"
exec 9>"$CACHE/.lock"
flock 9
WORK=""
trap '[ -z "$WORK" ] || rm -rf "$WORK"' EXIT
for peer in "$@"; do
  pin "$peer"
  if ! installed "$peer"; then
    [ -n "$WORK" ] || WORK="$(mktemp -d)"
    echo "building $CRATE $VERSION into $DIR (several minutes, once per machine)" >&2
    fetch
    build "$peer"
  fi
  echo "$ARTIFACT"
done
