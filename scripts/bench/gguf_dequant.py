"""The reference side of `scripts/bench.sh dequant`: gguf-py's `gguf.quants.dequantize` (numpy, the
decoder transformers uses for GGUF files) on the same tiled reference blocks as
`lora-null bench dequant`. Prints one JSON line per type."""

import argparse
import json
import time
from pathlib import Path

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType
from gguf.quants import dequantize

ap = argparse.ArgumentParser()
ap.add_argument("--blocks", default="tests/fixtures/quants")
ap.add_argument("--mib", type=int, default=64)
ap.add_argument("--repeats", type=int, default=3)
args = ap.parse_args()
ref = json.loads((Path(args.blocks) / "reference.json").read_text())
for name, info in ref["types"].items():
    qtype = GGMLQuantizationType[name]
    blocks = (Path(args.blocks) / info["file"]).read_bytes()
    copies = -(-(args.mib << 20) // len(blocks))
    data = np.frombuffer(blocks * copies, dtype=np.uint8)
    best = float("inf")
    for _ in range(args.repeats):
        t = time.perf_counter()
        out = dequantize(data, qtype)
        best = min(best, time.perf_counter() - t)
    elems, _ = GGML_QUANT_SIZES[qtype]
    print(json.dumps({"bench": "dequant", "device": "gguf-py (numpy)", "type": name,
                      "input_mib": data.size / 2**20, "seconds": best,
                      "input_mb_per_second": data.size / 1e6 / best, "elements_per_second": out.size / best}))
