#!/usr/bin/env bash
# Benchmarks against the PyTorch reference, in one invocation, on this machine:
#   scripts/bench.sh forward   forward pass, 512 tokens of SmolLM2-135M: cpu, wgpu, torch 1 and 2 threads
#   scripts/bench.sh train     one LoRA step, r=16, 7 targets, batch 4x128: cpu, wgpu, torch+PEFT 1 and 2 threads
#   scripts/bench.sh analysis  covariances over 16 windows x 512 tokens + every eigendecomposition: cpu, torch 1 and 2 threads
#   scripts/bench.sh matmul    raw matmul GFLOP/s at the model shapes: burn flex and the other CPU candidates (each as a share of the
#                              machine's measured peak, scripts/bench/peak_flops.c) vs torch 1 and 2 threads
#   scripts/bench.sh browser   tiny model forward + train step: browser WebGPU (SwiftShader) vs native cpu and wgpu
#   scripts/bench.sh dequant   GGUF block dequantisation MB/s per type: ours vs gguf-py (numpy)
# Needs the reference venv (scripts/requirements-reference.txt) at $VENV (default
# ~/.cache/lora-null/venv, as scripts/make_reference.py sets it up, else ~/.cache/lora-null/refvenv,
# scripts/make-big-models.sh's). Prints JSON lines, then a markdown table with ratios.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/lora-null/target}"
venv="${VENV:-$HOME/.cache/lora-null/venv}"
[ -n "${VENV:-}" ] || [ -x "$venv/bin/python" ] || venv="$HOME/.cache/lora-null/refvenv"
py="$venv/bin/python"
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
  matmul)
    "$bin" bench matmul --device cpu | tee -a "$out"
    # The machine's peak (independent FMAs on every thread), then the CPU candidates (burn flex,
    # gemm, faer, matrixmultiply) on the same shapes, each as a share of it.
    cc -O3 -march=native -fopenmp scripts/bench/peak_flops.c -o "$CARGO_TARGET_DIR/peak_flops"
    peak_line=$("$CARGO_TARGET_DIR/peak_flops" | tee -a "$out")
    peak=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["gflops_all_threads"])' "$peak_line")
    echo "$peak_line"
    "$bin" bench matmul-cpu --peak-gflops "$peak" | tee -a "$out"
    for t in 1 2; do
      "$py" scripts/bench/torch_matmul.py --threads "$t" | tee -a "$out"
    done
    ;;
  browser)
    # The tiny model: the browser's WebGPU here is SwiftShader (a CPU emulation of a GPU), so
    # these numbers say little about real GPUs; they compare the same work in both places.
    tiny=tests/fixtures/tiny/llama
    text=tests/fixtures/smollm2/ppl_text.txt
    cargo test --target wasm32-unknown-unknown --test browser repeated_forward -- --nocapture 2>&1 \
      | grep -o '{.*"bench".*}' | tee -a "$out"
    for dev in cpu wgpu; do
      "$bin" bench forward --model "$tiny" --text "$text" --tokens 64 --device "$dev" --repeats 5 | tee -a "$out"
      "$bin" bench train --model "$tiny" --text "$text" --rank 4 --batch 2 --tokens 96 --device "$dev" --steps 5 | tee -a "$out"
    done
    ;;
  dequant)
    OMP_NUM_THREADS=1 "$py" scripts/bench/gguf_dequant.py --mib 64 | tee -a "$out"
    RAYON_NUM_THREADS=1 "$bin" bench dequant --mib 64 | tee -a "$out"
    ;;
  *) echo "unknown benchmark ${what}; use forward, train, analysis, matmul, browser or dequant" >&2; exit 2 ;;
esac
python3 - "$out" "$what" <<'PY'
import json, sys
# The tables compare runs of one kind; lines without a device (the peak, `bench matmul-cpu`'s
# candidates) were printed as they came.
rows = [r for r in (json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")) if "device" in r]
ref = next((r for r in rows if r["device"].startswith("pytorch") and "1 thread" in r["device"]),
           next((r for r in rows if r["device"].startswith("cpu")), rows[0]))
mib = lambda r: f"{r['peak_rss_bytes'] / 2**20:.0f}" if r.get("peak_rss_bytes") else "–"
if sys.argv[2] == "dequant":
    ref = {r["type"]: r for r in rows if r["device"].startswith("gguf-py")}
    print("\n| type | ours MB/s in | ours M values/s | gguf-py MB/s in | ours vs gguf-py |\n|---|---|---|---|---|")
    for r in rows:
        if not r["device"].startswith("gguf-py"):
            g = ref[r["type"]]
            print(f"| {r['type']} | {r['input_mb_per_second']:.0f} | {r['elements_per_second'] / 1e6:.0f} | "
                  f"{g['input_mb_per_second']:.0f} | {r['input_mb_per_second'] / g['input_mb_per_second']:.1f}x |")
elif sys.argv[2] == "matmul":
    print("\n| run | k × n | GFLOP/s |\n|---|---|---|")
    for r in rows:
        print(f"| {r['device']} | {r['k']} × {r['n']} | {r['gflops']:.1f} |")
elif sys.argv[2] == "analysis":
    print("\n| run | covariances s | eigh s (all, one at a time) | eigh by dim | eigh s side by side | peak MiB | covariances vs PyTorch 1 thread | eigh vs PyTorch 1 thread (side by side) |\n|---|---|---|---|---|---|---|---|")
    for r in rows:
        dims = ", ".join(f"{e['count']}×{e['dim']}: {e['seconds']:.1f}s" for e in r["eigh_by_dim"])
        side = r.get("eigh_side_by_side_seconds")
        best = side if side else r["eigh_seconds"]
        print(f"| {r['device']} | {r['covariance_seconds']:.1f} | {r['eigh_seconds']:.1f} | {dims} | "
              f"{f'{side:.1f}' if side else '–'} | {mib(r)} | "
              f"{ref['covariance_seconds'] / r['covariance_seconds']:.2f}x | {ref['eigh_seconds'] / best:.2f}x |")
else:
    ref_name = "PyTorch 1 thread" if ref["device"].startswith("pytorch") else "native cpu"
    for r in rows:
        if r["bench"] == "forward_split":
            print(f"\n{r['device']}, forward pass: building the graph on the calling thread "
                  f"{', '.join(f'{x:.3f}' for x in r['graph_seconds'])} s; awaiting the result "
                  f"{', '.join(f'{x:.3f}' for x in r['await_seconds'])} s")
    rows = [r for r in rows if "tokens_per_second" in r]
    for kind in sorted({r["bench"] for r in rows}):
        base = ref if ref["bench"] == kind else next(r for r in rows if r["bench"] == kind and r["device"].startswith(("pytorch", "cpu")))
        print(f"\n{kind}:\n\n| run | tokens/s | median s | peak MiB | speed vs {ref_name} |\n|---|---|---|---|---|")
        for r in rows:
            if r["bench"] == kind:
                print(f"| {r['device']} | {r['tokens_per_second']:.1f} | {r['median_seconds']:.3f} | {mib(r)} | {r['tokens_per_second'] / base['tokens_per_second']:.2f}x |")
PY
rm -f "$out"
