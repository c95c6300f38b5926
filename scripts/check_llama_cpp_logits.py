#!/usr/bin/env python3
"""Runs llama.cpp itself on the tiny GGUF fixtures that llama.cpp's converter wrote (qwen3, gemma2, gemma3, phi3) and
compares its logits with the transformers reference in their reference*.json (a reference check, not part of CI).

It shows that llama.cpp reads these files as the same models transformers runs: the GGUF loader's reading of
the metadata (Gemma's sliding-window pattern, local RoPE base, soft-caps, 1/sqrt(head_dim) query scale, the +1 on
norms) is llama.cpp's. A C driver is built against llama.cpp's static libraries (scripts/llama-cpp-tools.sh
builds them); it decodes each case's ids in one batch (KV cache in f32) and writes every position's logits.
llama.cpp's CPU path rounds through f16 in places (e.g. GELU's lookup table), so it agrees with transformers to
~1e-3 relative, for qwen3 (7e-4) as for gemma2 (9e-4) and gemma3 (1.1e-3, f16 file 1.5e-3). On these fixtures,
in transformers, dropping the window moves the logits by ~100% of their range, Gemma 2's attention soft-cap by
3%, its final soft-cap by 21%, a query scalar of 64 instead of 32 by 20-36%, and Gemma 3's local RoPE base
1e6 instead of 1e4 by 15%: the 5e-3 tolerance tells each of those apart. phi3 (8e-4, f16 1.3e-3) is compared on
its 24-token case only: llama.cpp picks the LongRoPE long factors by context size (padded to 256), transformers by
sequence length (long only past original_context_length = 16), so its 1- and 7-token cases differ by 27% there
(longrope_min_tokens); and llama.cpp runs a copy of it with general.name changed (loadable_gguf says why).
scripts/check_llama_cpp_lora.py runs this driver with our exported adapter GGUFs.

    ~/.cache/lora-null/refvenv/bin/python scripts/check_llama_cpp_logits.py
Exits non-zero if any file differs by more than --rel-tol (relative to the largest |logit|).
"""
import argparse, json, os, shutil, subprocess, sys, tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "tests" / "fixtures" / "tiny"
CACHE = Path(os.environ.get("LORA_NULL_CACHE", Path.home() / ".cache" / "lora-null")) / "llama.cpp"
FILES = [(f"{a}-gguf/{a}-{k}.gguf", f"{a}-gguf/{'reference.json' if k == 'f32' else 'reference_f16.json'}")
         for a in ("qwen3", "gemma2", "gemma3", "phi3") for k in ("f32", "f16")]
DRIVER = r"""
#include "llama.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
/* driver MODEL.gguf [--lora ADAPTER.gguf] ID... : the f32 logits of every position, to stdout */
int main(int argc, char **argv) {
    int first = 2;
    const char *lora = NULL;
    if (argc > 3 && strcmp(argv[2], "--lora") == 0) { lora = argv[3]; first = 4; }
    if (argc <= first) return 2;
    int n = argc - first;
    llama_backend_init();
    struct llama_model *model = llama_model_load_from_file(argv[1], llama_model_default_params());
    if (!model) return 3;
    struct llama_context_params cp = llama_context_default_params();
    cp.n_ctx = 256; cp.n_batch = 256; cp.n_ubatch = 256; cp.n_threads = 1; cp.n_threads_batch = 1;
    cp.type_k = GGML_TYPE_F32; cp.type_v = GGML_TYPE_F32;
    struct llama_context *ctx = llama_init_from_model(model, cp);
    if (!ctx) return 4;
    if (lora) {
        struct llama_adapter_lora *ad = llama_adapter_lora_init(model, lora);
        float scale = 1.0f;
        if (!ad) return 6;
        if (llama_set_adapters_lora(ctx, &ad, 1, &scale) != 0) return 7;
    }
    struct llama_batch b = llama_batch_init(n, 0, 1);
    for (int i = 0; i < n; i++) {
        b.token[i] = atoi(argv[i + first]); b.pos[i] = i; b.n_seq_id[i] = 1; b.seq_id[i][0] = 0; b.logits[i] = 1;
    }
    b.n_tokens = n;
    if (llama_decode(ctx, b) != 0) return 5;
    int nv = llama_vocab_n_tokens(llama_model_get_vocab(model));
    for (int i = 0; i < n; i++) fwrite(llama_get_logits_ith(ctx, i), sizeof(float), nv, stdout);
    return 0;
}
"""


