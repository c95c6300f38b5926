"""PyTorch reference for `lora-null bench analysis`: the same windows (token ids written by the
Rust side), covariance accumulation with forward hooks on every linear input (X / |max X|, f32,
batch 1 per window, as the LoRA-Null/CorDA code), then torch.linalg.eigh (f64) of every
covariance. One thread by default.

Run: python scripts/bench/torch_analysis.py --model assets/models/SmolLM2-135M-Instruct.Q4_1.gguf \
    --windows /tmp/windows.json --threads 1
"""
import argparse, json, os, resource, time
from collections import defaultdict

p = argparse.ArgumentParser()
p.add_argument("--model", required=True)
p.add_argument("--windows", required=True)
p.add_argument("--threads", type=int, default=1)
a = p.parse_args()

import torch
from transformers import AutoModelForCausalLM

torch.set_num_threads(a.threads)
d, f = os.path.split(os.path.abspath(a.model))
model = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, dtype=torch.float32).eval()
windows = json.load(open(a.windows))
covs = {}
sites = {"q_proj": "attn_input", "o_proj": "attn_output", "gate_proj": "mlp_input", "down_proj": "mlp_hidden"}


def hook(key):
    def fn(module, inputs, output):
        x = inputs[0].reshape(-1, inputs[0].shape[-1]).float()
        x = x / x.max().abs()
        c = x.T @ x
        covs[key] = covs[key] + c if key in covs else c
    return fn


for name, module in model.named_modules():
    leaf = name.rsplit(".", 1)[-1]
    if leaf in sites and ".layers." in name:
        layer = int(name.split(".layers.")[1].split(".")[0])
        module.register_forward_hook(hook((layer, sites[leaf])))
t0 = time.perf_counter()
with torch.no_grad():
    for w in windows:
        model.model(torch.tensor([w]))
cov_s = time.perf_counter() - t0
t1 = time.perf_counter()
by_dim = defaultdict(lambda: [0, 0.0])
for key, c in covs.items():
    t = time.perf_counter()
    torch.linalg.eigh((c / len(windows)).double())
    by_dim[c.shape[0]][0] += 1
    by_dim[c.shape[0]][1] += time.perf_counter() - t
eig_s = time.perf_counter() - t1
print(json.dumps({"bench": "analysis", "device": f"pytorch {torch.__version__} cpu, {a.threads} thread(s)",
                  "windows": len(windows), "seq_len": len(windows[0]), "covariance_seconds": cov_s, "eigh_seconds": eig_s,
                  "eigh_by_dim": [{"dim": k, "count": v[0], "seconds": v[1]} for k, v in sorted(by_dim.items())],
                  "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))
