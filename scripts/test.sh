#!/usr/bin/env bash
# The test command from README.md (CI runs exactly this through .ci/run).
# On a fresh Debian machine it installs what the tests need, then runs every check: rustfmt,
# clippy (-D warnings, native and wasm32), native tests (CPU backend, and wgpu on the software
# Vulkan driver), the wasm32 build, the browser tests (wasm-bindgen-test in headless Chromium
# with WebGPU) and the end-to-end test of the app (playwright-core driving Chromium).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
# A shared target directory outside the clone keeps repeat runs (and CI) incremental.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/lora-null/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
start=$(date +%s)
step() { printf '\n==> %s (%ss)\n' "$*" "$(( $(date +%s) - start ))"; }

step "set-up: packages, toolchain targets, npm; model and data"
scripts/setup.sh
# wasm-bindgen-cli builds on its own while burn compiles (it is only missing on a new machine).
scripts/setup.sh --tools > "${TMPDIR:-/tmp}/lora-null-tools.log" 2>&1 &
tools_pid=$!
scripts/fetch-model.sh
scripts/fetch-data.sh

step "cargo fmt --check"
cargo fmt --check

step "cargo clippy --all-targets -- -D warnings (native)"
cargo clippy --all-targets -- -D warnings

step "native tests (cpu backend; wgpu on lavapipe)"
cargo test

step "wasm32 build and clippy (library, app, browser tests; the page's own bundle without burn)"
cargo build --lib --target wasm32-unknown-unknown
cargo clippy --target wasm32-unknown-unknown --lib --bins --tests -- -D warnings
cargo clippy --target wasm32-unknown-unknown --lib --bin studio --no-default-features -- -D warnings

step "waiting for wasm-bindgen-cli"
wait "$tools_pid" || { cat "${TMPDIR:-/tmp}/lora-null-tools.log"; exit 1; }

step "browser tests (wasm-bindgen-test, headless Chromium, WebGPU on SwiftShader)"
cargo test --target wasm32-unknown-unknown --test browser

step "end-to-end test of the app (playwright-core, Chromium)"
scripts/build-web.sh dist
node tests/e2e/e2e.mjs dist

step "all checks passed"
