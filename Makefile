# quicnalu: `make demo` and `make test` work on a fresh Debian 12 / Ubuntu machine.
# Both install the missing system packages first (apt-get, idempotent).

# rustup installs cargo here; CI shells may not have it on PATH.
export PATH := $(HOME)/.cargo/bin:$(PATH)
CARGO ?= cargo
PLUGIN_DIR := $(or $(CARGO_TARGET_DIR),$(CURDIR)/target)/release
# make install PREFIX=/usr/local [DESTDIR=stage] [LIBDIR=lib64]; no PREFIX: the user's
# plugin folder. Set here so stray variables in the environment do not pick the place.
PREFIX :=
DESTDIR :=
LIBDIR :=
INSTALL_ENV = PREFIX="$(PREFIX)" DESTDIR="$(DESTDIR)" LIBDIR="$(LIBDIR)"

.PHONY: all deps moq-peers build plugin demo test bench fuzz inspect install uninstall clean

all: build

deps:
	./scripts/install-deps.sh

# moq-dev's moq-relay and its GStreamer elements (moqsink, moqsrc) at the versions the MoQ
# tests and the benchmark pin: built once per machine into ~/.cache/quicnalu (or
# $$QUICNALU_CACHE), apart from our workspace. Several minutes the first time, nothing after.
moq-peers: deps
	./scripts/install-moq-peers.sh relay gst

# What ships: the plugin library (with gst-plugin-meta inside), release profile. Tests,
# examples and benches build with the `testing` profile (Cargo.toml says why) in make test
# and make bench.
build: plugin

plugin: deps
	$(CARGO) build --release -p gst-plugin-quicnalu --lib

install: plugin
	$(INSTALL_ENV) ./scripts/install-plugin.sh install $(PLUGIN_DIR)/libgstquicnalu.so

uninstall:
	$(INSTALL_ENV) ./scripts/install-plugin.sh uninstall

# Builds only the loopback example (and the plugin it links), so the first frame is not
# behind a build of every test and bench. It shows the video when there is a display, and
# otherwise writes a decoded picture to target/demo-frame.png.
demo: deps
	$(CARGO) run --release -p gst-plugin-quicnalu --example loopback

# Every test, even after a failure, each in its own process (cargo-nextest, installed once
# when missing); the last line says `N passed, M failed`.
test: deps moq-peers
	./scripts/run-tests.sh

# Transport benchmark against srt, tcp and RTP/UDP; writes docs/BENCHMARKS.md and plots.
bench: deps moq-peers
	$(CARGO) bench --profile testing --bench transport -- --out docs

# Fuzz the wire decoders (nightly, cargo-fuzz): FUZZ_TIME seconds per target, starting from
# the committed corpus. New inputs go to fuzz/new-corpus so the committed one stays minimal;
# one fuzzing process at a time. -malloc_limit_mb: the limits are 64 KiB frames and 4 KiB
# commands, so any single allocation near 64 MiB is a bug, not load.
FUZZ_TIME ?= 60
FUZZ_TARGETS := command_stream group_stream frame_header knock known_hosts uri_query moq_frame moq_catalog
fuzz: deps
	@$(CARGO) fuzz --version >/dev/null 2>&1 || $(CARGO) install cargo-fuzz
	@for t in $(FUZZ_TARGETS); do \
		mkdir -p fuzz/new-corpus/$$t && \
		$(CARGO) +nightly fuzz run $$t fuzz/new-corpus/$$t fuzz/corpus/$$t -- \
			-max_total_time=$(FUZZ_TIME) -rss_limit_mb=1024 -malloc_limit_mb=64 || exit 1; \
	done

# Show both elements as gst-inspect-1.0 sees them from the build folder.
inspect: plugin
	GST_PLUGIN_PATH=$(PLUGIN_DIR) gst-inspect-1.0 quicnalusink
	GST_PLUGIN_PATH=$(PLUGIN_DIR) gst-inspect-1.0 quicnalusrc

clean:
	$(CARGO) clean
