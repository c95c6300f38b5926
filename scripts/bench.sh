#!/usr/bin/env bash
# Benchmarks against the PyTorch reference, in one invocation, on this machine:
#   scripts/bench.sh forward   forward pass, 512 tokens of SmolLM2-135M: cpu, wgpu, torch 1 and 2 threads
#   scripts/bench.sh train     one LoRA step, r=16, 7 targets, batch 4x128: cpu, wgpu, torch+PEFT 1 and 2 threads
#   scripts/bench.sh analysis  covariances over 16 windows x 512 tokens + every eigendecomposition: cpu, torch 1 and 2 threads
# Needs the reference venv (scripts/requirements-reference.txt) at $VENV (default
# ~/.cache/lora-null/venv). Prints JSON lines, then a markdown table with ratios.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/lora-null/target}"
py="${VENV:-$HOME/.cache/lora-null/venv}/bin/python"
model=assets/models/SmolLM2-135M-Instruct.Q4_1.gguf
scripts/fetch-model.sh >/dev/null
scripts/fetch-data.sh >/dev/null
cargo build --bin lora-null 2>&1 | tail -1
bin="$CARGO_TARGET_DIR/debug/lora-null"
out=$(mktemp)
what="${1:-forward}"
case "$what" in
  forward)
    text=tests/fixtures/smollm2/ppl_text.txt
    "$bin" bench forward --model "$model" --text "$text" --tokens 512 --device cpu --repeats 3 | tee -a "$out"
    "$bin" bench forward --model "$model" --text "$text" --tokens 512 --device wgpu --repeats 1 | tee -a "$out"
    for t in 1 2; do
      "$py" scripts/bench/torch_forward.py --model "$model" --text "$text" --tokens 512 --threads "$t" | tee -a "$out"
    done
    ;;
  train)
    text=assets/data/knowledge_prose.txt
    "$bin" bench train --model "$model" --text "$text" --rank 16 --batch 4 --tokens 128 --device cpu --steps 3 | tee -a "$out"
    "$bin" bench train --model "$model" --text "$text" --rank 16 --batch 4 --tokens 128 --device wgpu --steps 1 | tee -a "$out"
    for t in 1 2; do
      "$py" scripts/bench/torch_train.py --model "$model" --text "$text" --rank 16 --batch 4 --tokens 128 --threads "$t" | tee -a "$out"
    done
    ;;
  analysis)
    text=assets/data/calib_questions.txt
    windows=$(mktemp)
    "$bin" bench analysis --model "$model" --text "$text" --samples 16 --seq-len 512 --device cpu --windows-out "$windows" | tee -a "$out"
    for t in 1 2; do
      "$py" scripts/bench/torch_analysis.py --model "$model" --windows "$windows" --threads "$t" | tee -a "$out"
    done
    rm -f "$windows"
    ;;
  *) echo "unknown benchmark ${what}; use forward, train or analysis" >&2; exit 2 ;;
esac
python3 - "$out" "$what" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
ref = next(r for r in rows if r["device"].startswith("pytorch") and "1 thread" in r["device"])
mib = lambda r: f"{r['peak_rss_bytes'] / 2**20:.0f}" if r.get("peak_rss_bytes") else "–"
if sys.argv[2] == "analysis":
    print("\n| run | covariances s | eigh s (all) | eigh by dim | peak MiB | covariances vs PyTorch 1 thread | eigh vs PyTorch 1 thread |\n|---|---|---|---|---|---|---|")
    for r in rows:
        dims = ", ".join(f"{e['count']}×{e['dim']}: {e['seconds']:.1f}s" for e in r["eigh_by_dim"])
        print(f"| {r['device']} | {r['covariance_seconds']:.1f} | {r['eigh_seconds']:.1f} | {dims} | {mib(r)} | "
              f"{ref['covariance_seconds'] / r['covariance_seconds']:.2f}x | {ref['eigh_seconds'] / r['eigh_seconds']:.2f}x |")
else:
    print("\n| run | tokens/s | median s | peak MiB | speed vs PyTorch 1 thread |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['device']} | {r['tokens_per_second']:.1f} | {r['median_seconds']:.3f} | {mib(r)} | {r['tokens_per_second'] / ref['tokens_per_second']:.2f}x |")
PY
rm -f "$out"
