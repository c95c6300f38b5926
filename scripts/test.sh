#!/usr/bin/env bash
# The test command from README.md (CI runs exactly this through .ci/run).
# On a fresh Debian machine it installs what the tests need, then runs every check:
# rustfmt, clippy (-D warnings), native tests (CPU backend, and wgpu on the software Vulkan
# driver), and the wasm32 build of the library.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
# A shared target directory outside the clone keeps repeat runs (and CI) incremental.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/lora-null/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

step() { printf '\n==> %s (%s)\n' "$*" "$(date +%T)"; }

step "system packages"
scripts/setup.sh

step "model"
scripts/fetch-model.sh

step "cargo fmt --check"
cargo fmt --check

step "cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets -- -D warnings

step "native tests (cpu backend; wgpu on lavapipe)"
cargo test

step "wasm32 build of the library"
cargo build --lib --target wasm32-unknown-unknown

step "all checks passed"
