#!/usr/bin/env bash
# The test command: formatting, lints, then every test (unit, integration, examples build).
# Usage: scripts/test.sh [extra cargo test args]
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n== %s\n' "$*"; }

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets --locked -- -D warnings

# The test suite needs no server: the embedded SQLite default is what it exercises.
step "cargo test"
cargo test --all-targets --locked "$@"
