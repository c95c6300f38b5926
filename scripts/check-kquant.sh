#!/usr/bin/env bash
# SmolLM2-135M re-quantised by llama.cpp's llama-quantize (Q4_K_M, Q5_K_M, Q6_K, Q3_K_M, IQ4_XS;
# made by `scripts/make_reference.py --only smollm2-kquant` into ~/.cache/lora-null/smollm2-kquant/)
# through `lora-null eval`, against transformers' perplexity of the same files
# (tests/fixtures/smollm2/kquant_reference.json). A reference check, not part of CI: the files
# are 90–140 MB each. Prints a table; exits non-zero when a perplexity is off by 0.5% or more.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/lora-null/target}"
dir="${SMOLLM2_KQUANT_DIR:-$HOME/.cache/lora-null/smollm2-kquant}"
cargo build --bin lora-null 2>&1 | tail -1
python3 - "$CARGO_TARGET_DIR/debug/lora-null" "$dir" <<'PY'
import json, subprocess, sys
bin, folder = sys.argv[1], sys.argv[2]
ref = json.load(open("tests/fixtures/smollm2/kquant_reference.json"))
worst = 0.0
print("| type | tensor types | transformers ppl | lora-null ppl | relative difference |\n|---|---|---|---|---|")
for name, t in ref["types"].items():
    want = t["transformers"]
    model = f"{folder}/{t['file']}" if name != "Q4_1" else f"assets/models/{t['file']}"
    out = subprocess.run([bin, "eval", "--model", model, "--text", "tests/fixtures/smollm2/ppl_text.txt",
                          "--seq-len", str(want["seq_len"]), "--device", "cpu"],
                         capture_output=True, text=True, check=True).stdout
    got = json.loads(out)["perplexity"]
    rel = abs(got / want["perplexity"] - 1)
    worst = max(worst, rel)
    counts = ", ".join(f"{k} {v}" for k, v in sorted(t["type_counts"].items()))
    print(f"| {name} | {counts} | {want['perplexity']:.5f} | {got:.5f} | {rel:.1e} |")
sys.exit(0 if worst < 5e-3 else 1)
PY
