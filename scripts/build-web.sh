#!/usr/bin/env bash
# Builds the browser app into dist/ without trunk (the tests use this; `trunk serve` in
# scripts/run.sh builds the page from index.html and runs `--engine-into` as a hook): two wasm
# bundles, wasm-bindgen, and index.html with trunk's directives replaced by plain tags.
#   scripts/build-web.sh [DIST]           the whole app
#   scripts/build-web.sh --engine-into D  only the engine bundle and worker.js, into D
# The page (`studio`) is built without burn (--no-default-features): it only draws and talks to
# the engine. The engine (`studio-engine`, with burn) runs in the page's workers.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/lora-null/target}"
wasm="$CARGO_TARGET_DIR/wasm32-unknown-unknown/debug"

engine_into() {
  cargo build --target wasm32-unknown-unknown --bin studio-engine
  wasm-bindgen --target web --no-typescript --out-dir "$1" --out-name studio-engine "$wasm/studio-engine.wasm"
  cp assets/worker.js "$1/"
}

if [ "${1:-}" = "--engine-into" ]; then
  engine_into "${2:?usage: build-web.sh --engine-into DIR}"
  exit 0
fi

out="${1:-dist}"
rm -rf "$out.tmp" && mkdir -p "$out.tmp"
cargo build --target wasm32-unknown-unknown --bin studio --no-default-features
wasm-bindgen --target web --no-typescript --out-dir "$out.tmp" --out-name studio "$wasm/studio.wasm"
engine_into "$out.tmp"
cp assets/style.css "$out.tmp/"
python3 - "$out.tmp/index.html" <<'PY'
import re, sys
html = open("index.html", encoding="utf-8").read()
html = re.sub(r'\s*<link data-trunk[^>]*/>', "", html)
html = html.replace("</head>", '  <link rel="stylesheet" href="style.css" />\n'
                    '  <script type="module">import init from "./studio.js"; init();</script>\n</head>')
open(sys.argv[1], "w", encoding="utf-8").write(html)
PY
mkdir -p "$out.tmp/assets"
for d in models data; do
  [ -d "assets/$d" ] && ln -sfn "$root/assets/$d" "$out.tmp/assets/$d"
done
rm -rf "$out" && mv "$out.tmp" "$out"
echo "web app: $out/ (page $(du -sh "$out/studio_bg.wasm" | cut -f1), engine $(du -sh "$out/studio-engine_bg.wasm" | cut -f1) wasm)"
