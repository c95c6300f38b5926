#!/usr/bin/env bash
# Checks our LoRA adapter GGUF with llama.cpp itself (a reference check, not part of CI): trains
# small adapters on SmolLM2-135M (GGUF), converts each with `lora-null export --gguf-adapter`,
# and compares llama.cpp's `llama-perplexity --lora` with `lora-null eval --adapter` on the same
# text, plus both tools on the base alone. Build the tools first: scripts/llama-cpp-tools.sh.
#   scripts/check-llama-cpp.sh [METHOD ...]     (default: lora null null-v2 pissa)
# llama-perplexity scores with --ppl-stride 511 (its strided mode widens `-c 257` to a 512-token
# window, scores all of it but the first token, and moves by 511), so that, like `lora-null eval
# --seq-len 512`, every token but a window's first is scored; llama.cpp's windows overlap by one
# token where ours do not, so the two tools' perplexities differ slightly even on the base. The
# check is the adapter's effect: ppl(adapter)/ppl(base) in each tool, and the two perplexities.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/lora-null/target}"
llama="${LLAMA_CPP_BIN:-$(ls -d "$HOME"/.cache/lora-null/llama.cpp/build-*/bin 2>/dev/null | tail -1)}"
[ -x "$llama/llama-perplexity" ] || { echo "llama-perplexity not found in '$llama': run scripts/llama-cpp-tools.sh" >&2; exit 2; }
scripts/fetch-model.sh >/dev/null
scripts/fetch-data.sh >/dev/null
cargo build --bin lora-null 2>&1 | tail -1
bin="$CARGO_TARGET_DIR/debug/lora-null"
model=assets/models/SmolLM2-135M-Instruct.Q4_1.gguf
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# About 4,500 tokens of encyclopedic prose (the strided mode needs at least 1,024).
text="$work/text.txt"
head -c 20000 assets/data/knowledge_prose.txt > "$text"

llama_ppl() { # prints the final perplexity estimate
  "$llama/llama-perplexity" -m "$model" -f "$text" -c 257 -b 512 --ppl-stride 511 -t 2 "$@" 2>&1 \
    | python3 -c 'import re,sys; v=re.findall(r"\[\d+\]([0-9.]+),", sys.stdin.read()); print(v[-1] if v else "nan")'
}
ours_ppl() {
  "$bin" eval --model "$model" --text "$text" --seq-len 512 --device cpu "$@" 2>/dev/null \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["perplexity"])'
}

base_llama=$(llama_ppl)
base_ours=$(ours_ppl)
echo "base: llama.cpp $base_llama, lora-null $base_ours"
printf '\n| method | r (exported) | llama.cpp ppl | lora-null ppl | llama.cpp ratio to base | lora-null ratio to base | ratios differ by |\n|---|---|---|---|---|---|---|\n' > "$work/table.md"
methods=("$@")
[ ${#methods[@]} -gt 0 ] || methods=(lora null null-v2 pissa)
for method in "${methods[@]}"; do
  out="$work/$method"
  calib=()
  case "$method" in null*|corda*) calib=(--calib assets/data/sample_calib.txt --samples 16 --seq-len 128) ;; esac
  "$bin" train --model "$model" --data assets/data/sample_train.jsonl --method "$method" --rank 8 --lr 5e-3 \
    --batch 2 --max-len 256 --steps 4 --device cpu --out "$out" "${calib[@]}" >/dev/null 2>&1
  "$bin" export --model "$model" --adapter "$out" --gguf-adapter "$out/adapter.gguf" --device cpu >/dev/null 2>&1
  r=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["r"])' "$out/adapter_config.json")
  l=$(llama_ppl --lora "$out/adapter.gguf")
  o=$(ours_ppl --adapter "$out")
  python3 - "$method" "$r" "$l" "$o" "$base_llama" "$base_ours" >> "$work/table.md" <<'PY'
import sys
m, r, l, o, bl, bo = sys.argv[1], sys.argv[2], *map(float, sys.argv[3:])
rl, ro = l / bl, o / bo
print(f"| {m} | {r} | {l:.4f} | {o:.4f} | {rl:.4f} | {ro:.4f} | {abs(rl / ro - 1) * 100:.2f}% |")
PY
done
cat "$work/table.md"
