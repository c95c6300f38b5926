#!/usr/bin/env bash
# Builds the browser app into dist/ without trunk (the tests use this; `trunk serve` in
# scripts/run.sh builds the same bundle from index.html): cargo for wasm32, wasm-bindgen, and
# index.html with trunk's directives replaced by plain tags.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/lora-null/target}"
out="${1:-dist}"
cargo build --target wasm32-unknown-unknown --bin studio
rm -rf "$out.tmp" && mkdir -p "$out.tmp"
wasm-bindgen --target web --no-typescript --out-dir "$out.tmp" --out-name studio \
  "$CARGO_TARGET_DIR/wasm32-unknown-unknown/debug/studio.wasm"
cp assets/worker.js assets/style.css "$out.tmp/"
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
echo "web app: $out/ ($(du -sh "$out/studio_bg.wasm" | cut -f1) wasm)"
