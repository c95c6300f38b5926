#!/usr/bin/env bash
# Benchmarks against the PyTorch reference, in one invocation, on this machine.
#   scripts/bench.sh forward   forward pass over 512 tokens of SmolLM2-135M (cpu, wgpu, torch 1/2 threads)
#   scripts/bench.sh analysis  covariance accumulation + eigendecompositions (see BENCHMARKS.md)
#   scripts/bench.sh train     one training step, r=16, 7 targets, batch 4×128 (see BENCHMARKS.md)
# Needs the reference venv (scripts/requirements-reference.txt) at $VENV (default
# ~/.cache/lora-null/venv). Prints JSON lines, then a markdown table of ratios.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/lora-null/target}"
py="${VENV:-$HOME/.cache/lora-null/venv}/bin/python"
model=assets/models/SmolLM2-135M-Instruct.Q4_1.gguf
text=tests/fixtures/smollm2/ppl_text.txt
scripts/fetch-model.sh >/dev/null
cargo build --bin lora-null 2>&1 | tail -1
bin="$CARGO_TARGET_DIR/debug/lora-null"
out=$(mktemp)
case "${1:-forward}" in
  forward)
    "$bin" bench forward --model "$model" --text "$text" --tokens 512 --device cpu --repeats 3 | tee -a "$out"
    "$bin" bench forward --model "$model" --text "$text" --tokens 512 --device wgpu --repeats 1 | tee -a "$out"
    for t in 1 2; do
      "$py" scripts/bench/torch_forward.py --model "$model" --text "$text" --tokens 512 --threads "$t" | tee -a "$out"
    done
    ;;
  *) echo "unknown benchmark ${1}" >&2; exit 2 ;;
esac
python3 - "$out" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
ref = next((r for r in rows if r["device"].startswith("pytorch") and "1 thread" in r["device"]), rows[-1])
print("\n| run | tokens/s | median s | vs PyTorch 1 thread |\n|---|---|---|---|")
for r in rows:
    print(f"| {r['device']} | {r['tokens_per_second']:.1f} | {r['median_seconds']:.3f} | {r['tokens_per_second']/ref['tokens_per_second']:.2f}x |")
PY
rm -f "$out"
