#!/usr/bin/env bash
# Runs the whole suite, built with the `testing` profile (Cargo.toml says why), and ends
# with one line: `N passed, M failed`. Exits non-zero when any test fails or the build does.
#
# cargo-nextest runs every test in a process of its own, as many at a time as there are
# cores, across all test binaries (.config/nextest.toml); `cargo test` would run the
# binaries one after another, and the one whose tests take turns (tests/process/) alone.
# Every test runs even after a failure. The doc tests, which nextest does not run, follow.
# Extra arguments are nextest's: `scripts/run-tests.sh impaired budget` runs the tests whose
# names contain either word (and then no doc tests).
set -uo pipefail

NEXTEST_VERSION=0.9.143
export PATH="$HOME/.cargo/bin:$PATH"
cd "$(dirname "$0")/.."
if ! cargo nextest --version >/dev/null 2>&1; then
  echo "installing cargo-nextest $NEXTEST_VERSION (once per machine)" >&2
  cargo install --quiet --locked "cargo-nextest@$NEXTEST_VERSION" || exit 1
fi

log="$(mktemp)"
trap 'rm -f "$log"' EXIT
cargo nextest run --cargo-profile testing --workspace --no-fail-fast "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
if [ $# -eq 0 ]; then
  cargo test --profile testing --workspace --doc 2>&1 | tee -a "$log"
  [ "${PIPESTATUS[0]}" -eq 0 ] || status=1
fi

# nextest's summary: `Summary [ 240.1s] 224 tests run: 223 passed, 1 failed, 0 skipped`
# (also `N timed out`); the doc tests': `test result: ok. 1 passed; 0 failed; ...`.
read -r passed failed <<<"$(awk '
  /Summary \[/ || /^test result:/ {
    for (i = 2; i <= NF; i++) {
      word = $i
      gsub(/[,;]/, "", word)
      if (word == "passed") passed += $(i - 1)
      if (word == "failed") failed += $(i - 1)
      if (word == "timed" && $(i + 1) ~ /^out/) failed += $(i - 1)
    }
  }
  END { print passed + 0, failed + 0 }
' "$log")"

echo
if [ "$status" -ne 0 ] && [ "$failed" -eq 0 ]; then
  echo "$passed passed, $failed failed (the build or a test runner failed: see above)"
  exit 1
fi
echo "$passed passed, $failed failed"
[ "$status" -eq 0 ] && [ "$failed" -eq 0 ]
