#!/usr/bin/env bash
# Installs the system packages quicnalu needs on Debian 12 / Ubuntu. Idempotent:
# does nothing when every package is already present.
set -euo pipefail

PACKAGES=(
  build-essential pkg-config cmake clang libclang-dev   # quiche builds BoringSSL
  libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev
  gstreamer1.0-tools gstreamer1.0-plugins-base gstreamer1.0-plugins-good
  gstreamer1.0-plugins-base-apps                       # gst-play-1.0, for the URI tests
  gstreamer1.0-plugins-bad gstreamer1.0-libav          # h265parse, x265enc, srt, rist, avdec_h265
  libx265-dev x265 ffmpeg openssl curl
  python3 python3-gi gir1.2-gstreamer-1.0              # examples/app.py (PyGObject)
  iproute2 util-linux                                  # ip, unshare: tests in a network namespace
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
echo "installing: ${missing[*]}"
$SUDO apt-get update
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends "${missing[@]}"
