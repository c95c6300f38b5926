"""Writes a model with a real config and tokenizer but random weights, as a Hugging Face folder
(float32 safetensors). Speed does not depend on the weights, and the real SmolLM2 file is too
large to send to the lent GPU machine, so scripts/bench/gpu.sh benchmarks this stand-in there.

Usage: python scripts/bench/random_model.py SHAPE_DIR OUT_DIR
(SHAPE_DIR holds config.json and tokenizer files, e.g. written by AutoConfig/AutoTokenizer
from the GGUF with save_pretrained.)
"""
import shutil, sys

import torch
from transformers import AutoConfig, AutoModelForCausalLM

shape, out = sys.argv[1], sys.argv[2]
torch.manual_seed(0)
config = AutoConfig.from_pretrained(shape)
model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
model.save_pretrained(out)
for f in ("tokenizer.json", "tokenizer_config.json"):
    shutil.copy(f"{shape}/{f}", f"{out}/{f}")
print(f"random {config.model_type} model, {sum(p.numel() for p in model.parameters()) / 1e6:.1f} M parameters, in {out}")
