"""Checks that an adapter exported by `lora-null train` works in Hugging Face PEFT as it is.

It loads the ORIGINAL base model (a GGUF file, or a Hugging Face folder) in transformers (float32), applies the
adapter with
`PeftModel.from_pretrained(base, adapter_dir)`, and compares, with `lora-null eval --adapter`:
  - the logits of the first window of the text (max absolute difference), and
  - the perplexity over non-overlapping windows (same definition as `lora-null eval`).
It also reports how far the adapter moved the base (so a no-op adapter cannot pass unnoticed).

Run (reference venv: pip install -r scripts/requirements-reference.txt):
    python scripts/check_peft.py --model assets/models/SmolLM2-135M-Instruct.Q4_1.gguf \
        --adapter out/null --text tests/fixtures/smollm2/ppl_text.txt --seq-len 128
    python scripts/check_peft.py --model tests/fixtures/tiny/phi3 --adapter out/phi3-null --text ... --seq-len 64
or, for the tiny Gemma fixtures (whose GGUFs transformers cannot configure: it maps no soft-cap, query scalar or
layer pattern from GGUF metadata), on the Hugging Face folder:
    lora-null train --model tests/fixtures/tiny/gemma3 --data tests/fixtures/smollm2/ppl_text.txt \
        --calib tests/fixtures/smollm2/ppl_text.txt --method null --rank 4 --steps 3 --seq-len 32 --samples 8 \
        --device cpu --out /tmp/g3-null
    python scripts/check_peft.py --model tests/fixtures/tiny/gemma3 --adapter /tmp/g3-null \
        --text tests/fixtures/smollm2/ppl_text.txt --seq-len 64
One thread, deterministic. Exits non-zero if the logits differ by more than --tol.
"""
import argparse, json, math, os, subprocess, sys, tempfile

p = argparse.ArgumentParser()
p.add_argument("--model", required=True)
p.add_argument("--adapter", required=True)
p.add_argument("--text", required=True)
p.add_argument("--seq-len", type=int, default=128)
p.add_argument("--tol", type=float, default=1e-3)
p.add_argument("--bin", default=os.path.join(os.environ.get("CARGO_TARGET_DIR", os.path.expanduser("~/.cache/lora-null/target")), "debug", "lora-null"))
a = p.parse_args()

import torch
from peft import PeftModel
from safetensors.numpy import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

torch.set_num_threads(1)
if os.path.isdir(a.model):
    tok = AutoTokenizer.from_pretrained(a.model)
    base = AutoModelForCausalLM.from_pretrained(a.model, dtype=torch.float32, attn_implementation="eager").eval()
else:
    d, f = os.path.split(os.path.abspath(a.model))
    tok = AutoTokenizer.from_pretrained(d, gguf_file=f)
    base = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, dtype=torch.float32).eval()
ids = tok(open(a.text, encoding="utf-8").read())["input_ids"]
first = torch.tensor([ids[: a.seq_len]])
with torch.no_grad():
    base_logits = base(first).logits[0].numpy().copy()
model = PeftModel.from_pretrained(base, a.adapter).eval()
cfg = json.load(open(os.path.join(a.adapter, "adapter_config.json")))


def ppl(m):
    nll, n = 0.0, 0
    with torch.no_grad():
        for s in range(0, len(ids), a.seq_len):
            w = ids[s : s + a.seq_len]
            if len(w) < 2:
                continue
            x = torch.tensor([w])
            lp = torch.log_softmax(m(x).logits[0, :-1].double(), -1)
            nll -= lp.gather(1, x[0, 1:, None]).sum().item()
            n += len(w) - 1
    return math.exp(nll / n)


with torch.no_grad():
    peft_logits = model(first).logits[0].numpy()
peft_ppl = ppl(model)
with tempfile.TemporaryDirectory() as tmp:
    dump = os.path.join(tmp, "logits.safetensors")
    out = subprocess.run([a.bin, "eval", "--model", a.model, "--adapter", a.adapter, "--text", a.text,
                          "--seq-len", str(a.seq_len), "--device", "cpu", "--dump-logits", dump],
                         check=True, capture_output=True, text=True)
    ours = json.loads(out.stdout)
    our_logits = load_file(dump)["logits"]
diff = float(abs(our_logits - peft_logits).max())
moved = float(abs(peft_logits - base_logits).max())
report = {
    "adapter": a.adapter, "r": cfg["r"], "lora_alpha": cfg["lora_alpha"], "init_lora_weights": cfg.get("init_lora_weights"),
    "peft_perplexity": peft_ppl, "lora_null_perplexity": ours["perplexity"],
    "perplexity_rel_diff": abs(peft_ppl - ours["perplexity"]) / peft_ppl,
    "logits_max_abs_diff": diff, "adapter_moved_logits_by": moved, "tokens": ours["tokens"],
}
print(json.dumps(report, indent=1))
sys.exit(0 if diff <= a.tol and report["perplexity_rel_diff"] < 5e-3 else 1)
