"""PyTorch reference for `lora-null bench forward`: the same GGUF, the same text, the same
number of tokens, one forward pass (batch 1), float32 on the CPU.

Run (from the repository root, with the venv of scripts/requirements-reference.txt):
    python scripts/bench/torch_forward.py --model assets/models/SmolLM2-135M-Instruct.Q4_1.gguf \
        --text tests/fixtures/smollm2/ppl_text.txt --tokens 512 --threads 1
Prints one JSON object like the Rust benchmark.
"""
import argparse, json, os, statistics, time

p = argparse.ArgumentParser()
p.add_argument("--model", required=True)
p.add_argument("--text", required=True)
p.add_argument("--tokens", type=int, default=512)
p.add_argument("--threads", type=int, default=1)
p.add_argument("--repeats", type=int, default=3)
a = p.parse_args()

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

torch.set_num_threads(a.threads)
d, f = os.path.split(os.path.abspath(a.model))
tok = AutoTokenizer.from_pretrained(d, gguf_file=f)
model = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, dtype=torch.float32).eval()
text = open(a.text, encoding="utf-8").read()
ids = tok(text)["input_ids"]
while len(ids) < a.tokens:  # repeat the text if it is short, as the Rust side errors instead
    ids = ids + ids
ids = torch.tensor([ids[: a.tokens]])


def run():
    t = time.perf_counter()
    with torch.no_grad():
        model(ids).logits.sum().item()
    return time.perf_counter() - t


warm = run()
times = sorted(run() for _ in range(max(1, a.repeats)))
med = times[len(times) // 2]
print(json.dumps({"bench": "forward", "device": f"pytorch {torch.__version__} cpu, {a.threads} thread(s)",
                  "tokens": a.tokens, "warmup_seconds": warm, "seconds": times, "median_seconds": med,
                  "tokens_per_second": a.tokens / med}))
