#!/usr/bin/env bash
# Builds moq-dev's moq-relay, at the version the MoQ tests and benchmark are pinned to, into
# a cache folder the Makefile owns (default .cache/moq-relay-VERSION). Idempotent: does
# nothing when the binary is already there. Prints the binary's path last.
#
# `cargo install --locked moq-relay@VERSION` is not used: the crate's Cargo.lock pins
# webpki-roots 1.0.11, which the crates.io index reachable here does not have. So the
# crate is fetched, checked against its SHA-256, and that one lock entry is moved back to
# 1.0.10 before a --locked install. Only the `noq` feature is built: the tests need raw
# QUIC and WebTransport, not iroh, mDNS, WebSocket or Unix sockets (about 70 fewer crates).
set -euo pipefail

VERSION=0.17.10
SHA256=888587f1cff521c7edf15f4e5695eba2d3a3373c5da57fcb0ccd9ae55cca3cad
ROOT="${1:-$(cd "$(dirname "$0")/.." && pwd)/.cache/moq-relay-$VERSION}"
BIN="$ROOT/bin/moq-relay"

export PATH="$HOME/.cargo/bin:$PATH"
if [ -x "$BIN" ] && "$BIN" --version 2>/dev/null | grep -q "$VERSION"; then
  echo "$BIN"
  exit 0
fi

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
echo "building moq-relay $VERSION into $ROOT (several minutes, once per machine)" >&2
curl -sSfL --retry 3 -o "$WORK/relay.crate" \
  "https://static.crates.io/crates/moq-relay/moq-relay-$VERSION.crate"
echo "$SHA256  $WORK/relay.crate" | sha256sum -c --quiet -
tar -xzf "$WORK/relay.crate" -C "$WORK"
cd "$WORK/moq-relay-$VERSION"
cargo update --quiet -p webpki-roots --precise 1.0.10
cargo install --quiet --locked --path . --root "$ROOT" --no-default-features --features noq
echo "$BIN"
