#!/usr/bin/env bash
# Builds moq-dev's GStreamer elements (moqsink, moqsrc: crate moq-gst) at the version the
# interoperability tests and the benchmark are pinned to, into a cache folder the Makefile
# owns (default .cache/moq-gst-VERSION). Idempotent. Prints the plugin's folder last (for
# GST_PLUGIN_PATH).
#
# As for moq-relay (install-moq-relay.sh), the crate's Cargo.lock pins webpki-roots 1.0.11,
# which the crates.io index reachable here does not have: that one entry is moved back to
# 1.0.10 before a --locked build. It builds apart from our workspace: it uses
# gstreamer-rs 0.23, tokio and moq-dev's own QUIC stack, none of which the plugin links.
set -euo pipefail

VERSION=0.4.20
SHA256=abefb072a8e06276f774840f1265a9bd53dd8ce8a462313fc982595d3bb83fb0
ROOT="${1:-$(cd "$(dirname "$0")/.." && pwd)/.cache/moq-gst-$VERSION}"
LIB="$ROOT/libgstmoq.so"

export PATH="$HOME/.cargo/bin:$PATH"
if [ -f "$LIB" ]; then
  echo "$ROOT"
  exit 0
fi

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
echo "building moq-gst $VERSION into $ROOT (about ten minutes, once per machine)" >&2
curl -sSfL --retry 3 -o "$WORK/gst.crate" \
  "https://static.crates.io/crates/moq-gst/moq-gst-$VERSION.crate"
echo "$SHA256  $WORK/gst.crate" | sha256sum -c --quiet -
tar -xzf "$WORK/gst.crate" -C "$WORK"
cd "$WORK/moq-gst-$VERSION"
cargo update --quiet -p webpki-roots --precise 1.0.10
cargo build --quiet --release --locked --target-dir "$WORK/target"
mkdir -p "$ROOT"
cp "$WORK/target/release/libgstmoq.so" "$LIB.part"
mv "$LIB.part" "$LIB"
echo "$ROOT"
