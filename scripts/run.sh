#!/usr/bin/env bash
# The run command from README.md: installs what the app needs (once: trunk and wasm-bindgen-cli
# through cargo), fetches the default model and data into assets/, builds the browser app with
# trunk and serves it at http://127.0.0.1:8080 (Ctrl-C stops it). Open the page in a browser with
# WebGPU (Chrome/Edge 113+, or Safari 26), press "Start WebGPU", then "Load the default".
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/lora-null/target}"
scripts/setup.sh --trunk
scripts/fetch-model.sh
scripts/fetch-data.sh
echo "serving the studio at http://127.0.0.1:${PORT:-8080}"
exec trunk serve --offline --port "${PORT:-8080}"
