#!/usr/bin/env python3
"""Runs llama.cpp itself with the LoRA adapter GGUFs that `lora-null export --gguf-adapter` writes, on the tiny
f32 GGUF fixtures, and compares its logits with `lora-null eval --adapter` on the same tokens (a reference check,
not part of CI).

For each architecture and method it trains a small adapter on the f32 GGUF (3 steps, rank 4, on
tests/fixtures/smollm2/ppl_text.txt), exports it against that GGUF, and decodes the first --seq-len tokens of the
text in llama.cpp (the C driver of check_llama_cpp_logits.py, with llama_adapter_lora_init +
llama_set_adapters_lora, scale 1) and in lora-null (eval --adapter --dump-logits, CPU). null and pissa change the
base weights at initialisation, so their adapter is stored at rank 2r ([A; A0], [B, -B0]) and must reproduce the
trained model on the ORIGINAL base: llama.cpp runs the unchanged f32 GGUF plus the adapter.

The tokens are the text's ids from the fixture's tokenizer.json (tests/fixtures/tiny/<arch>, which our GGUF
tokenizer equals); the same ids go to llama.cpp. The base row (no adapter) checks that both sides saw the same
tokens: a different id would move the logits by far more than the tolerance.

Columns: rel = max |llama.cpp - lora-null| / max |lora-null logit| (all positions, whole vocabulary);
effect = max |lora-null with adapter - lora-null base| / max |base logit|, how far the adapter moved the logits.
A check fails if rel > --rel-tol (5e-3, as the base check: llama.cpp's CPU path rounds through f16 in places,
~1e-3 relative) or if effect < --min-effect (2e-2, four times the tolerance: a no-op adapter, or one llama.cpp ignored,
cannot pass).

Results (llama.cpp 0.3.36 build, one thread):
    arch     method  tokens       rel   effect  ok
    qwen3    base        32  6.00e-04        -  ok
    qwen3    lora        32  7.03e-04    0.059  ok
    qwen3    null        32  6.64e-04    0.108  ok
    qwen3    pissa       32  6.32e-04    0.256  ok
    gemma2   base        32  1.01e-03        -  ok
    gemma2   lora        32  8.36e-04    0.079  ok
    gemma2   null        32  6.43e-04    0.222  ok
    gemma2   pissa       32  7.91e-04    0.343  ok
    gemma3   base        32  1.10e-03        -  ok
    gemma3   lora        32  9.71e-04    0.190  ok
    gemma3   null        32  8.80e-04    0.546  ok
    gemma3   pissa       32  9.41e-04    0.579  ok
    phi3     base        32  8.11e-04        -  ok
    phi3     lora        32  8.61e-04    0.069  ok
    phi3     null        32  7.38e-04    0.108  ok
    phi3     pissa       32  8.23e-04    0.204  ok

(base: no adapter, so the tolerance's room is llama.cpp's rounding alone; effect ranges from 6% (qwen3 lora) to
58% (gemma3 pissa) of the logit range, 12x to 116x the tolerance.) phi3's f32 fixture is run by llama.cpp as a copy
with another general.name: llama.cpp keys a token-attribute fix on the name "phi3" and that fix looks up tokens the
tiny vocabulary lacks (check_llama_cpp_logits.loadable_gguf); its fused attn_qkv / ffn_up take the adapter's
qkv_proj / gate_up_proj factors.

    ~/.cache/lora-null/refvenv/bin/python scripts/check_llama_cpp_lora.py [--archs qwen3,gemma2] [--methods lora]
Exits non-zero if any row fails.
"""
import argparse, json, os, subprocess, sys, tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from check_llama_cpp_logits import ROOT, TINY, build_driver, loadable_gguf, longrope_min_tokens, run_driver  # noqa: E402

TEXT = ROOT / "tests" / "fixtures" / "smollm2" / "ppl_text.txt"
ARCHS = ("qwen3", "gemma2", "gemma3", "phi3")
METHODS = ("lora", "null", "pissa")


