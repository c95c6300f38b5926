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
p.add_argument("--device", default="cpu", help="cpu, or cuda for the real-GPU benchmark (scripts/bench/gpu.sh)")
p.add_argument("--repeats", type=int, default=3)
a = p.parse_args()

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

torch.set_num_threads(a.threads)
# A GGUF file, or a Hugging Face folder (the real-GPU benchmark builds one: scripts/bench/gpu.sh).
d, f = os.path.split(os.path.abspath(a.model))
src = dict(pretrained_model_name_or_path=a.model) if os.path.isdir(a.model) else dict(pretrained_model_name_or_path=d, gguf_file=f)
tok = AutoTokenizer.from_pretrained(**src)
model = AutoModelForCausalLM.from_pretrained(**src, dtype=torch.float32).to(a.device).eval()
text = open(a.text, encoding="utf-8").read()
ids = tok(text)["input_ids"]
while len(ids) < a.tokens:  # repeat the text if it is short, as the Rust side errors instead
    ids = ids + ids
ids = torch.tensor([ids[: a.tokens]], device=a.device)


def run():
    t = time.perf_counter()
    with torch.no_grad():
        model(ids).logits.sum().item()
    return time.perf_counter() - t


where = f"cuda ({torch.cuda.get_device_name()}), f32" if a.device == "cuda" else f"cpu, {a.threads} thread(s)"
warm = run()
times = sorted(run() for _ in range(max(1, a.repeats)))
med = times[len(times) // 2]
print(json.dumps({"bench": "forward", "device": f"pytorch {torch.__version__} {where}",
                  "tokens": a.tokens, "warmup_seconds": warm, "seconds": times, "median_seconds": med,
                  "tokens_per_second": a.tokens / med}))
