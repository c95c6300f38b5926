#!/usr/bin/env bash
# Installs what building and testing need on a fresh Debian 12 machine (as root, or with sudo);
# each step is skipped when its result is already present, so repeat runs cost nothing.
#   scripts/setup.sh          system packages, Rust components, wasm32 target, npm packages
#   scripts/setup.sh --tools  also wasm-bindgen-cli (for the browser tests; ~15 min once)
#   scripts/setup.sh --trunk  also trunk (for `trunk serve`; ~45 min once)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# Debian packages: lavapipe (wgpu on the CPU), Chromium and its driver (browser tests).
pkgs=(mesa-vulkan-drivers libvulkan1 chromium chromium-driver)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# Rust components and the wasm32 target.
rustup component list --installed | grep -q '^rustfmt' || rustup component add rustfmt
rustup component list --installed | grep -q '^clippy' || rustup component add clippy
rustup target list --installed | grep -q '^wasm32-unknown-unknown$' || rustup target add wasm32-unknown-unknown

# npm: playwright-core for the end-to-end test (never a downloaded browser: Debian's chromium).
if [ ! -d "$root/tests/e2e/node_modules/playwright-core" ]; then
  (cd "$root/tests/e2e" && npm ci --no-audit --no-fund --loglevel=error)
fi

# The wasm-bindgen CLI must equal the wasm-bindgen version in Cargo.lock.
wb_version=$(grep -A1 '^name = "wasm-bindgen"$' "$root/Cargo.lock" | sed -n 's/^version = "\(.*\)"/\1/p')
if [[ " $* " == *" --tools "* || " $* " == *" --trunk "* ]]; then
  if [ "$(wasm-bindgen --version 2>/dev/null | cut -d' ' -f2)" != "$wb_version" ]; then
    echo "installing wasm-bindgen-cli $wb_version (once; about 15 minutes)"
    cargo install wasm-bindgen-cli --version "$wb_version"
  fi
fi
if [[ " $* " == *" --trunk "* ]] && ! trunk --version 2>/dev/null | grep -q '0.21.14'; then
  echo "installing trunk 0.21.14 (once; about 45 minutes on 2 cores)"
  cargo install trunk --version 0.21.14 --locked
fi
echo "setup: ok"
