# quicnalu: `make demo` and `make test` work on a fresh Debian 12 / Ubuntu machine.
# Both install the missing system packages first (apt-get, idempotent).

# rustup installs cargo here; CI shells may not have it on PATH.
export PATH := $(HOME)/.cargo/bin:$(PATH)
CARGO ?= cargo
PLUGIN_DIR := $(CURDIR)/target/release

.PHONY: all deps build demo test bench inspect clean

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

# Show both elements as gst-inspect-1.0 sees them from the build folder.
inspect: build
	GST_PLUGIN_PATH=$(PLUGIN_DIR) gst-inspect-1.0 quicnalusink
	GST_PLUGIN_PATH=$(PLUGIN_DIR) gst-inspect-1.0 quicnalusrc

clean:
	$(CARGO) clean
