# quicnalu: `make demo` and `make test` work on a fresh Debian 12 / Ubuntu machine.
# Both install the missing system packages first (apt-get, idempotent).

# rustup installs cargo here; CI shells may not have it on PATH.
export PATH := $(HOME)/.cargo/bin:$(PATH)
CARGO ?= cargo
PLUGIN_DIR := $(CURDIR)/target/release

.PHONY: all deps build demo test bench fuzz inspect clean

all: build

deps:
	./scripts/install-deps.sh

build: deps
	$(CARGO) build --release --workspace --all-targets

demo: build
	$(CARGO) run --release --example loopback

test: deps
	$(CARGO) test --release --workspace

# Transport benchmark against srt, tcp and RTP/UDP; writes docs/BENCHMARKS.md and plots.
bench: deps
	$(CARGO) bench --bench transport -- --out docs

# Fuzz the wire decoders (nightly, cargo-fuzz): FUZZ_TIME seconds per target, starting from
# the committed corpus. New inputs go to fuzz/new-corpus so the committed one stays minimal;
# one fuzzing process at a time. -malloc_limit_mb: the limits are 64 KiB frames and 4 KiB
# commands, so any single allocation near 64 MiB is a bug, not load.
FUZZ_TIME ?= 60
FUZZ_TARGETS := command_stream group_stream frame_header
fuzz: deps
	@$(CARGO) fuzz --version >/dev/null 2>&1 || $(CARGO) install cargo-fuzz
	@for t in $(FUZZ_TARGETS); do \
		mkdir -p fuzz/new-corpus/$$t && \
		$(CARGO) +nightly fuzz run $$t fuzz/new-corpus/$$t fuzz/corpus/$$t -- \
			-max_total_time=$(FUZZ_TIME) -rss_limit_mb=1024 -malloc_limit_mb=64 || exit 1; \
	done

# Show both elements as gst-inspect-1.0 sees them from the build folder.
inspect: build
	GST_PLUGIN_PATH=$(PLUGIN_DIR) gst-inspect-1.0 quicnalusink
	GST_PLUGIN_PATH=$(PLUGIN_DIR) gst-inspect-1.0 quicnalusrc

clean:
	$(CARGO) clean