def build_driver(work: Path) -> Path:
    src = sorted(CACHE.glob("llama_cpp_python-*/vendor/llama.cpp"))
    build = sorted(CACHE.glob("build-*"))
    if not src or not build or not (build[-1] / "src" / "libllama.a").is_file():
        sys.exit(f"no llama.cpp build under {CACHE}: run scripts/llama-cpp-tools.sh first")
    src, build = src[-1], build[-1]
    (work / "driver.c").write_text(DRIVER)
    libs = [build / "src" / "libllama.a"] + [build / "ggml" / "src" / f"{n}.a" for n in ("libggml", "libggml-cpu", "libggml-base")]
    cmd = [os.environ.get("CC", "cc"), "-O2", f"-I{src / 'include'}", f"-I{src / 'ggml' / 'include'}", str(work / "driver.c")]
    cmd += [str(p) for p in libs] + ["-lstdc++", "-lm", "-lpthread", "-fopenmp", "-o", str(work / "driver")]
    subprocess.run(cmd, check=True)
    return work / "driver"


def loadable_gguf(gguf: Path, work: Path) -> Path:
    """`gguf`, or for the tiny Phi-3 fixtures a copy that llama.cpp can load.

    llama.cpp's vocabulary loader (src/llama-vocab.cpp, "Handle per token attributes") sets token attributes by
    model NAME: for any general.name containing "phi3"/"phi-3" it looks up "</s>", "<unk>", "<s>" and
    "<|endoftext|>" with token_to_id.at(), which throws ("unordered_map::at") on the tiny fixture: its GPT-2 BPE
    vocabulary (384 tokens) has <|endoftext|> but none of </s>, <unk>, <s> (the real Phi-3 vocabulary, Llama's
    SentencePiece one, has them). Those attributes only change how special tokens are stripped when TEXT is
    tokenized; the driver takes ids. So the copy differs in general.name only ("Phi3" -> "tiny", same length,
    written in place with gguf-py), the weights and every other field are the fixture's.
    """
    from gguf import GGUFReader

    name = GGUFReader(gguf).fields["general.name"]
    if not any(k in name.contents().lower() for k in ("phi3", "phi-3")):
        return gguf
    copy = work / gguf.name
    shutil.copyfile(gguf, copy)
    r = GGUFReader(copy, "r+")
    f = r.fields["general.name"]
    value = f.parts[f.data[0]]
    value[:] = np.frombuffer(("tiny" + "-" * len(value))[: len(value)].encode(), dtype=np.uint8)
    r.data.flush()
    del r
    return copy


def longrope_min_tokens(gguf: Path) -> int:
    """Cases llama.cpp can run as transformers does: LongRoPE (Phi-3) picks the long factors when the sequence is
    longer than rope.scaling.original_context_length in transformers, but when the CONTEXT is in llama.cpp (which
    pads it to 256: llama-context.cpp), so only cases longer than that length compare (1 for other models)."""
    from gguf import GGUFReader

    r = GGUFReader(gguf)
    arch = r.fields["general.architecture"].contents()
    orig = r.fields.get(f"{arch}.rope.scaling.original_context_length")
    has_long = any(t.name == "rope_factors_long.weight" for t in r.tensors)
    return int(orig.contents()) + 1 if orig is not None and has_long else 1


def run_driver(driver: Path, gguf: Path, ids, lora: Path | None = None) -> np.ndarray:
    """llama.cpp's logits [len(ids), vocab] for `ids` on `gguf`, with the LoRA adapter GGUF `lora` if given."""
    args = [str(driver), str(gguf)] + (["--lora", str(lora)] if lora else []) + [str(int(i)) for i in ids]
    out = subprocess.run(args, capture_output=True)
    if out.returncode != 0:
        what = f"{gguf}" + (f" + {lora}" if lora else "")
        sys.exit(f"{what}: llama.cpp driver exited {out.returncode}\n{out.stderr.decode(errors='replace')[-2000:]}")
    return np.frombuffer(out.stdout, dtype=np.float32).reshape(len(ids), -1)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rel-tol", type=float, default=5e-3)
    a = ap.parse_args()
    failed = False
    with tempfile.TemporaryDirectory() as tmp:
        driver = build_driver(Path(tmp))
        for gguf, ref in FILES:
            path = loadable_gguf(TINY / gguf, Path(tmp))
            cases = [c for c in json.loads((TINY / ref).read_text())["cases"] if len(c["ids"]) >= longrope_min_tokens(path)]
            worst = scale = 0.0
            for case in cases:
                got = run_driver(driver, path, case["ids"])
                want = np.array(case["logits"], dtype=np.float32)
                worst = max(worst, float(np.abs(got - want).max()))
                scale = max(scale, float(np.abs(want).max()))
            rel = worst / scale
            failed |= rel > a.rel_tol
            print(json.dumps({"gguf": gguf, "cases": len(cases), "max_abs_logit_diff": worst, "relative": rel, "ok": rel <= a.rel_tol}))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
