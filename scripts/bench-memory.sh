#!/usr/bin/env bash
# Peak memory and time of `lora-null eval` and `lora-null train` with the base packed (QLoRA-style)
# against the base decoded to f32, on the random-weight models of scripts/make-big-models.sh (real
# shapes, Q4_0 GGUF), CPU backend. Peak resident memory is GNU time's %M; seconds are the command's
# wall time, load included. Prints a Markdown table (BENCHMARKS.md, "Packed base").
#
#   scripts/bench-memory.sh                      # all three models
#   scripts/bench-memory.sh llama-3.2-1b         # one
#   METHODS="lora null-v2" scripts/bench-memory.sh smollm2-360m
#   DEVICE=wgpu TOKENS=32 scripts/bench-memory.sh smollm2-360m   # the GPU path (on lavapipe here:
#                                                   # its "GPU memory" is host memory, so RSS shows it)
#   BIN=/tmp/lora-null-old scripts/bench-memory.sh llama-3.2-1b   # another build (e.g. main's), not built here
#
# eval: 256 tokens in one window. train: r 16 on the 7 default targets, batch 1 x 256 tokens, one step;
# null-v2 calibrates on 4 windows of 128 tokens first.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
cache=${LORA_NULL_CACHE:-$HOME/.cache/lora-null}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$cache/target}"
if [ -n "${BIN:-}" ]; then
  bin=$BIN
else
  cargo build --quiet --bin lora-null
  bin="$CARGO_TARGET_DIR/debug/lora-null"
fi
data="$root/assets/data"
methods=${METHODS:-lora}
device=${DEVICE:-cpu}
tokens=${TOKENS:-256}
models=("$@")
[ ${#models[@]} -gt 0 ] || models=(smollm2-360m qwen2.5-0.5b llama-3.2-1b)
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

# Runs a command under GNU time; prints "peak_kb seconds".
measure() {
  /usr/bin/time -f '%M %e' -o "$out/time" "$@" > "$out/log" 2>&1 || { cat "$out/log" >&2; exit 1; }
  cat "$out/time"
}

echo "| model | parameters | command | f32 base: peak RSS, s | packed base: peak RSS, s | packed bytes/param | memory ratio | time ratio (f32/packed) | plan, packed (train) |"
echo "|---|---|---|---|---|---|---|---|---|"
for name in "${models[@]}"; do
  gguf="$cache/big-models/$name/$name-q4_0.gguf"
  [ -f "$gguf" ] || { echo "error: $gguf missing; run scripts/make-big-models.sh $name" >&2; exit 1; }
  params=$(awk -v n="$name" '$1 == n {print $2}' "$cache/big-models/params.txt")
  runs=("eval")
  for m in $methods; do runs+=("train-$m"); done
  for run in "${runs[@]}"; do
    declare -A peak=() secs=() plan=()
    for base in f32 packed; do
      case $run in
        eval) cmd=(eval --text "$data/knowledge_prose.txt" --max-tokens "$tokens" --seq-len "$tokens") ;;
        train-*)
          method=${run#train-}
          cmd=(train --data "$data/sample_train.jsonl" --method "$method" --rank 16 --batch 1 --max-len "$tokens"
               --steps 1 --val-fraction 0 --out "$out/adapter-$base")
          [ "$method" = lora ] || cmd+=(--calib "$data/sample_calib.txt" --samples 4 --seq-len 128) ;;
      esac
      read -r kb s < <(measure "$bin" "${cmd[@]}" --model "$gguf" --device "$device" --base "$base")
      peak[$base]=$kb
      secs[$base]=$s
      # train prints its memory plan ("... about X GiB in all")
      plan[$base]=$(sed -n 's/.*about \([0-9.]*\) GiB in all.*/\1 GiB/p' "$out/log")
    done
    awk -v n="$name" -v p="$params" -v r="$run" -v fk="${peak[f32]}" -v fs="${secs[f32]}" \
        -v pk="${peak[packed]}" -v ps="${secs[packed]}" -v pl="${plan[packed]:--}" 'BEGIN {
      printf "| %s | %.2f B | %s | %.2f GB, %.1f | %.2f GB, %.1f | %.2f | %.1fx less | %.2fx | %s |\n",
        n, p / 1e9, r, fk * 1024 / 1e9, fs, pk * 1024 / 1e9, ps, pk * 1024 / p, fk / pk, fs / ps, pl }'
  done
done
