#!/usr/bin/env bash
# The test command: formatting, lints, every test, and the examples' build.
# Usage: scripts/test.sh [extra cargo test args]
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n== %s\n' "$*"; }

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets --locked -- -D warnings

step "cargo build --examples"
cargo build --examples --locked

# The suite needs no server: the embedded SQLite default is what it exercises; tests that
# need a process start the real binary themselves.
step "cargo test"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
status=0
cargo test --lib --bins --tests --benches --locked "$@" 2>&1 | tee "$log" || status=$?

# One closing line for the whole run, summed over every test binary.
awk '/^test result:/ {
        for (i = 1; i <= NF; i++) {
            if ($(i + 1) ~ /^passed;?$/) passed += $i
            if ($(i + 1) ~ /^failed;?$/) failed += $i
        }
     }
     END { printf "%d passed, %d failed\n", passed, failed }' "$log"
exit "$status"
