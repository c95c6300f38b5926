#!/usr/bin/env bash
# Checks that a `gpu-autotune` build keeps its tuning on disk (issue 13): the same evaluation on
# wgpu, twice, in a fresh cache directory and from two different working directories. The first
# run tunes the GPU kernels (tens of seconds on the software adapters here), the second reads
# the results back and starts at once. The first runs inside the checkout, where cubecl alone
# would keep its results in target/, the second from /: one cache per machine, not per working
# directory. Prints both times and the cache's files; fails if the
# second run is not at least twice as fast or the cache stayed empty. Not part of the test command:
# the feature builds burn again with autotuning and the cache's database (several minutes).
#
#   scripts/check-autotune-cache.sh [MODEL] [TEXT]   (default: the tiny llama and the perplexity text)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/lora-null/target-autotune}"
(cd "$root" && cargo build --bin lora-null --features gpu-autotune 2>&1 | tail -1)
bin="$CARGO_TARGET_DIR/debug/lora-null"
model=$(realpath "${1:-$root/tests/fixtures/tiny/llama}")
text=$(realpath "${2:-$root/tests/fixtures/smollm2/ppl_text.txt}")
cache=$(mktemp -d)
trap 'rm -rf "$cache"' EXIT
# The driver's own shader cache (mesa keeps one under XDG_CACHE_HOME too) stays off, so the
# second run gains only what cubecl kept.
export MESA_SHADER_CACHE_DISABLE=true
export XDG_CACHE_HOME="$cache" XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp/lora-null-xdg-runtime}"
mkdir -p "$XDG_RUNTIME_DIR"
run() {
  local dir=$1 t0 t1
  t0=$(date +%s.%N)
  (cd "$dir" && "$bin" eval --model "$model" --text "$text" --max-tokens 256 --device wgpu >/dev/null)
  t1=$(date +%s.%N)
  echo "$t1 - $t0" | bc
}
# The first from inside the checkout (cubecl alone would keep its results in target/ there),
# the second from elsewhere.
first=$(run "$root")
second=$(run /)
echo "first run (tunes): ${first} s; second run (reads the cache): ${second} s"
find "$cache" -type f -printf '%s bytes  %p\n'
[ -n "$(find "$cache" -type f -size +0)" ] || { echo "error: nothing was written under $cache" >&2; exit 1; }
awk -v a="$first" -v b="$second" 'BEGIN { exit !(b * 2 < a) }' \
  || { echo "error: the second run was not at least twice as fast" >&2; exit 1; }
echo "ok: the tuning is kept on disk and reused"
