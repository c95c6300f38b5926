"""PyTorch + PEFT reference for `lora-null bench train`: one LoRA training step (r, all 7 target
modules, batch x tokens of language modelling, AdamW), float32 on the CPU, same model file and
text. Reports tokens/s over the median step after a warm-up step, and peak RSS.

Run (reference venv): python scripts/bench/torch_train.py --model assets/models/SmolLM2-135M-Instruct.Q4_1.gguf \
    --text assets/data/knowledge_prose.txt --rank 16 --batch 4 --tokens 128 --threads 1
"""
import argparse, json, os, resource, time

p = argparse.ArgumentParser()
p.add_argument("--model", required=True)
p.add_argument("--text", required=True)
p.add_argument("--rank", type=int, default=16)
p.add_argument("--batch", type=int, default=4)
p.add_argument("--tokens", type=int, default=128)
p.add_argument("--threads", type=int, default=1)
p.add_argument("--device", default="cpu", help="cpu, or cuda for the real-GPU benchmark (scripts/bench/gpu.sh)")
p.add_argument("--steps", type=int, default=3)
a = p.parse_args()

import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer

torch.set_num_threads(a.threads)
torch.manual_seed(0)
# A GGUF file, or a Hugging Face folder (the real-GPU benchmark builds one: scripts/bench/gpu.sh).
d, f = os.path.split(os.path.abspath(a.model))
src = dict(pretrained_model_name_or_path=a.model) if os.path.isdir(a.model) else dict(pretrained_model_name_or_path=d, gguf_file=f)
tok = AutoTokenizer.from_pretrained(**src)
model = AutoModelForCausalLM.from_pretrained(**src, dtype=torch.float32).to(a.device)
model = get_peft_model(model, LoraConfig(r=a.rank, lora_alpha=a.rank, lora_dropout=0.0, target_modules=[
    "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"], task_type="CAUSAL_LM"))
model.train()
ids = tok(open(a.text, encoding="utf-8").read())["input_ids"][: a.batch * a.tokens]
x = torch.tensor(ids, device=a.device).view(a.batch, a.tokens)
opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)


def step():
    t = time.perf_counter()
    out = model(input_ids=x, labels=x)
    out.loss.backward()
    torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
    opt.step()
    opt.zero_grad()
    out.loss.item()
    return time.perf_counter() - t


where = f"cuda ({torch.cuda.get_device_name()}), f32" if a.device == "cuda" else f"cpu, {a.threads} thread(s)"
warm = step()
times = sorted(step() for _ in range(max(1, a.steps)))
med = times[len(times) // 2]
print(json.dumps({"bench": "train", "device": f"pytorch {torch.__version__} + peft {where}",
                  "rank": a.rank, "batch": a.batch, "tokens": a.tokens, "warmup_seconds": warm, "seconds": times,
                  "median_seconds": med, "tokens_per_second": a.batch * a.tokens / med,
                  "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                  "peak_gpu_bytes": torch.cuda.max_memory_allocated() if a.device == "cuda" else None}))