def lora_null(binary: str, *args: str) -> str:
    out = subprocess.run([binary, *args], capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"lora-null {' '.join(args)}: exited {out.returncode}\n{out.stderr[-2000:]}")
    return out.stdout


def our_logits(binary: str, gguf: Path, adapter: Path | None, seq_len: int, work: Path) -> np.ndarray:
    from safetensors.numpy import load_file

    dump = work / "logits.safetensors"
    lora_null(binary, "eval", "--model", str(gguf), "--text", str(TEXT), "--seq-len", str(seq_len), "--device", "cpu",
              "--dump-logits", str(dump), *(["--adapter", str(adapter)] if adapter else []))
    return load_file(str(dump))["logits"]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--archs", default=",".join(ARCHS))
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--seq-len", type=int, default=32)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--lr", default="1e-2")
    ap.add_argument("--rel-tol", type=float, default=5e-3)
    ap.add_argument("--min-effect", type=float, default=2e-2)
    ap.add_argument("--bin", default=os.path.join(os.environ.get("CARGO_TARGET_DIR", os.path.expanduser("~/.cache/lora-null/target")), "debug", "lora-null"))
    a = ap.parse_args()
    if not os.access(a.bin, os.X_OK):
        sys.exit(f"no lora-null binary at {a.bin}: cargo build --bin lora-null (or pass --bin)")
    from tokenizers import Tokenizer

    failed = False
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        driver = build_driver(tmp)
        for arch in a.archs.split(","):
            gguf = TINY / f"{arch}-gguf" / f"{arch}-f32.gguf"
            ids = Tokenizer.from_file(str(TINY / arch / "tokenizer.json")).encode(TEXT.read_text(encoding="utf-8")).ids
            ids = ids[: a.seq_len]
            base = our_logits(a.bin, gguf, None, a.seq_len, tmp)
            if base.shape[0] != len(ids):
                sys.exit(f"{arch}: lora-null's first window has {base.shape[0]} tokens, the tokenizer gave {len(ids)}")
            # lora-null trains, exports and evaluates on the fixture itself; llama.cpp runs it too, or for phi3 a
            # copy that differs in general.name only (see loadable_gguf)
            llama_gguf = loadable_gguf(gguf, tmp)
            if len(ids) < longrope_min_tokens(llama_gguf):
                sys.exit(f"{arch}: --seq-len {a.seq_len} is too short for llama.cpp's choice of LongRoPE factors")
            scale = float(np.abs(base).max())
            got = run_driver(driver, llama_gguf, ids)
            rows.append((arch, "base", float(np.abs(got - base).max()) / scale, None))
            for method in a.methods.split(","):
                out = tmp / f"{arch}-{method}"
                lora_null(a.bin, "train", "--model", str(gguf), "--data", str(TEXT), "--calib", str(TEXT),
                          "--method", method, "--rank", "4", "--lr", a.lr, "--batch", "2", "--max-len", "64",
                          "--steps", str(a.steps), "--samples", "8", "--seq-len", "32", "--device", "cpu",
                          "--out", str(out))
                lora_null(a.bin, "export", "--model", str(gguf), "--adapter", str(out),
                          "--gguf-adapter", str(out) + ".gguf", "--device", "cpu")
                ours = our_logits(a.bin, gguf, out, a.seq_len, tmp)
                got = run_driver(driver, llama_gguf, ids, lora=Path(str(out) + ".gguf"))
                s = float(np.abs(ours).max())
                rows.append((arch, method, float(np.abs(got - ours).max()) / s, float(np.abs(ours - base).max()) / scale))
        print(f"{'arch':8} {'method':7} {'tokens':>6} {'rel':>9} {'effect':>8}  ok")
        for arch, method, rel, effect in rows:
            ok = rel <= a.rel_tol and (effect is None or effect >= a.min_effect)
            failed |= not ok
            eff = "-" if effect is None else f"{effect:.3f}"
            print(f"{arch:8} {method:7} {a.seq_len:>6} {rel:9.2e} {eff:>8}  {'ok' if ok else 'FAIL'}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
