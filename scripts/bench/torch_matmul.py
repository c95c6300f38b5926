"""PyTorch reference for `lora-null bench matmul`: x (512 x k) @ w (k x n) at SmolLM2's shapes,
float32 on the CPU, median of 5 after a warm-up. Prints JSON lines with GFLOP/s.

Run: python scripts/bench/torch_matmul.py --threads 1
"""
import argparse, json, time

p = argparse.ArgumentParser()
p.add_argument("--threads", type=int, default=1)
p.add_argument("--rows", type=int, default=512)
a = p.parse_args()

import torch

torch.set_num_threads(a.threads)
for k, n in [(576, 576), (576, 1536), (1536, 576), (576, 49152)]:
    x, w = torch.randn(a.rows, k), torch.randn(k, n)
    (x @ w).sum().item()
    ts = []
    for _ in range(5):
        t = time.perf_counter()
        (x @ w).sum().item()
        ts.append(time.perf_counter() - t)
    med = sorted(ts)[2]
    print(json.dumps({"bench": "matmul", "device": f"pytorch {torch.__version__} cpu, {a.threads} thread(s)",
                      "m": a.rows, "k": k, "n": n, "median_seconds": med, "gflops": 2 * a.rows * k * n / med / 1e9}))
