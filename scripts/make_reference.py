#!/usr/bin/env python3
"""Generate the golden reference fixtures in tests/fixtures/ with the real PyTorch/transformers/gguf stack.

How to run (from the repository root):

    python3 -m venv ~/.cache/lora-null/venv
    ~/.cache/lora-null/venv/bin/pip install -r scripts/requirements-reference.txt
    scripts/fetch-model.sh                      # SmolLM2-135M-Instruct.Q4_1.gguf -> assets/models/
    ~/.cache/lora-null/venv/bin/python scripts/make_reference.py            # everything
    ~/.cache/lora-null/venv/bin/python scripts/make_reference.py --only tiny   # one part: smollm2 | tiny | gguf |
                                                                               # init | train | peft | quants | qwen3 |
                                                                               # phi3 | gemma | kquant | smollm2-kquant | quantize

(`--only gguf`, `init`, `train` and `peft` read the tiny `llama` model written by `--only tiny`.)

The script runs on the CPU with ONE thread (torch.set_num_threads(1), OMP/MKL/RAYON = 1, tokenizers
parallelism off), all weights and activations in float32 (the train part repeats its run in float64 only to
measure the f32 drift). It is deterministic: every random draw comes
from a fixed seed, nothing depends on time or on the machine, so re-running it rewrites byte-identical
files (idempotent). Paths are derived from this file's location, not from the working directory.

Outputs
  tests/fixtures/smollm2/reference.json      tokenizer / chat template / logits / perplexity / greedy
  tests/fixtures/smollm2/ppl_text.txt        the perplexity text (hand-written, not generated here)
  tests/fixtures/tiny/tokenizer.json         tiny byte-level BPE tokenizer (vocab 384), copied into each model dir
  tests/fixtures/tiny/{llama,llama3,qwen2,mistral}/   config.json, model.safetensors, tokenizer*.json, reference.json
  tests/fixtures/tiny/llama-gguf/            {f32,f16,q8_0,q4_0,q4_1}.gguf + reference_<type>.json
  tests/fixtures/tiny/init/reference.json    LoRA inits on the tiny llama: calibration covariances, PiSSA / OLoRA /
                                             CorDA (PEFT itself), MiLoRA / LoRA-Null (torch, docs algorithm.md)
  tests/fixtures/tiny/train/reference.json   4 AdamW steps of LoRA (r 4, all 7 linears, random A and B) on the tiny
                                             llama: padded masked batch, loss, grad norm + clipping, warmup-cosine lr,
                                             initial and final factors, and the f32-vs-f64 drift of that run
  tests/fixtures/tiny/peft/                  adapter_config.json + adapter_model.safetensors written by PEFT's
                                             save_pretrained (r 4, one alpha_pattern and one rank_pattern entry,
                                             random A and B) and reference.json: logits with and without the adapter
  tests/fixtures/quants/<TYPE>.bin           random blocks of each GGML quant type (Q4_0 Q4_1 Q5_0 Q5_1 Q8_0 Q2_K Q3_K
                                             Q4_K Q5_K Q6_K IQ4_NL IQ4_XS) with finite f16 scales, and reference.json:
                                             gguf.quants.dequantize of each, as hex of the little-endian float32 bytes
  tests/fixtures/tiny/qwen3/                 tiny random Qwen3 (q/k norms, tied embeddings, Qwen3-0.6B chat template;
                                             --only qwen3): config.json, model.safetensors, tokenizer*.json,
                                             reference.json (+ chat renderings)
  tests/fixtures/tiny/qwen3-gguf/            qwen3-{f32,f16}.gguf by llama.cpp's convert_hf_to_gguf.py (from the
                                             llama-cpp-python sdist) + reference.json / reference_f16.json
  tests/fixtures/tiny/phi3/                  tiny random Phi-3 (fused qkv_proj / gate_up_proj, partial rotary 0.75, LongRoPE
                                             with a pre-training context of 16, tied embeddings; --only phi3): config.json,
                                             model.safetensors, tokenizer*.json, reference.json (+ both inv_freq sets)
  tests/fixtures/tiny/phi3-gguf/             phi3-{f32,f16}.gguf by llama.cpp's convert_hf_to_gguf.py + reference.json /
                                             reference_f16.json: transformers' Phi3ForCausalLM with each file's tensors
                                             (transformers' own GGUF loader drops partial rotary and LongRoPE)
  tests/fixtures/tiny/{gemma2,gemma3}/       --only gemma: tiny random Gemma 2 (2 layers: sliding, global; soft-caps 4 / 5)
                                             and Gemma 3 text (6 layers: 5 sliding, 1 global; q/k norms, local RoPE base
                                             1e4, global 1e6 with linear scaling 8), sliding window 4, tied embeddings,
                                             a tiny Gemma-style sentencepiece BPE tokenizer.json (vocab 512, byte
                                             fallback): config.json, model.safetensors, tokenizer*.json, reference.json
                                             (+ "tokenizer": ids of sample texts)
  tests/fixtures/tiny/{gemma2,gemma3}-gguf/  {arch}-{f32,f16}.gguf by llama.cpp's convert_hf_to_gguf.py (norms stored
                                             +1, tokenizer.ggml.model "llama") + reference.json / reference_f16.json
                                             (transformers on the GGUF's own weights)
  tests/fixtures/tiny/llama-kquant/          --only kquant: a tiny random llama shaped for K-quants (hidden 256, intermediate
                                             512, head_dim 64: every row a multiple of 256; tied embeddings) written as
                                             f32 GGUF (kept in ~/.cache/lora-null/kquant-work), then llama.cpp's own
                                             llama-quantize -> {Q4_K_M,Q5_K_M,Q3_K_M,Q2_K,IQ4_XS,IQ4_NL,Q5_0,Q5_1}.gguf,
                                             and reference.json: each file's ggml type per tensor, transformers' logits
                                             (gguf_file=..., gguf-py dequantisation) and perplexity, llama-perplexity's
                                             estimate and the same windows in transformers
  tests/fixtures/smollm2/kquant_reference.json  --only smollm2-kquant (not run by default): SmolLM2 Q4_1 requantised
                                             by llama-quantize --allow-requantize to Q4_K_M Q5_K_M Q6_K Q3_K_M IQ4_XS (in
                                             ~/.cache/lora-null/smollm2-kquant, not committed): sha256, tensor types,
                                             perplexity of ppl_text.txt by transformers and by llama-perplexity
  tests/fixtures/quantize/                   --only quantize: input.bin (112 blocks of 256 float32: weight-like, then
                                             NaN / inf / extremes), {Q8_0,Q4_K,Q6_K}.bin = llama.cpp's reference
                                             quantisers (ggml_quantize_chunk, no imatrix, by a C driver built at run time
                                             against the llama.cpp build's libggml-base.a), reference.json (sha256s, kinds)
  (kquant, smollm2-kquant and quantize need llama.cpp's tools: run scripts/llama-cpp-tools.sh first, or set
  LLAMA_CPP_BIN.)
"""

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "RAYON_NUM_THREADS"):
    os.environ[_var] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")

import argparse  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import random  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)
torch.set_num_interop_threads(1)
torch.use_deterministic_algorithms(True)

import gguf  # noqa: E402
import safetensors  # noqa: E402
import tokenizers  # noqa: E402
import transformers  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors, trainers  # noqa: E402
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer  # noqa: E402

transformers.logging.set_verbosity_error()

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"
SMOL_DIR = ROOT / "assets" / "models"
SMOL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOL_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
TINY = FIXTURES / "tiny"
TINY_GGUF = TINY / "llama-gguf"

SEED = 20240607
EOS_ID = 2
ADD_SPECIAL_TOKENS = True  # transformers' default for tokenizer(text); the GGUF tokenizer adds no BOS either way


def seed_everything(seed: int = SEED) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# ----------------------------------------------------------------------------------------------
# small helpers
# ----------------------------------------------------------------------------------------------


def f32(x) -> float:
    """A float32 value as the shortest decimal that round-trips through float32 (parsed as f32 = same bits)."""
    return float(str(np.float32(x)))


def f32_list(t) -> list:
    a = t.detach().to(torch.float32).cpu().numpy() if isinstance(t, torch.Tensor) else np.asarray(t, np.float32)
    return [f32(v) for v in a.astype(np.float32).reshape(-1)]


def f32_rows(t) -> list:
    return [f32_list(row) for row in t]


def write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    path.write_text(text + "\n", encoding="utf-8")
    print(f"  wrote {path.relative_to(ROOT)} ({path.stat().st_size} bytes)")


def write_hf_folder(d: Path, cfg: dict, tk: Tokenizer, tok_config: dict) -> None:
    """A fresh Hugging Face folder: config.json, tokenizer.json and tokenizer_config.json."""
    if d.exists():
        shutil.rmtree(d)
    d.mkdir(parents=True)
    (d / "config.json").write_text(json.dumps(cfg, indent=2) + "\n", encoding="utf-8")
    tk.save(str(d / "tokenizer.json"))
    (d / "tokenizer_config.json").write_text(json.dumps(tok_config, indent=2, ensure_ascii=False) + "\n", "utf-8")


def reload_checked(d: Path, model, cases, label: str = ""):
    """The model transformers loads back from d (config.json + model.safetensors), checked to give the saved
    model's logits on `cases`: the reference is what a user of the folder gets."""
    loaded = AutoModelForCausalLM.from_pretrained(str(d), dtype=torch.float32, attn_implementation="eager")
    loaded.eval()
    assert_float32(loaded)
    for ids in cases:
        diff = (forward_logits(loaded, ids) - forward_logits(model, ids)).abs().max().item()
        assert diff <= 1e-5, (label, "reload changed logits", diff)
    return loaded


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def versions() -> dict:
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "tokenizers": tokenizers.__version__,
        "gguf": version_of("gguf"),
        "safetensors": safetensors.__version__,
        "numpy": np.__version__,
        "dtype": "float32",
        "threads": torch.get_num_threads(),
    }


def version_of(dist: str) -> str:
    from importlib.metadata import version

    return version(dist)


@torch.no_grad()
def forward_logits(model, ids) -> torch.Tensor:
    """[len(ids), vocab] float32 logits for one sequence, no cache, plain causal attention."""
    out = model(input_ids=torch.tensor([list(ids)], dtype=torch.long), use_cache=False)
    logits = out.logits[0]
    assert logits.dtype == torch.float32, logits.dtype
    return logits


@torch.no_grad()
def greedy(model, ids, max_new_tokens, stop_at_eos):
    """Pure argmax decoding, recomputing the full prefix each step (no cache, no penalties)."""
    seq = list(ids)
    new = []
    stopped = False
    for _ in range(max_new_tokens):
        nxt = int(torch.argmax(forward_logits(model, seq)[-1]).item())
        new.append(nxt)
        seq.append(nxt)
        if stop_at_eos and nxt == EOS_ID:
            stopped = True
            break
    return new, stopped


def assert_float32(model) -> None:
    for name, p in model.named_parameters():
        assert p.dtype == torch.float32, (name, p.dtype)


# ----------------------------------------------------------------------------------------------
# A. SmolLM2-135M-Instruct (Q4_1 GGUF) through transformers
# ----------------------------------------------------------------------------------------------

TOKENIZATION_CASES = [
    "The quick brown fox jumps over the lazy dog.",
    "In 2024, 3.14159 and 1,000,000 items cost $42.",
    "Café naïve — 東京 🚀",
    "a  b\t\tc\n\n\nd   ",
    'def greet(name):\n    """Say hello."""\n    return f"Hello, {name}!"  # done\n',
    " leading space",
    " ",
    "Don't stop; it's <|im_start|>user and we'll see.",
]

LOGIT_PROMPTS = ["The capital of France is", "def fibonacci(n):", "1, 2, 3, 4,"]
PROBE_IDS = list(range(0, 49152, 768))
TOP_K = 50


def load_smollm2():
    path = SMOL_DIR / SMOL_FILE
    if not path.exists():
        sys.exit(f"missing {path}: run scripts/fetch-model.sh first")
    sha = sha256_file(path)
    assert sha == SMOL_SHA256, f"{path} sha256 {sha} != {SMOL_SHA256}"
    tok = AutoTokenizer.from_pretrained(str(SMOL_DIR), gguf_file=SMOL_FILE)
    model = AutoModelForCausalLM.from_pretrained(
        str(SMOL_DIR), gguf_file=SMOL_FILE, dtype=torch.float32, attn_implementation="eager"
    )
    model.eval()
    assert_float32(model)
    return tok, model, sha


def encode(tok, text):
    return list(tok(text, add_special_tokens=ADD_SPECIAL_TOKENS)["input_ids"])


def make_smollm2():
    print("[smollm2] loading", SMOL_FILE)
    seed_everything()
    tok, model, sha = load_smollm2()
    cfg = model.config
    print(
        f"  config: layers={cfg.num_hidden_layers} hidden={cfg.hidden_size} heads={cfg.num_attention_heads}"
        f"/{cfg.num_key_value_heads} head_dim={getattr(cfg, 'head_dim', None)} vocab={cfg.vocab_size}"
        f" tie={cfg.tie_word_embeddings} eps={cfg.rms_norm_eps} rope={getattr(cfg, 'rope_parameters', None)}"
    )
    backend = json.loads(tok.backend_tokenizer.to_str())
    meta = versions() | {
        "model_file": SMOL_FILE,
        "model_sha256": sha,
        "tokenizer_class": type(tok).__name__,
        "tokenizer_pre_tokenizer": backend.get("pre_tokenizer"),
        "tokenizer_normalizer": backend.get("normalizer"),
        "tokenizer_decoder": backend.get("decoder"),
        "tokenizer_post_processor": backend.get("post_processor"),
        "config": {
            "num_hidden_layers": cfg.num_hidden_layers,
            "hidden_size": cfg.hidden_size,
            "intermediate_size": cfg.intermediate_size,
            "num_attention_heads": cfg.num_attention_heads,
            "num_key_value_heads": cfg.num_key_value_heads,
            "head_dim": getattr(cfg, "head_dim", None),
            "vocab_size": cfg.vocab_size,
            "rms_norm_eps": cfg.rms_norm_eps,
            "rope_parameters": getattr(cfg, "rope_parameters", None),
            "tie_word_embeddings": cfg.tie_word_embeddings,
            "max_position_embeddings": cfg.max_position_embeddings,
        },
        "attn_implementation": "eager",
        "add_special_tokens": ADD_SPECIAL_TOKENS,
    }

    # --- tokenization
    tokenization = []
    for text in TOKENIZATION_CASES:
        ids = encode(tok, text)
        plain = list(tok(text, add_special_tokens=False)["input_ids"])
        assert ids == plain, ("add_special_tokens changes the ids", text, ids, plain)
        decoded = tok.decode(ids, skip_special_tokens=False)
        tokenization.append(
            {
                "text": text,
                "add_special_tokens": ADD_SPECIAL_TOKENS,
                "ids": ids,
                "tokens": tok.convert_ids_to_tokens(ids),
                "decoded": decoded,
            }
        )

    # --- chat template
    chats = [
        [{"role": "user", "content": "What is the capital of France?"}],
        [
            {"role": "system", "content": "You are a terse assistant. Answer in one word."},
            {"role": "user", "content": "Name a primary colour."},
        ],
    ]
    chat_out = []
    for messages in chats:
        text = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        ids = list(tok(text, add_special_tokens=False)["input_ids"])
        templ = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True)
        assert list(templ["input_ids"]) == ids, "apply_chat_template(tokenize=True) disagrees"
        chat_out.append(
            {"messages": messages, "add_generation_prompt": True, "add_special_tokens": False, "text": text, "ids": ids}
        )

    # --- logits
    logits_out = []
    for text in LOGIT_PROMPTS:
        ids = encode(tok, text)
        assert len(ids) <= 12, (text, len(ids))
        logits = forward_logits(model, ids)
        positions = []
        for row in logits:
            top = torch.topk(row, TOP_K)
            r64 = row.to(torch.float64)
            positions.append(
                {
                    "top_ids": [int(i) for i in top.indices],
                    "top_values": f32_list(top.values),
                    "logsumexp": float(torch.logsumexp(r64, 0)),
                    "mean": float(r64.mean()),
                    "l2": float(torch.linalg.vector_norm(r64)),
                    "probe_ids": PROBE_IDS,
                    "probe_values": f32_list(row[PROBE_IDS]),
                }
            )
        logits_out.append({"text": text, "ids": ids, "positions": positions})

    # --- perplexity
    seq_len = 128
    ppl_path = FIXTURES / "smollm2" / "ppl_text.txt"
    ppl_text = ppl_path.read_text(encoding="utf-8")
    ids = encode(tok, ppl_text)
    windows = [ids[i : i + seq_len] for i in range(0, len(ids), seq_len)]
    windows = [w for w in windows if len(w) >= 2]
    nll_sum, scored, used, per_window = 0.0, 0, 0, []
    for w in windows:
        logp = torch.log_softmax(forward_logits(model, w).to(torch.float64), dim=-1)
        tgt = torch.tensor(w[1:])
        nll = float(-logp[:-1].gather(1, tgt[:, None]).sum())
        nll_sum += nll
        scored += len(w) - 1
        used += len(w)
        per_window.append({"len": len(w), "nll_sum": nll})
    perplexity = {
        "text_file": "ppl_text.txt",
        "text_sha256": hashlib.sha256(ppl_text.encode("utf-8")).hexdigest(),
        "text_is_raw_file_contents": True,
        "add_special_tokens": ADD_SPECIAL_TOKENS,
        "seq_len": seq_len,
        "total_ids": len(ids),
        "tokens": used,
        "scored": scored,
        "nll_sum": nll_sum,
        "perplexity": math.exp(nll_sum / scored),
        "windows": per_window,
    }

    # --- greedy
    greedy_out = []
    for prompt, chat in [("The capital of France is", False), ("What is the capital of France?", True)]:
        if chat:
            text = tok.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=False)
            ids = list(tok(text, add_special_tokens=False)["input_ids"])
        else:
            ids = encode(tok, prompt)
        new, stopped = greedy(model, ids, 16, stop_at_eos=True)
        # cross-check against transformers' own (KV-cached) greedy generate
        gen = model.generate(
            torch.tensor([ids]), max_new_tokens=16, do_sample=False, eos_token_id=EOS_ID, pad_token_id=EOS_ID,
            repetition_penalty=None, top_k=None, top_p=None, temperature=None,
        )[0, len(ids):].tolist()
        assert gen == new, ("generate disagrees with argmax loop", gen, new)
        text_ids = new[:-1] if stopped else new
        greedy_out.append(
            {
                "prompt": prompt,
                "chat": chat,
                "ids": ids,
                "new_ids": new,
                "text": tok.decode(text_ids, skip_special_tokens=False),
                "max_new_tokens": 16,
                "stopped_at_eos": stopped,
                "note": "new_ids includes the eos id 2 as its last element when stopped_at_eos; text excludes it",
            }
        )

    ref = {
        "meta": meta,
        "tokenization": tokenization,
        "chat": chat_out,
        "logits": logits_out,
        "perplexity": perplexity,
        "greedy": greedy_out,
    }
    write_json(FIXTURES / "smollm2" / "reference.json", ref)
    print(f"  perplexity: {perplexity['perplexity']:.6f} over {scored} scored / {used} tokens in {len(windows)} windows")
    for g in greedy_out:
        print(f"  greedy chat={g['chat']}: {g['prompt']!r} -> {g['text']!r} (eos={g['stopped_at_eos']})")
    return ref


# ----------------------------------------------------------------------------------------------
# B. tiny random-weight models
# ----------------------------------------------------------------------------------------------

TINY_CORPUS = [
    "The river rises in the hills and runs to the sea. Along its banks there are towns, farms, mills and bridges.",
    "A small model is useful for tests: it loads in a moment, runs on any machine and its numbers are easy to check.",
    "Numbers such as 1, 22, 333 and 4096 appear in tables; prices like $3.50 or 12.75 euros appear in shop windows.",
    "def add(a, b):\n    return a + b\n\nfor i in range(10):\n    print(add(i, i * 2))\n",
    "fn main() {\n    let xs: Vec<u32> = (0..8).collect();\n    println!(\"{:?}\", xs);\n}\n",
    "Questions and answers: What is the capital of France? The capital of France is Paris.",
    "The weather was cold in the morning, warm at noon, and windy in the evening; the sky stayed clear all day.",
    "Café, naïve, façade and résumé keep their accents. 東京 and 大阪 are cities in Japan. Emoji: 🚀🙂.",
    "<|im_start|>user\nHello there!<|im_end|>\n<|im_start|>assistant\nHi! How can I help you today?<|im_end|>\n",
    "Lists: apples, pears, plums, cherries; tools: hammer, saw, drill, chisel; colours: red, green, blue, yellow.",
]
TINY_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
TINY_VOCAB = 384
TINY_SHAPE = dict(
    num_hidden_layers=2,
    hidden_size=64,
    intermediate_size=128,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=16,
    max_position_embeddings=256,
)
TINY_CASE_LENGTHS = [1, 7, 24]


def build_tiny_tokenizer() -> Tokenizer:
    def train() -> Tokenizer:
        tk = Tokenizer(models.BPE())
        tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
        tk.decoder = decoders.ByteLevel()
        tk.post_processor = processors.ByteLevel(trim_offsets=False)
        ppl = (FIXTURES / "smollm2" / "ppl_text.txt").read_text(encoding="utf-8")
        corpus = TINY_CORPUS + [p for p in ppl.split("\n\n") if p.strip()]
        trainer = trainers.BpeTrainer(
            vocab_size=TINY_VOCAB,
            min_frequency=2,
            special_tokens=[AddedToken(t, normalized=False, special=True) for t in TINY_SPECIALS],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        tk.train_from_iterator(corpus, trainer=trainer)
        return tk

    tk = train()
    assert tk.to_str() == train().to_str(), "BPE training is not deterministic"
    assert tk.get_vocab_size() == TINY_VOCAB, tk.get_vocab_size()
    for i, t in enumerate(TINY_SPECIALS):
        assert tk.token_to_id(t) == i, (t, tk.token_to_id(t))
    return tk


def tiny_chat_template() -> str:
    r = gguf.GGUFReader(str(SMOL_DIR / SMOL_FILE))
    return r.fields["tokenizer.chat_template"].contents()


def tiny_configs() -> dict:
    common = dict(
        vocab_size=TINY_VOCAB,
        hidden_act="silu",
        initializer_range=0.02,
        attention_dropout=0.0,
        bos_token_id=1,
        eos_token_id=2,
        use_cache=True,
        torch_dtype="float32",
        **TINY_SHAPE,
    )
    llama = dict(
        architectures=["LlamaForCausalLM"],
        model_type="llama",
        attention_bias=False,
        mlp_bias=False,
        pretraining_tp=1,
        rms_norm_eps=1e-5,
        rope_theta=10000.0,
        rope_scaling=None,
        tie_word_embeddings=True,
        **common,
    )
    llama3 = dict(
        llama,
        rope_theta=500000.0,
        # original_max_position_embeddings 64 (not 32): with head_dim 16 and theta 5e5 the wavelengths are
        # 6.3, 32.4, 167, ... so 64 puts one frequency in each llama3 regime (kept / smoothed / divided by 8).
        rope_scaling={
            "rope_type": "llama3",
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 64,
        },
        tie_word_embeddings=False,
    )
    qwen2 = dict(
        architectures=["Qwen2ForCausalLM"],
        model_type="qwen2",
        rms_norm_eps=1e-6,
        rope_theta=1000000.0,
        rope_scaling=None,
        tie_word_embeddings=False,
        use_sliding_window=False,
        sliding_window=None,
        max_window_layers=2,
        **common,
    )
    mistral = dict(
        architectures=["MistralForCausalLM"],
        model_type="mistral",
        rms_norm_eps=1e-5,
        rope_theta=10000.0,
        sliding_window=None,
        tie_word_embeddings=False,
        **common,
    )
    return {"llama": llama, "llama3": llama3, "qwen2": qwen2, "mistral": mistral}


def tiny_case_ids():
    rng = np.random.default_rng(SEED)
    cases = [[int(x) for x in rng.integers(3, TINY_VOCAB, size=n)] for n in TINY_CASE_LENGTHS]
    prompt = [int(x) for x in rng.integers(3, TINY_VOCAB, size=5)]
    return cases, prompt


def init_tiny_weights(model, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters(), key=lambda kv: kv[0]):
            n = torch.randn(p.shape, generator=g, dtype=torch.float32)
            if "norm" in name:
                p.copy_(1.0 + 0.1 * n)
            elif name.endswith(".bias"):
                p.copy_(0.1 * n)
            elif "embed_tokens" in name:
                p.copy_(0.3 * n)
            else:
                p.copy_(0.1 * n)


def tiny_reference(model, cases, prompt, meta) -> dict:
    out_cases = [{"ids": ids, "logits": f32_rows(forward_logits(model, ids))} for ids in cases]
    new, _ = greedy(model, prompt, 10, stop_at_eos=False)
    return {
        "meta": meta,
        "cases": out_cases,
        "greedy": {"ids": prompt, "new_ids": new, "stop_at_eos": False, "eos_in_new_ids": EOS_ID in new},
    }


def default_inv_freq(theta: float, dim: int) -> torch.Tensor:
    return 1.0 / (theta ** (torch.arange(0, dim, 2, dtype=torch.int64).to(torch.float32) / dim))


def make_tiny():
    print("[tiny] training tokenizer")
    seed_everything()
    tk = build_tiny_tokenizer()
    TINY.mkdir(parents=True, exist_ok=True)
    tk.save(str(TINY / "tokenizer.json"))
    chat_template = tiny_chat_template()
    tok_config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": "<|im_start|>",
        "eos_token": "<|im_end|>",
        "unk_token": "<|endoftext|>",
        "pad_token": "<|im_end|>",
        "add_bos_token": False,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": TINY_SHAPE["max_position_embeddings"],
        "chat_template": chat_template,
    }
    cases, prompt = tiny_case_ids()
    sample_texts = TOKENIZATION_CASES + TINY_CORPUS[:3]
    results = {}
    for idx, (name, cfg) in enumerate(tiny_configs().items()):
        print(f"[tiny] {name}")
        d = TINY / name
        if d.exists():
            shutil.rmtree(d)
        d.mkdir(parents=True)
        (d / "config.json").write_text(json.dumps(cfg, indent=2) + "\n", encoding="utf-8")
        shutil.copyfile(TINY / "tokenizer.json", d / "tokenizer.json")
        (d / "tokenizer_config.json").write_text(json.dumps(tok_config, indent=2, ensure_ascii=False) + "\n", "utf-8")

        config = AutoConfig.from_pretrained(str(d))
        torch.manual_seed(SEED + idx)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32, attn_implementation="eager")
        model.eval()
        init_tiny_weights(model, SEED + 100 + idx)
        sd = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
        if cfg["tie_word_embeddings"]:
            assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
            sd.pop("lm_head.weight")
        save_file(dict(sorted(sd.items())), str(d / "model.safetensors"), metadata={"format": "pt"})

        loaded = reload_checked(d, model, cases, name)

        theta = cfg["rope_theta"]
        inv = loaded.model.rotary_emb.inv_freq.detach().clone()
        base = default_inv_freq(theta, TINY_SHAPE["head_dim"])
        rope_info = {"rope_parameters": loaded.config.rope_parameters, "inv_freq": f32_list(inv)}
        rope_info["attention_scaling"] = float(loaded.model.rotary_emb.attention_scaling)
        if name == "llama3":
            assert not torch.allclose(inv, base), "llama3 rope scaling changed nothing"
            kept = torch.isclose(inv, base, rtol=1e-6, atol=0)
            divided = torch.isclose(inv, base / 8.0, rtol=1e-6, atol=0)
            smoothed = ~(kept | divided)
            print(f"  llama3 inv_freq kept={int(kept.sum())} smoothed={int(smoothed.sum())} divided={int(divided.sum())}")
            assert kept.any() and smoothed.any() and divided.any()
            rope_info["inv_freq_unscaled"] = f32_list(base)
        else:
            assert torch.allclose(inv, base, rtol=1e-6, atol=0), (name, inv, base)

        # tokenizer files load in transformers' generic fast tokenizer and agree with the tokenizers library.
        # (AutoTokenizer would pick Qwen2Tokenizer for model_type qwen2 -- transformers 5 lists qwen2 in
        # MODELS_WITH_INCORRECT_HUB_TOKENIZER_CLASS and swaps in Qwen2's split regex -- so it is not used
        # here; tokenizer.json is the authority for these fixtures.)
        htok = transformers.PreTrainedTokenizerFast.from_pretrained(str(d))
        for text in sample_texts:
            assert list(htok(text)["input_ids"]) == tk.encode(text).ids, (name, text)
        auto_tok_class = type(AutoTokenizer.from_pretrained(str(d))).__name__

        meta = versions() | {"arch": cfg["architectures"][0], "model_type": cfg["model_type"], "seed": SEED + 100 + idx}
        meta |= {"attn_implementation": "eager", "rope": rope_info, "auto_tokenizer_class": auto_tok_class}
        ref = tiny_reference(loaded, cases, prompt, meta)
        write_json(d / "reference.json", ref)
        print(f"  greedy {prompt} -> {ref['greedy']['new_ids']} (eos in new ids: {ref['greedy']['eos_in_new_ids']})")
        results[name] = ref
    (TINY / "tokenizer_config.json").write_text(json.dumps(tok_config, indent=2, ensure_ascii=False) + "\n", "utf-8")
    return results


# ----------------------------------------------------------------------------------------------
# C. GGUF versions of the tiny llama
# ----------------------------------------------------------------------------------------------

GGUF_TYPES = ["f32", "f16", "q8_0", "q4_0", "q4_1"]
Q = gguf.GGMLQuantizationType
FILE_TYPES = {
    "f32": gguf.LlamaFileType.ALL_F32,
    "f16": gguf.LlamaFileType.MOSTLY_F16,
    "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0,
    "q4_0": gguf.LlamaFileType.MOSTLY_Q4_0,
    "q4_1": gguf.LlamaFileType.MOSTLY_Q4_1,
}


def llama_permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp convert_hf_to_gguf.py LlamaModel.permute (HF rotate-half layout -> GGML interleaved)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def hf_to_gguf_tensors(sd: dict, cfg: dict) -> list:
    """[(gguf name, float32 array)] in llama.cpp naming, q/k permuted."""
    out = [("token_embd.weight", sd["model.embed_tokens.weight"])]
    names = {
        "input_layernorm": "attn_norm",
        "self_attn.q_proj": "attn_q",
        "self_attn.k_proj": "attn_k",
        "self_attn.v_proj": "attn_v",
        "self_attn.o_proj": "attn_output",
        "post_attention_layernorm": "ffn_norm",
        "mlp.gate_proj": "ffn_gate",
        "mlp.up_proj": "ffn_up",
        "mlp.down_proj": "ffn_down",
    }
    for i in range(cfg["num_hidden_layers"]):
        for hf, gg in names.items():
            w = sd[f"model.layers.{i}.{hf}.weight"]
            if gg == "attn_q":
                w = llama_permute(w, cfg["num_attention_heads"])
            elif gg == "attn_k":
                w = llama_permute(w, cfg["num_key_value_heads"])
            out.append((f"blk.{i}.{gg}.weight", w))
    out.append(("output_norm.weight", sd["model.norm.weight"]))
    if not cfg["tie_word_embeddings"]:
        out.append(("output.weight", sd["lm_head.weight"]))
    return out


def tensor_qtype(kind: str, name: str, arr: np.ndarray):
    if arr.ndim == 1:
        return Q.F32
    if kind == "f32":
        return Q.F32
    if kind == "f16":
        return Q.F16
    if kind == "q8_0":
        return Q.Q8_0
    if name == "token_embd.weight":
        return Q.Q8_0
    return {"q4_0": Q.Q4_0, "q4_1": Q.Q4_1}[kind]


def write_tiny_gguf(path: Path, kind: str, tensors: list, cfg: dict, tk_json: dict, chat_template: str) -> dict:
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_type(gguf.GGUFType.MODEL)
    w.add_name("Tiny Llama Test")
    w.add_context_length(cfg["max_position_embeddings"])
    w.add_embedding_length(cfg["hidden_size"])
    w.add_block_count(cfg["num_hidden_layers"])
    w.add_feed_forward_length(cfg["intermediate_size"])
    w.add_head_count(cfg["num_attention_heads"])
    w.add_head_count_kv(cfg["num_key_value_heads"])
    w.add_rope_freq_base(cfg["rope_theta"])
    w.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
    w.add_file_type(FILE_TYPES[kind])
    w.add_vocab_size(cfg["vocab_size"])
    w.add_rope_dimension_count(cfg["head_dim"])
    # tokenizer, the way convert_hf_to_gguf.py writes a gpt2-style BPE vocab
    vocab = tk_json["model"]["vocab"]
    tokens = [None] * len(vocab)
    for t, i in vocab.items():
        tokens[i] = t
    assert None not in tokens and len(tokens) == cfg["vocab_size"]
    special = {a["id"] for a in tk_json["added_tokens"] if a["special"]}
    token_types = [gguf.TokenType.CONTROL if i in special else gguf.TokenType.NORMAL for i in range(len(tokens))]
    merges = [m if isinstance(m, str) else " ".join(m) for m in tk_json["model"]["merges"]]
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("smollm")
    w.add_token_list(tokens)
    w.add_token_types(token_types)
    w.add_token_merges(merges)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    w.add_pad_token_id(2)
    w.add_add_bos_token(False)
    w.add_add_space_prefix(False)
    w.add_chat_template(chat_template)
    if kind != "f32":
        w.add_quantization_version(gguf.GGML_QUANT_VERSION)
    types = {}
    for name, arr in tensors:
        arr = np.ascontiguousarray(arr, dtype=np.float32)
        qt = tensor_qtype(kind, name, arr)
        types[name] = qt.name
        if qt == Q.F32:
            w.add_tensor(name, arr)
        elif qt == Q.F16:
            w.add_tensor(name, arr.astype(np.float16))
        else:
            w.add_tensor(name, gguf.quants.quantize(arr, qt), raw_dtype=qt)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return types


def make_gguf():
    print("[gguf] tiny llama -> GGUF")
    seed_everything()
    src = TINY / "llama"
    if not (src / "model.safetensors").exists():
        sys.exit("tests/fixtures/tiny/llama is missing: run with --only tiny first")
    from safetensors.numpy import load_file

    sd = load_file(str(src / "model.safetensors"))
    cfg = json.loads((src / "config.json").read_text())
    tk_json = json.loads((src / "tokenizer.json").read_text(encoding="utf-8"))
    chat_template = json.loads((src / "tokenizer_config.json").read_text(encoding="utf-8"))["chat_template"]
    tensors = hf_to_gguf_tensors(sd, cfg)
    tk = Tokenizer.from_file(str(src / "tokenizer.json"))

    st_model = AutoModelForCausalLM.from_pretrained(str(src), dtype=torch.float32, attn_implementation="eager")
    st_model.eval()
    cases, prompt = tiny_case_ids()
    st_ref = json.loads((src / "reference.json").read_text())
    assert [c["ids"] for c in st_ref["cases"]] == cases, "tiny llama reference.json is stale; rerun --only tiny"

    if TINY_GGUF.exists():
        shutil.rmtree(TINY_GGUF)
    TINY_GGUF.mkdir(parents=True)
    summary = {}
    for kind in GGUF_TYPES:
        path = TINY_GGUF / f"{kind}.gguf"
        types = write_tiny_gguf(path, kind, tensors, cfg, tk_json, chat_template)
        try:
            model = AutoModelForCausalLM.from_pretrained(
                str(TINY_GGUF), gguf_file=path.name, dtype=torch.float32, attn_implementation="eager"
            )
        except Exception as e:  # noqa: BLE001
            print(f"  !! transformers cannot load {path.name}: {type(e).__name__}: {e}; skipping its reference")
            summary[kind] = None
            continue
        model.eval()
        assert_float32(model)
        assert model.config.tie_word_embeddings, "tied GGUF must load tied"
        # transformers' GGUF tokenizer must match the tiny tokenizer.json
        gtok = AutoTokenizer.from_pretrained(str(TINY_GGUF), gguf_file=path.name)
        for text in TOKENIZATION_CASES + TINY_CORPUS[:3]:
            assert list(gtok(text)["input_ids"]) == tk.encode(text).ids, (kind, text)

        max_diff = max(
            (forward_logits(model, ids) - forward_logits(st_model, ids)).abs().max().item() for ids in cases
        )
        # max weight error after the loader reverses the permutation and dequantises
        gsd, ssd = model.state_dict(), st_model.state_dict()
        w_err = max((gsd[k] - ssd[k]).abs().max().item() for k in ssd)
        if kind == "f32":
            assert w_err == 0.0, f"f32.gguf weights differ from safetensors by {w_err} (permutation wrong?)"
            assert max_diff <= 1e-5, f"f32.gguf logits differ from safetensors by {max_diff}"
        print(f"  {kind}: max |logits - safetensors| = {max_diff:.3e}, max |weight diff| = {w_err:.3e}")
        meta = versions() | {
            "arch": "LlamaForCausalLM",
            "source": "tests/fixtures/tiny/llama",
            "gguf_file": path.name,
            "gguf_sha256": sha256_file(path),
            "tensor_types": types,
            "max_abs_logit_diff_vs_safetensors": max_diff,
            "max_abs_weight_diff_vs_safetensors": w_err,
            "attn_implementation": "eager",
        }
        ref = tiny_reference(model, cases, prompt, meta)
        write_json(TINY_GGUF / f"reference_{kind}.json", ref)
        summary[kind] = max_diff
    return summary


# ----------------------------------------------------------------------------------------------
# D. LoRA initialisations on the tiny llama (docs: algorithm.md §1 LoRA-Null, §2 the others, §4 PEFT)
# ----------------------------------------------------------------------------------------------

INIT_DIR = TINY / "init"
INIT_RANK = 4
INIT_ALPHAS = [4, 8]  # s = alpha / r = 1 and 2
INIT_WINDOW_LEN = 48
INIT_CALIB = (6, SEED + 300)  # (windows, numpy seed)
INIT_HELDOUT = (4, SEED + 400)
INIT_FIRST_ID = 3  # ids drawn uniformly from [3, vocab): no special tokens
INIT_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
# One activation statistic per (layer, site): q/k/v read one input, gate/up another.
INIT_SITES = {
    "q_proj": "attn_input",
    "k_proj": "attn_input",
    "v_proj": "attn_input",
    "o_proj": "attn_output",
    "gate_proj": "mlp_input",
    "up_proj": "mlp_input",
    "down_proj": "mlp_hidden",
}
INIT_RECON_TOL = 1e-5  # ‖residual + s·B A − W‖_F / ‖W‖_F, all f32 maths
INIT_LOGIT_TOL = 1e-4  # initialised vs base model, one held-out window (observed <= 1e-5: f32 rounding)
# Size budget (reference.json < 3 MB): a residual matrix is stored in full for ONE module (the GQA k_proj,
# out < in) at scale 2 only, where W − s·B A differs from W − B A; every module of every init carries the
# residual's Frobenius norm. All 14 modules x 12 inits in full would be ~10 MB of JSON, and the residual is
# W − s·B A with W in tests/fixtures/tiny/llama/model.safetensors and B, A stored here.
INIT_FULL_RESIDUAL = ["model.layers.0.self_attn.k_proj"]
INIT_FULL_RESIDUAL_ALPHA = 8
# f64 matrices (covariances, P) are written with 8 significant digits (relative 5e-9): they come from f32
# activations, which another implementation reproduces to ~1e-6 at best, and the 17-digit form would double
# their size. Scalars (eigenvalues, energies, norms, errors) keep full f64 precision.
F64_MATRIX_DIGITS = 8


def f64(x) -> float:
    """A float64 value, written by json as its shortest round-trip decimal."""
    return float(x)


def f64_rows(t: torch.Tensor, digits: int = F64_MATRIX_DIGITS) -> list:
    """A f64 matrix as rows of JSON numbers rounded to `digits` significant digits."""
    return [[float(f"{v:.{digits}g}") for v in row] for row in t.detach().to(torch.float64).tolist()]


def init_module_keys(n_layers: int) -> list:
    keys = []
    for i in range(n_layers):
        for proj in INIT_TARGETS:
            block = "self_attn" if proj in ("q_proj", "k_proj", "v_proj", "o_proj") else "mlp"
            keys.append(f"model.layers.{i}.{block}.{proj}")
    return keys


def init_site_of(key: str) -> str:
    """'model.layers.1.mlp.down_proj' -> '1.mlp_hidden'."""
    parts = key.split(".")
    return f"{parts[2]}.{INIT_SITES[parts[-1]]}"


def init_windows(n: int, seed: int, vocab: int) -> list:
    rng = np.random.default_rng(seed)
    return rng.integers(INIT_FIRST_ID, vocab, size=(n, INIT_WINDOW_LEN), dtype=np.int64).tolist()


def load_tiny_llama():
    model = AutoModelForCausalLM.from_pretrained(str(TINY / "llama"), dtype=torch.float32, attn_implementation="eager")
    model.eval()
    assert_float32(model)
    return model


@torch.no_grad()
def run_windows(model, windows) -> None:
    """One forward pass per window: batch 1, full attention mask, no cache."""
    for w in windows:
        ids = torch.tensor([w], dtype=torch.long)
        model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=False)


@torch.no_grad()
def window_logits(model, ids) -> torch.Tensor:
    t = torch.tensor([list(ids)], dtype=torch.long)
    return model(input_ids=t, attention_mask=torch.ones_like(t), use_cache=False).logits[0]


@torch.no_grad()
def site_covariances(model, windows) -> dict:
    """C = (1/N) Σ_windows X̃ᵀX̃ per (layer, site), X̃ = X / |max(X)| (signed max over the window's [tokens, d_in]
    input, divided in f32 as PEFT corda.py does), products and sum in f64. algorithm.md §1.2."""
    acc, seen, handles = {}, {}, []

    def hook_for(key):
        site = init_site_of(key)

        def hook(module, inputs, output):
            x = inputs[0].detach().reshape(-1, module.in_features).to(torch.float32)
            x = x / x.max().abs()
            if site in seen:  # q/k/v (gate/up) must see the very same input
                assert torch.equal(seen[site], x), (key, "input differs from its site's first module")
                return
            seen[site] = x
            x64 = x.to(torch.float64)
            acc[site] = acc.get(site, 0) + x64.t() @ x64

        return hook

    for key in init_module_keys(model.config.num_hidden_layers):
        handles.append(model.get_submodule(key).register_forward_hook(hook_for(key)))
    for w in windows:
        seen.clear()
        run_windows(model, [w])
    for h in handles:
        h.remove()
    return {site: c / len(windows) for site, c in acc.items()}


def null_basis(cov: torch.Tensor, r: int, top: bool = False) -> torch.Tensor:
    """[d, r] eigenvectors of the r smallest (top: largest) eigenvalues of the f64 covariance, columns in
    descending eigenvalue order (= torch.linalg.svd(C).U[:, -r:] of the original code, up to column signs)."""
    _, vecs = torch.linalg.eigh(cov)  # ascending
    return (vecs[:, -r:] if top else vecs[:, :r]).flip(1)


def energy_fraction(p: torch.Tensor, cov: torch.Tensor) -> float:
    """trace(Pᵀ C P) / trace(C) in f64."""
    return f64(torch.trace(p.t() @ cov @ p) / torch.trace(cov))


def milora_factors(w: torch.Tensor, r: int, s: float):
    """MiLoRA (algorithm.md §2): f32 thin SVD of W, the LAST r triplets, S/s, then PEFT pissa_init's √ split."""
    u, sv, vh = torch.linalg.svd(w, full_matrices=False)
    ur, sr, vhr = u[:, -r:], sv[-r:] / s, vh[-r:]
    a = torch.diag(torch.sqrt(sr)) @ vhr
    b = ur @ torch.diag(torch.sqrt(sr))
    return a, b, w - s * b @ a


def lora_null_factors(w: torch.Tensor, p: torch.Tensor, r: int, s: float):
    """LoRA-Null (algorithm.md §1.3-1.4), f32 from W: T = W P Pᵀ, thin SVD of T, first r triplets, Ŝ/s,
    U_p = Û √Ŝ (lora_B), D = √Ŝ V̂ᵀ (lora_A), residual W − s·U_p D."""
    p32 = p.to(torch.float32)
    t = w @ p32 @ p32.t()
    u, sv, vh = torch.linalg.svd(t, full_matrices=False)
    ur, sr, vhr = u[:, :r], sv[:r] / s, vh[:r]
    a = torch.diag(torch.sqrt(sr)) @ vhr
    b = ur @ torch.diag(torch.sqrt(sr))
    return a, b, w - s * b @ a


def corda_damp(cov: torch.Tensor) -> float:
    """The damping δ of PEFT corda.collect_eigens_for_layer: 0.01, doubled until ‖C_f C_f⁻¹ − I‖_F < 0.05."""
    cov = cov.float()
    damp = 0.01
    while True:
        fixed = cov + torch.diag(torch.ones(cov.size(0)) * torch.mean(torch.diag(cov)) * damp)
        if torch.dist(fixed @ torch.linalg.inv(fixed), torch.eye(cov.size(0))).item() < 0.05:
            return damp
        damp *= 2


def lora_config(alpha: int, init, **kw):
    from peft import LoraConfig

    return LoraConfig(r=INIT_RANK, lora_alpha=alpha, lora_dropout=0.0, target_modules=INIT_TARGETS,
                      init_lora_weights=init, **kw)


def init_with_peft(method: str, alpha: int, calib: list, diag: dict):
    """PiSSA / OLoRA / CorDA through PEFT itself on a fresh copy of the tiny llama."""
    from peft import get_peft_model
    from peft.tuners.lora.config import CordaConfig
    from peft.tuners.lora.corda import preprocess_corda

    model = load_tiny_llama()
    if method.startswith("corda"):
        corda_method = method.split("_")[1]
        config = lora_config(alpha, "corda",
                             corda_config=CordaConfig(corda_method=corda_method, prune_temporary_fields=False))
        preprocess_corda(model, config, run_model=lambda: run_windows(model, calib))
        diag["peft_cov"] = {k: model.get_submodule(k).covariance_matrix.detach().clone()
                            for k in init_module_keys(model.config.num_hidden_layers)}
        diag["sample_count"] = {k: model.get_submodule(k).sample_count
                                for k in init_module_keys(model.config.num_hidden_layers)}
    else:
        config = lora_config(alpha, method)
    return get_peft_model(model, config)


def init_with_torch(method: str, alpha: int, nulls: dict):
    """MiLoRA / LoRA-Null from algorithm.md, written into a PEFT LoRA model (factors + residual base weight)."""
    from peft import get_peft_model

    torch.manual_seed(SEED)  # the kaiming A that PEFT draws is overwritten below
    peft_model = get_peft_model(load_tiny_llama(), lora_config(alpha, True))
    base = peft_model.get_base_model()
    s = alpha / INIT_RANK
    with torch.no_grad():
        for key in init_module_keys(base.config.num_hidden_layers):
            layer = base.get_submodule(key)
            w = layer.base_layer.weight.detach().to(torch.float32).clone()
            if method == "milora":
                a, b, res = milora_factors(w, INIT_RANK, s)
            else:
                a, b, res = lora_null_factors(w, nulls[init_site_of(key)], INIT_RANK, s)
            layer.lora_A["default"].weight.data = a.contiguous()
            layer.lora_B["default"].weight.data = b.contiguous()
            layer.base_layer.weight.data = res.contiguous()
    return peft_model


def make_init():
    print("[init] LoRA initialisations on the tiny llama")
    seed_everything()
    from peft import __version__ as peft_version

    src = TINY / "llama"
    if not (src / "model.safetensors").exists():
        sys.exit("tests/fixtures/tiny/llama is missing: run with --only tiny first")
    base = load_tiny_llama()
    cfg = base.config
    keys = init_module_keys(cfg.num_hidden_layers)
    orig = {k: base.get_submodule(k).weight.detach().to(torch.float32).clone() for k in keys}
    calib = init_windows(INIT_CALIB[0], INIT_CALIB[1], cfg.vocab_size)
    heldout = init_windows(INIT_HELDOUT[0], INIT_HELDOUT[1], cfg.vocab_size)
    base_logits = window_logits(base, heldout[0])

    covs = site_covariances(base, calib)
    held = site_covariances(base, heldout)
    eigen = {site: torch.linalg.eigvalsh(c).flip(0) for site, c in covs.items()}
    nulls = {site: null_basis(c, INIT_RANK) for site, c in covs.items()}
    tops = {site: null_basis(c, INIT_RANK, top=True) for site, c in covs.items()}
    for site, c in covs.items():
        print(f"  {site}: d={c.shape[0]} eig max {eigen[site][0]:.4e} min {eigen[site][-1]:.4e}"
              f" held-out energy null {energy_fraction(nulls[site], held[site]):.3e}"
              f" top {energy_fraction(tops[site], held[site]):.3e}")

    producers = {
        "pissa": "peft.get_peft_model(LoraConfig(init_lora_weights='pissa')) -> LoraLayer.pissa_init",
        "olora": "peft.get_peft_model(LoraConfig(init_lora_weights='olora')) -> LoraLayer.olora_init",
        "corda_kpm": "peft.tuners.lora.corda.preprocess_corda(CordaConfig(corda_method='kpm')) + get_peft_model"
                     " -> LoraLayer.corda_init",
        "corda_ipm": "peft.tuners.lora.corda.preprocess_corda(CordaConfig(corda_method='ipm')) + get_peft_model"
                     " -> LoraLayer.corda_init",
        "milora": "torch from algorithm.md §2 (f32 torch.linalg.svd(W, full_matrices=False), last r triplets)",
        "lora_null": "torch from algorithm.md §1.3-1.4 (P: f64 torch.linalg.eigh of the calibration covariance,"
                     " r smallest; T = W P Pᵀ in f32; f32 torch.linalg.svd(T, full_matrices=False), first r)",
    }
    inits, recon, logit_diff, corda_cov_diff, corda_damps, corda_counts = {}, {}, {}, {}, {}, {}
    for method in producers:
        for alpha in INIT_ALPHAS:
            s = alpha / INIT_RANK
            tag = f"{method}@s{s:g}"
            diag = {}
            if method in ("milora", "lora_null"):
                peft_model = init_with_torch(method, alpha, nulls)
            else:
                peft_model = init_with_peft(method, alpha, calib, diag)
            peft_model.eval()
            assert_float32(peft_model)
            inner = peft_model.get_base_model()
            entry, errs = {}, []
            for key in keys:
                layer = inner.get_submodule(key)
                assert layer.scaling["default"] == s, (tag, key, layer.scaling)
                a = layer.lora_A["default"].weight.detach()
                b = layer.lora_B["default"].weight.detach()
                res = layer.base_layer.weight.detach()
                assert a.shape == (INIT_RANK, res.shape[1]) and b.shape == (res.shape[0], INIT_RANK), (tag, key)
                w64 = orig[key].to(torch.float64)
                back = res.to(torch.float64) + s * (b.to(torch.float64) @ a.to(torch.float64))
                err = f64(torch.linalg.matrix_norm(back - w64) / torch.linalg.matrix_norm(w64))
                assert err <= INIT_RECON_TOL, (tag, key, err)
                errs.append(err)
                m = {"lora_A": f32_rows(a), "lora_B": f32_rows(b)}
                if key in INIT_FULL_RESIDUAL and alpha == INIT_FULL_RESIDUAL_ALPHA:
                    m["residual"] = f32_rows(res)
                m["residual_fro"] = f64(torch.linalg.matrix_norm(res.to(torch.float64)))
                m["reconstruction_rel_err"] = err
                if method == "lora_null":
                    site = init_site_of(key)
                    m["P"] = f64_rows(nulls[site])
                    m["heldout_energy"] = energy_fraction(nulls[site], held[site])
                    m["heldout_energy_top"] = energy_fraction(tops[site], held[site])
                entry[key] = m
            diff = (window_logits(peft_model, heldout[0]) - base_logits).abs().max().item()
            assert diff <= INIT_LOGIT_TOL, (tag, "initialised model changed the logits", diff)
            recon[tag], logit_diff[tag] = max(errs), diff
            inits[tag] = entry
            if "peft_cov" in diag:
                rel = 0.0
                for key in keys:
                    mine = covs[init_site_of(key)]
                    theirs = diag["peft_cov"][key].to(torch.float64)
                    rel = max(rel, ((theirs - mine).abs().max() / mine.abs().max()).item())
                    corda_damps.setdefault(key, corda_damp(diag["peft_cov"][key]))
                    corda_counts[key] = diag["sample_count"][key]
                corda_cov_diff[tag] = rel
            print(f"  {tag}: max recon rel err {recon[tag]:.2e}, max |logits - base| {diff:.2e}")

    assert set(corda_counts.values()) == {len(calib)}, corda_counts
    meta = versions() | {
        "peft": peft_version,
        "model_dir": "tests/fixtures/tiny/llama",
        "model_sha256": sha256_file(src / "model.safetensors"),
        "attn_implementation": "eager",
        "r": INIT_RANK,
        "alphas": INIT_ALPHAS,
        "scales": {f"s{a / INIT_RANK:g}": a / INIT_RANK for a in INIT_ALPHAS},
        "window_len": INIT_WINDOW_LEN,
        "window_rng": f"numpy.random.default_rng(seed).integers({INIT_FIRST_ID}, vocab_size,"
                      f" size=(n, {INIT_WINDOW_LEN}))",
        "calib_seed": INIT_CALIB[1],
        "heldout_seed": INIT_HELDOUT[1],
        "forward": "one forward pass per window, batch 1, attention_mask all ones, use_cache=False, eval, no grad",
        "covariance_recipe": "per window X = linear input [tokens, d_in] f32; X~ = X / |X.max()| (signed max,"
                             " divided in f32); C = (1/n_windows) * sum X~^T X~ with the product and sum in f64",
        "sites": INIT_SITES,
        "methods": producers,
        "method_order_of_triplets": {
            "pissa": "first r of the SVD (descending)",
            "olora": "first r columns of Q / rows of R",
            "corda_ipm": "first r of SVD(W C_f) (descending)",
            "corda_kpm": "last r of SVD(W C_f), kept in descending order",
            "milora": "last r of SVD(W), kept in descending order",
            "lora_null": "first r of SVD(W P P^T) (descending)",
        },
        "lora_null_P": "columns = eigenvectors of the r smallest eigenvalues, in descending eigenvalue order"
                       " (the last column belongs to the smallest); f64 eigh; column signs are LAPACK's",
        "heldout_energy": "trace(P^T C_heldout P) / trace(C_heldout), f64; _top uses the r largest eigenvectors",
        "residual_full_for": {"modules": INIT_FULL_RESIDUAL, "scale": INIT_FULL_RESIDUAL_ALPHA / INIT_RANK},
        "residual_note": "residual = the PEFT base_layer.weight after init (f32); stored in full only for"
                         " residual_full_for (size budget), residual_fro = its Frobenius norm (f64) for every module",
        "reconstruction_tol": INIT_RECON_TOL,
        "reconstruction_max_rel_err": recon,
        "logits_heldout_window": 0,
        "logits_max_abs_diff_vs_base": logit_diff,
        "corda_covariance_max_rel_diff_vs_ours": corda_cov_diff,
        "corda_covariance_note": "PEFT corda.py: X~ = X.float() / |max(X)|, X~^T X~ and the sum in f32,"
                                 " divided by sample_count (= forward calls = n_windows); rel diff ="
                                 " max|C_peft - C_ours| / max|C_ours|",
        "corda_sample_count": len(calib),
        "corda_damp": corda_damps,
        "float_format": f"covariances, heldout_covariances, P: f64 rounded to {F64_MATRIX_DIGITS} significant digits;"
                        " eigenvalues, energies, norms, errors: f64 shortest round-trip; lora_A / lora_B / residual:"
                        " f32 values as their shortest f32 round-trip decimal",
    }
    ref = {
        "meta": meta,
        "normalization": "signed-max",
        "calib_windows": calib,
        "heldout_windows": heldout,
        "covariances": {site: f64_rows(c) for site, c in covs.items()},
        "heldout_covariances": {site: f64_rows(c) for site, c in held.items()},
        "eigenvalues": {site: [f64(v) for v in e] for site, e in eigen.items()},
        "inits": inits,
    }
    write_json(INIT_DIR / "reference.json", ref)
    return ref


# ----------------------------------------------------------------------------------------------
# E. One LoRA training run on the tiny llama (AdamW, clipping, warmup + cosine), as the Rust trainer does it
# ----------------------------------------------------------------------------------------------

TRAIN_DIR = TINY / "train"
TRAIN_RANK = 4
TRAIN_ALPHA = 8  # scale s = alpha / r = 2
TRAIN_INIT_STD = 0.1  # lora_A and lora_B both N(0, 0.1²): B ≠ 0, so the first gradients reach A as well
TRAIN_INIT_SEED = SEED + 500
TRAIN_DATA_SEED = SEED + 600
# (length, prompt length): the prompt tokens are not targets, the rest are
TRAIN_EXAMPLES = [(9, 3), (14, 5), (20, 4)]
TRAIN_PAD_ID = 2
TRAIN_LR = 1e-2
TRAIN_BETAS = (0.9, 0.999)
TRAIN_EPS = 1e-8
TRAIN_WEIGHT_DECAY = 0.1
TRAIN_WARMUP = 2
TRAIN_STEPS = 4
# The run's gradient norms are 6.79, 6.79, 5.99, 5.45 (printed by --only train): steps 1-2 are clipped,
# steps 3-4 are not, so both branches of the clipping are exercised.
TRAIN_MAX_GRAD_NORM = 6.5


class LoraLinear(torch.nn.Module):
    """y = W x + s · B (A x): PEFT's LoRA Linear layout (lora_A [r, in], lora_B [out, r]), frozen base."""

    def __init__(self, base: torch.nn.Linear, a: torch.Tensor, b: torch.Tensor, scale: float):
        super().__init__()
        self.base = base
        self.lora_A = torch.nn.Parameter(a.clone())
        self.lora_B = torch.nn.Parameter(b.clone())
        self.scale = scale

    def forward(self, x):
        # PEFT lora.Linear.forward: result + lora_B(lora_A(dropout(x))) * scaling
        lora = torch.nn.functional.linear(torch.nn.functional.linear(x, self.lora_A), self.lora_B)
        return self.base(x) + lora * self.scale


def train_key(module_key: str) -> str:
    """'model.layers.1.mlp.down_proj' -> '1.down_proj'."""
    parts = module_key.split(".")
    return f"{parts[2]}.{parts[-1]}"


def train_init_factors(model) -> dict:
    """{module key: (A, B)} f32, 0.1·randn from one generator, modules in init_module_keys order, A then B."""
    g = torch.Generator().manual_seed(TRAIN_INIT_SEED)
    out = {}
    for key in init_module_keys(model.config.num_hidden_layers):
        lin = model.get_submodule(key)
        a = TRAIN_INIT_STD * torch.randn((TRAIN_RANK, lin.in_features), generator=g, dtype=torch.float32)
        b = TRAIN_INIT_STD * torch.randn((lin.out_features, TRAIN_RANK), generator=g, dtype=torch.float32)
        out[key] = (a, b)
    return out


def train_examples(vocab: int) -> list:
    rng = np.random.default_rng(TRAIN_DATA_SEED)
    out = []
    for n, prompt in TRAIN_EXAMPLES:
        ids = [int(x) for x in rng.integers(3, vocab, size=n)]  # 3..vocab-1: no special tokens
        out.append({"ids": ids, "target": [i >= prompt for i in range(n)]})
    return out


def train_batch(examples: list):
    """Right-padded [B, T] ids (pad id 2) and the [B, T-1] mask of scored label positions."""
    t = max(len(e["ids"]) for e in examples)
    ids = torch.full((len(examples), t), TRAIN_PAD_ID, dtype=torch.long)
    target = torch.zeros((len(examples), t), dtype=torch.bool)
    for i, e in enumerate(examples):
        n = len(e["ids"])
        ids[i, :n] = torch.tensor(e["ids"])
        target[i, :n] = torch.tensor(e["target"])  # padding is never a target
    return ids, target[:, 1:]


def masked_lm_loss(model, ids: torch.Tensor, scored: torch.Tensor) -> torch.Tensor:
    """Σ_scored −log_softmax(logits[b, t])[ids[b, t+1]] / n_scored; no attention mask (causal only)."""
    logits = model(input_ids=ids, use_cache=False).logits[:, :-1]
    logp = torch.log_softmax(logits, dim=-1)
    nll = -logp.gather(-1, ids[:, 1:, None])[..., 0]
    return nll[scored].sum() / scored.sum()


class exact_llama_dtype:
    """Within this context the transformers llama keeps the input dtype in RMSNorm, rotary cos/sin and the
    eager softmax (they upcast/downcast through float32 otherwise), so a float64 model computes in float64.
    For float32 inputs the patched functions do the very same operations as the originals."""

    def __enter__(self):
        from transformers.models.llama import modeling_llama as ml

        self.ml, self.saved = ml, (ml.LlamaRMSNorm.forward, ml.LlamaRotaryEmbedding.forward, ml.eager_attention_forward)

        def rms_forward(self, h):
            variance = h.pow(2).mean(-1, keepdim=True)
            return self.weight * (h * torch.rsqrt(variance + self.variance_epsilon))

        def rope_forward(self, x, position_ids):
            freqs = position_ids[..., None].to(x.dtype) * self.inv_freq.to(device=x.device, dtype=x.dtype)
            emb = torch.cat((freqs, freqs), dim=-1)
            return emb.cos() * self.attention_scaling, emb.sin() * self.attention_scaling

        def eager(module, query, key, value, attention_mask, scaling, dropout=0.0, **kwargs):
            key_states = ml.repeat_kv(key, module.num_key_value_groups)
            value_states = ml.repeat_kv(value, module.num_key_value_groups)
            w = torch.matmul(query, key_states.transpose(2, 3)) * scaling
            if attention_mask is not None:
                w = w + attention_mask
            w = torch.nn.functional.softmax(w, dim=-1)
            out = torch.matmul(w, value_states).transpose(1, 2).contiguous()
            return out, w

        ml.LlamaRMSNorm.forward, ml.LlamaRotaryEmbedding.forward, ml.eager_attention_forward = (
            rms_forward, rope_forward, eager)
        return self

    def __exit__(self, *exc):
        self.ml.LlamaRMSNorm.forward, self.ml.LlamaRotaryEmbedding.forward, self.ml.eager_attention_forward = self.saved
        return False


def cosine_warmup_lr(k: int) -> float:
    if k < TRAIN_WARMUP:
        return TRAIN_LR * k / TRAIN_WARMUP
    return TRAIN_LR * 0.5 * (1.0 + math.cos(math.pi * (k - TRAIN_WARMUP) / (TRAIN_STEPS - TRAIN_WARMUP)))


def train_run(dtype, init: dict, examples: list, max_grad_norm: float):
    """TRAIN_STEPS AdamW steps on the same batch; returns (per-step records, {key: (A, B)} after the last)."""
    from transformers import get_cosine_schedule_with_warmup

    model = load_tiny_llama().to(dtype)
    for p in model.parameters():
        p.requires_grad_(False)
    layers = {}
    for key, (a, b) in init.items():
        parent, _, name = key.rpartition(".")
        layers[key] = LoraLinear(model.get_submodule(key), a.to(dtype), b.to(dtype), TRAIN_ALPHA / TRAIN_RANK)
        setattr(model.get_submodule(parent), name, layers[key])
    params = [p for layer in layers.values() for p in (layer.lora_A, layer.lora_B)]
    assert [n for n, p in model.named_parameters() if p.requires_grad] == [
        f"{k}.lora_{x}" for k in layers for x in "AB"], "only the LoRA factors may train"
    opt = torch.optim.AdamW(params, lr=TRAIN_LR, betas=TRAIN_BETAS, eps=TRAIN_EPS, weight_decay=TRAIN_WEIGHT_DECAY,
                            foreach=False)
    sched = get_cosine_schedule_with_warmup(opt, num_warmup_steps=TRAIN_WARMUP, num_training_steps=TRAIN_STEPS)
    ids, scored = train_batch(examples)
    steps = []
    for k in range(TRAIN_STEPS):
        lr = opt.param_groups[0]["lr"]
        assert abs(lr - cosine_warmup_lr(k)) <= 1e-15, (k, lr, cosine_warmup_lr(k))
        opt.zero_grad(set_to_none=True)
        loss = masked_lm_loss(model, ids, scored)
        assert loss.dtype == dtype
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(params, max_grad_norm, foreach=False)
        opt.step()
        sched.step()
        g = torch.cat([p.grad.reshape(-1) for p in params]).abs()
        steps.append({"step": k + 1, "lr": lr, "loss": loss.item(), "grad_norm": norm.item(),
                      "clipped": norm.item() > max_grad_norm,
                      "grad_abs_min": g.min().item(), "grad_abs_max": g.max().item()})
    final = {key: (layer.lora_A.detach().clone(), layer.lora_B.detach().clone()) for key, layer in layers.items()}
    return steps, final


def make_train():
    print("[train] 4 AdamW steps of LoRA on the tiny llama")
    seed_everything()
    if not (TINY / "llama" / "model.safetensors").exists():
        sys.exit("tests/fixtures/tiny/llama is missing: run with --only tiny first")
    base = load_tiny_llama()
    init = train_init_factors(base)
    examples = train_examples(base.config.vocab_size)
    ids, scored = train_batch(examples)

    # the dtype-keeping patch is a no-op in float32: same logits, bit for bit
    with torch.no_grad():
        plain = base(input_ids=ids, use_cache=False).logits
        with exact_llama_dtype():
            assert torch.equal(base(input_ids=ids, use_cache=False).logits, plain), "patch changed the f32 model"
    base64 = load_tiny_llama().to(torch.float64)
    with torch.no_grad(), exact_llama_dtype():
        exact = base64(input_ids=ids, use_cache=False).logits
    f64_logit_diff = (exact - plain.to(torch.float64)).abs().max().item()
    print(f"  base logits f64 vs f32: {f64_logit_diff:.3e}")
    assert 0 < f64_logit_diff < 1e-4, f64_logit_diff

    max_norm = TRAIN_MAX_GRAD_NORM
    steps32, final32 = train_run(torch.float32, init, examples, max_norm)
    with exact_llama_dtype():
        steps64, final64 = train_run(torch.float64, init, examples, max_norm)
    for s32, s64 in zip(steps32, steps64):
        print(f"  step {s32['step']}: lr {s32['lr']:.4g} loss {s32['loss']:.7f} (f64 {s64['loss']:.7f})"
              f" grad_norm {s32['grad_norm']:.6f} (f64 {s64['grad_norm']:.6f}) clipped {s32['clipped']}")
    assert [s["clipped"] for s in steps32] == [s["clipped"] for s in steps64]
    assert any(s["clipped"] for s in steps32) and not all(s["clipped"] for s in steps32), "choose max_grad_norm"

    loss_diff = max(abs(a["loss"] - b["loss"]) for a, b in zip(steps32, steps64))
    norm_diff = max(abs(a["grad_norm"] - b["grad_norm"]) for a, b in zip(steps32, steps64))
    factor_diff = max((x.to(torch.float64) - y).abs().max().item()
                      for key in final32 for x, y in zip(final32[key], final64[key]))
    moved = min((x - y).abs().max().item() for key in final32 for x, y in zip(final32[key], init[key]))
    print(f"  max |f32 - f64|: loss {loss_diff:.3e} grad_norm {norm_diff:.3e} final factors {factor_diff:.3e};"
          f" smallest per-tensor max |final - init| {moved:.3e}")
    assert moved > 100 * factor_diff, "the factors must move well beyond the f32 rounding"

    def factors(fs):
        return {train_key(k): {"lora_A": f32_rows(a), "lora_B": f32_rows(b)} for k, (a, b) in fs.items()}

    meta = versions() | {
        "model_dir": "tests/fixtures/tiny/llama",
        "model_sha256": sha256_file(TINY / "llama" / "model.safetensors"),
        "attn_implementation": "eager",
        "lora": "y = W x + scale * B (A x) on q,k,v,o,gate,up,down of every layer; lora_A [r, in], lora_B [out, r];"
                " base weights (incl. the tied embedding) frozen",
        "init": f"{TRAIN_INIT_STD} * torch.randn(shape, generator=torch.Generator().manual_seed({TRAIN_INIT_SEED})),"
                " float32, modules in layer order q,k,v,o,gate,up,down, A then B per module",
        "data": f"numpy.random.default_rng({TRAIN_DATA_SEED}).integers(3, vocab, size=n) per example;"
                " target = position >= prompt length; prompt lengths " + str([p for _, p in TRAIN_EXAMPLES]),
        "batch": "all examples every step, right-padded with pad_id to the longest length T",
        "loss": "logits = model(ids) with no attention mask (causal only); positions t = 0..T-2, label ids[t+1],"
                " scored where target[t+1] (padding is never a target); loss = sum of -log_softmax(logits)[label]"
                " over scored / number scored",
        "clipping": "torch.nn.utils.clip_grad_norm_: total = sqrt(sum g^2 over every A and B); grads *="
                    " min(1, max_grad_norm / (total + 1e-6)); grad_norm below is total, before clipping",
        "optimizer": "torch.optim.AdamW(foreach=False) over [A, B] of each module in layer order; per step: p *= 1 -"
                     " lr*wd; m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2; p -= lr/(1-b1^k) * m / (sqrt(v)/sqrt(1-b2^k)"
                     " + eps). Step 1 has lr 0: the factors do not change, but m, v and the bias-correction count do.",
        "schedule": "transformers.get_cosine_schedule_with_warmup(num_warmup_steps, num_training_steps): lr at 0-based"
                    " step k = lr*k/warmup for k < warmup, else lr*0.5*(1+cos(pi*(k-warmup)/(total-warmup)))",
        "steps_note": "loss and grad_norm are those computed at the step, before its update; lr is the rate the"
                      " step used",
        "f64_vs_f32": "the same run with the model and factors in float64 (transformers llama with RMSNorm, rotary and"
                      " softmax kept in float64); max |f32 - f64| of the step losses, of the gradient norms and of"
                      " every final A and B element",
        "adam_sensitivity": {
            "note": "Adam divides each gradient element by its own RMS, so an element's update has the relative"
                    " error of that element's gradient: the smallest |g| (after clipping) bounds how far a"
                    " reimplementation's rounding can move a factor",
            "grad_abs_min_per_step": [f32(s["grad_abs_min"]) for s in steps32],
            "grad_abs_max_per_step": [f32(s["grad_abs_max"]) for s in steps32],
        },
        "float_format": "losses, grad norms, factors: float32 values as their shortest f32 round-trip decimal;"
                        " lr and f64_vs_f32: f64",
    }
    ref = {
        "meta": meta,
        "config": {
            "rank": TRAIN_RANK,
            "alpha": TRAIN_ALPHA,
            "scale": TRAIN_ALPHA / TRAIN_RANK,
            "lr": TRAIN_LR,
            "betas": list(TRAIN_BETAS),
            "eps": TRAIN_EPS,
            "weight_decay": TRAIN_WEIGHT_DECAY,
            "max_grad_norm": max_norm,
            "warmup_steps": TRAIN_WARMUP,
            "total_steps": TRAIN_STEPS,
            "pad_id": TRAIN_PAD_ID,
        },
        "examples": examples,
        "steps": [{"step": s["step"], "lr": s["lr"], "loss": f32(s["loss"]), "grad_norm": f32(s["grad_norm"]),
                   "clipped": s["clipped"]} for s in steps32],
        "init": factors(init),
        "final": factors(final32),
        "f64_vs_f32": {"loss": loss_diff, "grad_norm": norm_diff, "factors": factor_diff},
    }
    write_json(TRAIN_DIR / "reference.json", ref)
    return ref


# ----------------------------------------------------------------------------------------------
# F. A LoRA adapter written by PEFT itself (save_pretrained) on the tiny llama, with its logits
# ----------------------------------------------------------------------------------------------

PEFT_DIR = TINY / "peft"
PEFT_RANK = 4
PEFT_ALPHA = 8
PEFT_SEED = SEED + 700
PEFT_ALPHA_PATTERN = {"model.layers.1.mlp.down_proj": 2}  # scale 2/4 = 0.5 instead of 2
PEFT_RANK_PATTERN = {"model.layers.0.self_attn.v_proj": 2}  # rank 2, scale 8/2 = 4
PEFT_CASES = [1, 2]  # indices into tiny_case_ids()[0]: the 7- and 24-token cases of tiny/llama/reference.json
PEFT_MIN_EFFECT = 1e-2


def make_peft():
    print("[peft] PEFT LoRA adapter on the tiny llama")
    seed_everything()
    from peft import LoraConfig, PeftModel, get_peft_model
    from peft import __version__ as peft_version

    if not (TINY / "llama" / "model.safetensors").exists():
        sys.exit("tests/fixtures/tiny/llama is missing: run with --only tiny first")
    cases = [tiny_case_ids()[0][i] for i in PEFT_CASES]
    config = LoraConfig(r=PEFT_RANK, lora_alpha=PEFT_ALPHA, target_modules=INIT_TARGETS, lora_dropout=0.0,
                        init_lora_weights=False, alpha_pattern=PEFT_ALPHA_PATTERN, rank_pattern=PEFT_RANK_PATTERN)
    torch.manual_seed(PEFT_SEED)  # init_lora_weights=False keeps nn.Linear's default (kaiming-uniform) A and B
    model = get_peft_model(load_tiny_llama(), config)
    model.eval()
    assert_float32(model)
    inner = model.get_base_model()
    keys = init_module_keys(inner.config.num_hidden_layers)
    modules = {}
    for key in keys:
        layer = inner.get_submodule(key)
        a, b = layer.lora_A["default"].weight, layer.lora_B["default"].weight
        assert a.abs().min() > 0 and b.abs().max() > 0.05, (key, "init_lora_weights=False left a factor zero")
        r = PEFT_RANK_PATTERN.get(key, PEFT_RANK)
        s = PEFT_ALPHA_PATTERN.get(key, PEFT_ALPHA) / r
        assert a.shape == (r, layer.in_features) and b.shape == (layer.out_features, r), (key, a.shape, b.shape)
        assert layer.scaling["default"] == s, (key, layer.scaling, s)
        modules[key] = {"r": r, "lora_alpha": PEFT_ALPHA_PATTERN.get(key, PEFT_ALPHA), "scaling": s}

    # a relative base-model path, so adapter_config.json does not depend on where the repository lives
    model.peft_config["default"].base_model_name_or_path = "tests/fixtures/tiny/llama"
    # PEFT keeps target_modules as a set and writes it in hash order, which changes from run to run
    assert model.peft_config["default"].target_modules == set(INIT_TARGETS)
    model.peft_config["default"].target_modules = list(INIT_TARGETS)
    if PEFT_DIR.exists():
        shutil.rmtree(PEFT_DIR)
    model.save_pretrained(str(PEFT_DIR), safe_serialization=True)
    card = PEFT_DIR / "README.md"  # PEFT's boilerplate model card: nothing a loader reads
    if card.exists():
        card.unlink()
    files = sorted(p.name for p in PEFT_DIR.iterdir())
    assert files == ["adapter_config.json", "adapter_model.safetensors"], files
    saved_cfg = json.loads((PEFT_DIR / "adapter_config.json").read_text())
    assert saved_cfg["rank_pattern"] == PEFT_RANK_PATTERN and saved_cfg["alpha_pattern"] == PEFT_ALPHA_PATTERN
    from safetensors.numpy import load_file

    tensors = load_file(str(PEFT_DIR / "adapter_model.safetensors"))
    tensor_keys = sorted(tensors)
    with safetensors.safe_open(str(PEFT_DIR / "adapter_model.safetensors"), "np") as f:
        st_metadata = f.metadata()
    assert len(tensor_keys) == 2 * len(keys), tensor_keys
    for key in keys:
        layer = inner.get_submodule(key)
        for x in "AB":
            t = tensors[f"base_model.model.{key}.lora_{x}.weight"]
            assert t.dtype == np.float32
            assert np.array_equal(t, getattr(layer, f"lora_{x}")["default"].weight.detach().numpy()), (key, x)

    base_ref = json.loads((TINY / "llama" / "reference.json").read_text())["cases"]
    out_cases, effect = [], 0.0
    for idx, ids in zip(PEFT_CASES, cases):
        logits = forward_logits(model, ids)
        with model.disable_adapter():
            base_logits = forward_logits(model, ids)
        assert base_ref[idx]["ids"] == ids
        ref_diff = (base_logits - torch.tensor(base_ref[idx]["logits"])).abs().max().item()
        assert ref_diff <= 1e-5, ("disabled adapter differs from tiny/llama/reference.json", ref_diff)
        effect = max(effect, (logits - base_logits).abs().max().item())
        out_cases.append({"ids": ids, "logits": f32_rows(logits), "base_logits": f32_rows(base_logits)})
    print(f"  max |logits - base_logits| = {effect:.4f}")
    assert effect > PEFT_MIN_EFFECT, effect

    # the saved adapter, loaded by PEFT onto a fresh base model, gives the same logits
    reloaded = PeftModel.from_pretrained(load_tiny_llama(), str(PEFT_DIR))
    reloaded.eval()
    reload_diff = 0.0
    for case in out_cases:
        got = forward_logits(reloaded, case["ids"])
        reload_diff = max(reload_diff, (got - torch.tensor(case["logits"])).abs().max().item())
    print(f"  reloaded adapter: max |logits - saved| = {reload_diff:.3e}")
    assert reload_diff <= 1e-6, reload_diff
    for key in keys:
        assert reloaded.get_base_model().get_submodule(key).scaling["default"] == modules[key]["scaling"], key

    meta = versions() | {
        "peft": peft_version,
        "model_dir": "tests/fixtures/tiny/llama",
        "model_sha256": sha256_file(TINY / "llama" / "model.safetensors"),
        "attn_implementation": "eager",
        "adapter_dir": "tests/fixtures/tiny/peft",
        "adapter_sha256": sha256_file(PEFT_DIR / "adapter_model.safetensors"),
        "peft_config": f"LoraConfig(r={PEFT_RANK}, lora_alpha={PEFT_ALPHA}, target_modules={INIT_TARGETS},"
                       f" lora_dropout=0.0, init_lora_weights=False, alpha_pattern={PEFT_ALPHA_PATTERN},"
                       f" rank_pattern={PEFT_RANK_PATTERN})",
        "init": f"torch.manual_seed({PEFT_SEED}) then get_peft_model; init_lora_weights=False skips PEFT's"
                " reset, so lora_A and lora_B keep torch.nn.Linear's kaiming_uniform(a=sqrt(5)) init (both non-zero)",
        "modules": modules,
        "scaling": "lora_alpha / r per module, after rank_pattern and alpha_pattern",
        "tensor_keys": tensor_keys,
        "safetensors_metadata": st_metadata,
        "logits": "model(input_ids, use_cache=False), batch 1, no attention mask; base_logits with"
                  " PeftModel.disable_adapter() (equal to tiny/llama/reference.json cases within 1e-5)",
        "case_source": f"tiny/llama/reference.json cases {PEFT_CASES}",
        "reload_max_abs_diff": reload_diff,
    }
    ref = {"meta": meta, "cases": out_cases, "max_abs_adapter_effect": effect}
    write_json(PEFT_DIR / "reference.json", ref)
    return ref


# ----------------------------------------------------------------------------------------------
# G. Random blocks of every GGML quant type the Rust dequantiser decodes, through gguf-py's dequantize
# ----------------------------------------------------------------------------------------------

QUANTS_DIR = FIXTURES / "quants"
QUANTS_SEED = SEED + 800
# type -> (blocks, byte offsets of the block's f16 fields: d, and dmin / m where the type has one).
# Any byte pattern is a valid block once these are finite; the offsets follow gguf-py's dequantize_blocks.
QUANT_TYPES = {
    "Q4_0": (64, [0]),  # d, qs[16]
    "Q4_1": (64, [0, 2]),  # d, m, qs[16]
    "Q5_0": (64, [0]),  # d, qh[4], qs[16]
    "Q5_1": (64, [0, 2]),  # d, m, qh[4], qs[16]
    "Q8_0": (64, [0]),  # d, qs[32]
    "Q2_K": (16, [80, 82]),  # scales[16], qs[64], d, dmin
    "Q3_K": (16, [108]),  # hmask[32], qs[64], scales[12], d
    "Q4_K": (16, [0, 2]),  # d, dmin, scales[12], qs[128]
    "Q5_K": (16, [0, 2]),  # d, dmin, scales[12], qh[32], qs[128]
    "Q6_K": (16, [208]),  # ql[128], qh[64], scales[16], d
    "IQ4_NL": (64, [0]),  # d, qs[16]
    "IQ4_XS": (16, [0]),  # d, scales_h (u16), scales_l[4], qs[128]
}
# f16 bit patterns given to the first blocks' fields (in turn): ±0, the smallest and largest subnormals (±),
# the largest finite values (±) and ±1; every other field is sign · 2^uniform(-14, 2), rounded to f16
QUANT_SPECIAL_F16 = [0x0000, 0x8000, 0x0001, 0x8001, 0x03FF, 0x83FF, 0x7BFF, 0xFBFF, 0x3C00, 0xBC00]


def quant_blocks(rng, n_blocks: int, block_bytes: int, f16_offsets: list) -> np.ndarray:
    """[n_blocks, block_bytes] uint8: random bytes with every f16 scale field overwritten by a finite f16."""
    blocks = rng.integers(0, 256, size=(n_blocks, block_bytes), dtype=np.uint8)
    fields = len(f16_offsets)
    mags = np.exp2(rng.uniform(-14.0, 2.0, size=(n_blocks, fields)))
    signs = np.where(rng.integers(0, 2, size=(n_blocks, fields)) == 1, -1.0, 1.0)
    bits = (signs * mags).astype(np.float16).view(np.uint16)
    flat = bits.reshape(-1)
    for i in range(min(len(QUANT_SPECIAL_F16), flat.size)):
        flat[i] = QUANT_SPECIAL_F16[i]
    bits = flat.reshape(n_blocks, fields)
    assert np.isfinite(bits.view(np.float16)).all()
    for k, off in enumerate(f16_offsets):
        blocks[:, off:off + 2] = bits[:, k:k + 1].astype("<u2").view(np.uint8)
    return blocks


def make_quants():
    print("[quants] random blocks of each quant type through gguf.quants.dequantize")
    seed_everything()
    rng = np.random.default_rng(QUANTS_SEED)
    QUANTS_DIR.mkdir(parents=True, exist_ok=True)
    types = {}
    for name, (n_blocks, f16_offsets) in QUANT_TYPES.items():
        qtype = gguf.GGMLQuantizationType[name]
        block_elems, block_bytes = gguf.GGML_QUANT_SIZES[qtype]
        assert all(0 <= off <= block_bytes - 2 for off in f16_offsets), name
        blocks = quant_blocks(rng, n_blocks, block_bytes, f16_offsets)
        raw = blocks.tobytes()
        values = gguf.quants.dequantize(np.frombuffer(raw, dtype=np.uint8), qtype)
        assert values.dtype == np.float32 and values.shape == (n_blocks * block_elems,), (name, values.shape)
        assert np.isfinite(values).all(), name
        # the scales really vary: negative ones, exact zeros, and -0.0 results all occur
        assert (values < 0).any() and (values > 0).any() and (values == 0).any(), name
        path = QUANTS_DIR / f"{name}.bin"
        path.write_bytes(raw)
        print(f"  wrote {path.relative_to(ROOT)} ({path.stat().st_size} bytes)")
        types[name] = {
            "id": int(qtype),
            "block_elems": block_elems,
            "block_bytes": block_bytes,
            "blocks": n_blocks,
            "file": path.name,
            "bin_sha256": hashlib.sha256(raw).hexdigest(),
            "values_f32_hex": values.astype("<f4").tobytes().hex(),
        }
    meta = versions() | {
        "seed": QUANTS_SEED,
        "generator": "numpy.random.default_rng(seed): per type (in the order of `types`), random bytes for all"
                     " blocks, then sign · 2^uniform(-14, 2) for each f16 scale field (d, and dmin / m), rounded"
                     f" to f16; the first fields get the f16 bit patterns {[hex(b) for b in QUANT_SPECIAL_F16]}",
        "f16_fields": {name: offsets for name, (_, offsets) in QUANT_TYPES.items()},
        "reference": "gguf.quants.dequantize(np.frombuffer(<TYPE>.bin, np.uint8), GGMLQuantizationType.<TYPE>)",
        "values_f32_hex": "lowercase hex of the little-endian IEEE float32 bytes of the dequantised values,"
                          " 8 hex digits per value, in element order (compare bit patterns, so -0.0 != 0.0)",
    }
    write_json(QUANTS_DIR / "reference.json", {"meta": meta, "types": types})
    return types


# ----------------------------------------------------------------------------------------------


# ----------------------------------------------------------------------------------------------
# Q. tiny random-weight Qwen3: HF folder, and the GGUF llama.cpp's own convert_hf_to_gguf.py writes from it
# ----------------------------------------------------------------------------------------------

QWEN3_DIR = TINY / "qwen3"
QWEN3_GGUF_DIR = TINY / "qwen3-gguf"
QWEN3_SEED_IDX = 4  # torch seed SEED + 4, weights SEED + 104: next after the four models of part tiny (0..3)
QWEN3_GGUF_TYPES = ["f32", "f16"]
# llama.cpp: the llama-cpp-python sdist unpacked under here (or LLAMA_CPP_DIR = its vendor/llama.cpp folder)
QWEN3_LLAMA_CPP_HOME = Path.home() / ".cache" / "lora-null" / "llama.cpp"
QWEN3_TEMPLATE_FILE = "models/templates/Qwen-Qwen3-0.6B.jinja"  # llama.cpp's copy of Qwen/Qwen3-0.6B's template
# Qwen2's = Qwen3's pre-tokenizer regex (Qwen/Qwen3-0.6B tokenizer.json: Split Isolated, then ByteLevel without
# regex); llama.cpp and transformers' GGUF loader apply the same one for tokenizer.ggml.pre = "qwen2".
QWEN2_PRETOKENIZE_REGEX = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
)
# Run in a fresh interpreter: the converter must import its bundled gguf-py, not the gguf this script imported.
QWEN3_CONVERT_WRAPPER = r"""
import sys
llama_cpp = sys.argv[1]
sys.path.insert(0, llama_cpp)
sys.argv = [llama_cpp + "/convert_hf_to_gguf.py"] + sys.argv[2:]
import convert_hf_to_gguf  # puts its bundled gguf-py first on sys.path
from conversion.qwen import Qwen3Model
# The converter names a BPE tokenizer's pre-tokenizer by hashing the ids of a fixed check text, and refuses
# hashes it does not know. The tiny tokenizer's vocab and merges are not Qwen's, so its hash is unknown, but its
# pre-tokenizer IS Qwen2/Qwen3's (same Split regex), which llama.cpp calls "qwen2" -- the name the converter
# writes for the real Qwen3 checkpoints. So return that name instead of hashing.
Qwen3Model.get_vocab_base_pre = lambda self, tokenizer: "qwen2"
# Qwen2Model.set_vocab first tries a sentencepiece tokenizer.model and falls back to the BPE tokenizer.json path
# on FileNotFoundError, but it imports sentencepiece (not in the reference venv) before looking for the file.
# Qwen3 ships no tokenizer.model, so go to that fallback directly.
Qwen3Model.set_vocab = lambda self: self._set_vocab_gpt2()
convert_hf_to_gguf.main()
"""


def qwen3_llama_cpp() -> Path:
    """vendor/llama.cpp of the llama-cpp-python sdist: convert_hf_to_gguf.py, conversion/, gguf-py/, templates."""
    env = os.environ.get("LLAMA_CPP_DIR")
    found = [Path(env) / "convert_hf_to_gguf.py"] if env else sorted(QWEN3_LLAMA_CPP_HOME.glob("*/vendor/llama.cpp/convert_hf_to_gguf.py"))
    found = [p for p in found if p.is_file() and (p.parent / "conversion").is_dir() and (p.parent / "gguf-py").is_dir()]
    if not found:
        sys.exit(
            f"no llama.cpp convert_hf_to_gguf.py under {QWEN3_LLAMA_CPP_HOME}/*/vendor/llama.cpp: unpack the sdist of "
            "`pip download --no-deps --no-binary :all: llama-cpp-python==0.3.36` there (or set LLAMA_CPP_DIR)"
        )
    return found[-1].parent


def qwen3_tokenizer() -> Tokenizer:
    """The tiny tokenizer (same vocab, merges, added tokens, decoder) with Qwen3's pre-tokenizer instead of
    GPT-2's regex, so that tokenizer.json, llama.cpp and transformers' GGUF loader (both: pre "qwen2") agree."""
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    assert PRETOKENIZE_REGEX == QWEN2_PRETOKENIZE_REGEX
    tk = build_tiny_tokenizer()
    vocab = tk.get_vocab(with_added_tokens=True)
    tk.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(tokenizers.Regex(QWEN2_PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
        ]
    )
    assert tk.get_vocab(with_added_tokens=True) == vocab
    return tk


def qwen3_config() -> dict:
    """config.json in the form of Qwen/Qwen3-0.6B's, with the tiny shape."""
    return dict(
        architectures=["Qwen3ForCausalLM"],
        model_type="qwen3",
        attention_bias=False,
        attention_dropout=0.0,
        bos_token_id=0,  # <|endoftext|>, as Qwen3's bos_token_id 151643
        eos_token_id=EOS_ID,  # <|im_end|>, as Qwen3's 151645
        hidden_act="silu",
        initializer_range=0.02,
        max_window_layers=TINY_SHAPE["num_hidden_layers"],
        rms_norm_eps=1e-6,
        rope_scaling=None,
        rope_theta=1000000.0,
        sliding_window=None,
        tie_word_embeddings=True,
        torch_dtype="float32",
        use_cache=True,
        use_sliding_window=False,
        vocab_size=TINY_VOCAB,
        **TINY_SHAPE,  # head_dim 16 written explicitly
    )


def qwen3_chat_cases() -> list:
    """(messages, add_generation_prompt, template kwargs) rendered by transformers' apply_chat_template."""
    think = "<think>\nThe user wants a colour. Red is one.\n</think>\n\nRed."
    return [
        ([{"role": "user", "content": "What is the capital of France?"}], True, {}),
        (
            [
                {"role": "system", "content": "You are a terse assistant. Answer in one word."},
                {"role": "user", "content": "Name a primary colour."},
            ],
            True,
            {},
        ),
        # the assistant's last turn, <think> content included: rendered as <think>\n…\n</think>\n\n + answer
        (
            [
                {"role": "user", "content": "Name a primary colour."},
                {"role": "assistant", "content": think},
            ],
            False,
            {},
        ),
        # an earlier assistant turn (before the last user query): its <think>…</think> part is dropped
        (
            [
                {"role": "user", "content": "Name a primary colour."},
                {"role": "assistant", "content": think},
                {"role": "user", "content": "And another?"},
            ],
            True,
            {},
        ),
        # enable_thinking=False: the generation prompt gets an empty <think>\n\n</think>\n\n
        ([{"role": "user", "content": "What is the capital of France?"}], True, {"enable_thinking": False}),
        ([{"role": "user", "content": "What is the capital of France?"}], True, {"enable_thinking": True}),
    ]


def qwen3_render_chats(tok, tk: Tokenizer) -> list:
    out = []
    for messages, add_gen, kwargs in qwen3_chat_cases():
        text = tok.apply_chat_template(messages, add_generation_prompt=add_gen, tokenize=False, **kwargs)
        ids = tk.encode(text, add_special_tokens=False).ids
        templ = tok.apply_chat_template(messages, add_generation_prompt=add_gen, tokenize=True, return_dict=True, **kwargs)
        assert list(templ["input_ids"]) == ids, "apply_chat_template(tokenize=True) disagrees with tokenizer.json"
        assert list(tok(text, add_special_tokens=False)["input_ids"]) == ids
        out.append(
            {
                "messages": messages,
                "add_generation_prompt": add_gen,
                "template_kwargs": kwargs,
                "add_special_tokens": False,
                "text": text,
                "ids": ids,
            }
        )
    by_text = [c["text"] for c in out]
    assert "<think>\nThe user wants a colour. Red is one.\n</think>\n\nRed.<|im_end|>\n" in by_text[2]
    assert "<think>" not in by_text[3] and by_text[3].endswith("<|im_start|>assistant\n")
    assert by_text[4].endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n") and by_text[5] == by_text[0]
    return out


def qwen3_convert(llama_cpp: Path, outtype: str, out: Path) -> list:
    args = ["--outtype", outtype, "--outfile", str(out), str(QWEN3_DIR)]
    cmd = [sys.executable, "-c", QWEN3_CONVERT_WRAPPER, str(llama_cpp)] + args
    import subprocess

    res = subprocess.run(cmd, cwd=str(ROOT), capture_output=True, text=True)
    if res.returncode != 0:
        sys.exit(f"convert_hf_to_gguf.py failed ({res.returncode}):\n{res.stdout}\n{res.stderr}")
    return ["convert_hf_to_gguf.py", "--outtype", outtype, "--outfile", str(out.relative_to(ROOT)), str(QWEN3_DIR.relative_to(ROOT))]


def qwen3_gguf_summary(path: Path) -> dict:
    """Metadata (arrays as their length and element type) and tensors (type, GGUF shape) of a GGUF file."""
    r = gguf.GGUFReader(str(path))
    kv = {}
    for key, field in r.fields.items():
        if key.startswith("GGUF."):
            continue
        if field.types and field.types[0] == gguf.GGUFValueType.ARRAY:
            kv[key] = {"array_of": field.types[-1].name, "len": len(field.data)}
        else:
            kv[key] = field.contents()
    tensors = {t.name: {"type": t.tensor_type.name, "shape": [int(x) for x in t.shape]} for t in r.tensors}
    return {"metadata": kv, "tensors": tensors}


def make_qwen3():
    print("[qwen3] tiny Qwen3")
    seed_everything()
    llama_cpp = qwen3_llama_cpp()
    sdist = llama_cpp.parent.parent.name  # llama_cpp_python-<version>
    template_path = llama_cpp / QWEN3_TEMPLATE_FILE
    chat_template = template_path.read_text(encoding="utf-8")
    assert "enable_thinking" in chat_template and "<think>" in chat_template

    tk = qwen3_tokenizer()
    cfg = qwen3_config()
    tok_config = {  # Qwen/Qwen3-0.6B's tokenizer_config.json, with the tiny tokenizer's class and length
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": None,
        "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>",
        "unk_token": None,
        "add_bos_token": False,
        "add_eos_token": False,
        "add_prefix_space": False,
        "clean_up_tokenization_spaces": False,
        "split_special_tokens": False,
        "errors": "replace",
        "model_max_length": TINY_SHAPE["max_position_embeddings"],
        "chat_template": chat_template,
    }
    d = QWEN3_DIR
    write_hf_folder(d, cfg, tk, tok_config)

    config = AutoConfig.from_pretrained(str(d))
    assert type(config).__name__ == "Qwen3Config" and config.head_dim == 16, config
    torch.manual_seed(SEED + QWEN3_SEED_IDX)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32, attn_implementation="eager")
    model.eval()
    assert type(model).__name__ == "Qwen3ForCausalLM"
    init_tiny_weights(model, SEED + 100 + QWEN3_SEED_IDX)  # q_norm / k_norm too: 1 + 0.1·randn, like every norm
    sd = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    sd.pop("lm_head.weight")
    for i in range(cfg["num_hidden_layers"]):
        for n in ("q_norm", "k_norm"):
            w = sd[f"model.layers.{i}.self_attn.{n}.weight"]
            assert w.shape == (cfg["head_dim"],) and (w - 1).abs().min() > 0, (n, w)
    save_file(dict(sorted(sd.items())), str(d / "model.safetensors"), metadata={"format": "pt"})

    cases, prompt = tiny_case_ids()
    loaded = reload_checked(d, model, cases)
    inv = loaded.model.rotary_emb.inv_freq.detach().clone()
    assert torch.allclose(inv, default_inv_freq(cfg["rope_theta"], cfg["head_dim"]), rtol=1e-6, atol=0)
    rope_info = {"rope_parameters": loaded.config.rope_parameters, "inv_freq": f32_list(inv)}
    rope_info["attention_scaling"] = float(loaded.model.rotary_emb.attention_scaling)

    # tokenizer.json is the authority; transformers' generic and Auto tokenizers must agree with it
    sample_texts = TOKENIZATION_CASES + TINY_CORPUS[:3]
    htok = transformers.PreTrainedTokenizerFast.from_pretrained(str(d))
    auto_tok = AutoTokenizer.from_pretrained(str(d))
    for text in sample_texts:
        assert list(htok(text)["input_ids"]) == tk.encode(text).ids, text
        assert list(auto_tok(text)["input_ids"]) == tk.encode(text).ids, text
    chat = qwen3_render_chats(auto_tok, tk)

    meta = versions() | {"arch": cfg["architectures"][0], "model_type": cfg["model_type"]}
    meta |= {"seed": SEED + 100 + QWEN3_SEED_IDX, "attn_implementation": "eager", "rope": rope_info}
    meta |= {
        "auto_tokenizer_class": type(auto_tok).__name__,
        "tokenizer": "tiny tokenizer (vocab 384, same vocab/merges as tests/fixtures/tiny/tokenizer.json) with "
        "Qwen3's pre-tokenizer: Split(Qwen2 regex, isolated) + ByteLevel(use_regex=false)",
        "chat_template_source": f"{sdist} sdist: vendor/llama.cpp/{QWEN3_TEMPLATE_FILE} (Qwen/Qwen3-0.6B's)",
        "chat_template_sha256": hashlib.sha256(chat_template.encode("utf-8")).hexdigest(),
    }
    ref = tiny_reference(loaded, cases, prompt, meta)
    ref["chat"] = chat
    write_json(d / "reference.json", ref)
    print(f"  greedy {prompt} -> {ref['greedy']['new_ids']} (eos in new ids: {ref['greedy']['eos_in_new_ids']})")

    # --- GGUF by llama.cpp's converter
    g = QWEN3_GGUF_DIR
    if g.exists():
        shutil.rmtree(g)
    g.mkdir(parents=True)
    conv_path = llama_cpp / "convert_hf_to_gguf.py"
    summary = {}
    f32_logits = None
    for kind in QWEN3_GGUF_TYPES:
        path = g / f"qwen3-{kind}.gguf"
        argv = qwen3_convert(llama_cpp, kind, path)
        info = qwen3_gguf_summary(path)
        kv, tensors = info["metadata"], info["tensors"]
        assert kv["general.architecture"] == "qwen3" and kv["tokenizer.ggml.pre"] == "qwen2", kv
        assert kv["tokenizer.ggml.model"] == "gpt2" and kv["tokenizer.chat_template"] == chat_template
        assert kv["qwen3.attention.key_length"] == cfg["head_dim"] and "output.weight" not in tensors
        for i in range(cfg["num_hidden_layers"]):
            assert f"blk.{i}.attn_q_norm.weight" in tensors and f"blk.{i}.attn_k_norm.weight" in tensors
        # llama.cpp runs qwen3 with NEOX rope (rotate-half, HF's layout): the converter does not permute q/k
        if kind == "f32":
            rd = {t.name: np.array(t.data) for t in gguf.GGUFReader(str(path)).tensors}
            for i in range(cfg["num_hidden_layers"]):
                for hf, gg in (("q_proj", "attn_q"), ("k_proj", "attn_k")):
                    assert np.array_equal(rd[f"blk.{i}.{gg}.weight"], sd[f"model.layers.{i}.self_attn.{hf}.weight"].numpy())

        # transformers (5.24) maps no GGUF key to Qwen3's head_dim -- its qwen3 table lacks attention.key_length,
        # which its qwen3_moe table has -- so Qwen3Config's default 128 stands and the q/k/v/o/norm shapes
        # mismatch. Take the config from the GGUF and set that one value from qwen3.attention.key_length.
        gconf = AutoConfig.from_pretrained(str(g), gguf_file=path.name)
        head_dim_as_read = gconf.head_dim
        gconf.head_dim = kv["qwen3.attention.key_length"]
        for key in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                    "num_key_value_heads", "head_dim", "vocab_size", "rms_norm_eps", "tie_word_embeddings"):
            a, b = getattr(gconf, key), getattr(config, key)
            assert a == b or np.float32(a) == np.float32(b), (key, a, b)  # GGUF stores eps as f32
        assert gconf.rope_parameters["rope_theta"] == config.rope_parameters["rope_theta"], gconf.rope_parameters
        model_g = AutoModelForCausalLM.from_pretrained(
            str(g), gguf_file=path.name, config=gconf, dtype=torch.float32, attn_implementation="eager"
        )
        model_g.eval()
        assert_float32(model_g)
        assert type(model_g).__name__ == "Qwen3ForCausalLM" and model_g.config.tie_word_embeddings
        gtok = AutoTokenizer.from_pretrained(str(g), gguf_file=path.name)
        for text in sample_texts + [c["text"] for c in chat]:
            assert list(gtok(text, add_special_tokens=False)["input_ids"]) == tk.encode(text).ids, (kind, text)
        logits = [forward_logits(model_g, ids) for ids in cases]
        st_logits = [forward_logits(loaded, ids) for ids in cases]
        max_diff = max((a - b).abs().max().item() for a, b in zip(logits, st_logits))
        gsd, ssd = model_g.state_dict(), loaded.state_dict()
        w_err = max((gsd[k] - ssd[k]).abs().max().item() for k in ssd)
        if kind == "f32":
            f32_logits = logits
            assert w_err == 0.0 and max_diff <= 1e-5, (w_err, max_diff)
        vs_f32 = max((a - b).abs().max().item() for a, b in zip(logits, f32_logits))
        print(f"  {path.name}: {path.stat().st_size} bytes, max |logits - safetensors| = {max_diff:.3e}, "
              f"max |weight diff| = {w_err:.3e}")
        meta = versions() | {
            "arch": "Qwen3ForCausalLM",
            "source": "tests/fixtures/tiny/qwen3",
            "gguf_file": path.name,
            "gguf_sha256": sha256_file(path),
            "converter": {
                "sdist": sdist,
                "script": "vendor/llama.cpp/convert_hf_to_gguf.py",
                "script_sha256": sha256_file(conv_path),
                "argv": argv,
                "override": "get_vocab_base_pre -> 'qwen2' (the tiny vocab's pre-tokenizer hash is unknown to it)",
            },
            "gguf_metadata": kv,
            "tensor_types": {n: t["type"] for n, t in tensors.items()},
            "tensors": tensors,
            "transformers_gguf_head_dim": {"as_read": head_dim_as_read, "set_from": "qwen3.attention.key_length"},
            "max_abs_logit_diff_vs_safetensors": max_diff,
            "max_abs_logit_diff_vs_f32_gguf": vs_f32,
            "max_abs_weight_diff_vs_safetensors": w_err,
            "attn_implementation": "eager",
        }
        ref_g = tiny_reference(model_g, cases, prompt, meta)
        write_json(g / ("reference.json" if kind == "f32" else f"reference_{kind}.json"), ref_g)
        summary[kind] = max_diff
    return summary


# ----------------------------------------------------------------------------------------------
# P. tiny random-weight Phi-3 (fused qkv_proj / gate_up_proj, partial rotary, LongRoPE): HF folder, and the
#    GGUF llama.cpp's convert_hf_to_gguf.py writes from it
# ----------------------------------------------------------------------------------------------

PHI3_DIR = TINY / "phi3"
PHI3_GGUF_DIR = TINY / "phi3-gguf"
PHI3_SEED_IDX = 5  # next after qwen3's 4
PHI3_GGUF_TYPES = ["f32", "f16"]
PHI3_TEMPLATE_FILE = "models/templates/microsoft-Phi-3.5-mini-instruct.jinja"
# Pre-training context of the tiny LongRoPE: the 24-token case runs past it (long factors), the others within
# it (short factors), so both factor sets are checked.
PHI3_ORIGINAL_CONTEXT = 16
PHI3_PARTIAL_ROTARY = 0.75  # Phi-4-mini's: 12 of the 16 head dimensions rotate
PHI3_CONVERT_WRAPPER = r"""
import sys
llama_cpp = sys.argv[1]
sys.path.insert(0, llama_cpp)
sys.argv = [llama_cpp + "/convert_hf_to_gguf.py"] + sys.argv[2:]
import convert_hf_to_gguf  # puts its bundled gguf-py first on sys.path
from conversion.phi import Phi3MiniModel
# Phi-4-mini ships a BPE tokenizer.json (the converter's GPT2Tokenizer path); the tiny one's pre-tokenizer is
# GPT-2's byte-level regex, whose llama.cpp name is "gpt-2", but its vocab hash is unknown to the converter.
Phi3MiniModel.set_vocab = lambda self: self._set_vocab_gpt2()
Phi3MiniModel.get_vocab_base_pre = lambda self, tokenizer: "gpt-2"
convert_hf_to_gguf.main()
"""
# llama.cpp's Phi-3 tensor names -> Hugging Face's (the converter's mapping, inverted, for the tiny model)
PHI3_GGUF_TO_HF = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
    "attn_qkv": "self_attn.qkv_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_up": "mlp.gate_up_proj",
    "ffn_down": "mlp.down_proj",
}


def phi3_config() -> dict:
    """config.json in the form of microsoft/Phi-4-mini-instruct's (partial rotary 0.75, LongRoPE, tied
    embeddings), with the tiny shape."""
    rot = int(TINY_SHAPE["head_dim"] * PHI3_PARTIAL_ROTARY)
    g = torch.Generator().manual_seed(SEED + 200 + PHI3_SEED_IDX)
    short = [round(float(x), 4) for x in 1.0 + 0.5 * torch.rand(rot // 2, generator=g)]
    long = [round(float(x), 4) for x in 1.0 + 20.0 * torch.rand(rot // 2, generator=g)]
    return dict(
        architectures=["Phi3ForCausalLM"],
        model_type="phi3",
        attention_bias=False,
        attention_dropout=0.0,
        bos_token_id=0,
        eos_token_id=EOS_ID,
        pad_token_id=EOS_ID,
        embd_pdrop=0.0,
        resid_pdrop=0.0,
        hidden_act="silu",
        initializer_range=0.02,
        rms_norm_eps=1e-5,
        original_max_position_embeddings=PHI3_ORIGINAL_CONTEXT,
        partial_rotary_factor=PHI3_PARTIAL_ROTARY,
        rope_scaling={"type": "longrope", "short_factor": short, "long_factor": long},
        rope_theta=10000.0,
        sliding_window=None,
        tie_word_embeddings=True,
        torch_dtype="float32",
        use_cache=True,
        vocab_size=TINY_VOCAB,
        **TINY_SHAPE,
    )


def phi3_model_from_gguf(path: Path, config) -> torch.nn.Module:
    """transformers' Phi3ForCausalLM (from config.json) with the GGUF file's tensors, dequantised by gguf-py.
    transformers' own GGUF loader drops Phi-3's partial rotary factor and LongRoPE factors (its phi3 table maps
    rope.dimension_count to nothing), so the reference for a GGUF is the real model class with its weights."""
    r = gguf.GGUFReader(str(path))
    sd = {}
    for t in r.tensors:
        if t.name.startswith("rope_factors_"):
            continue
        if t.name in PHI3_GGUF_TO_HF:
            key = PHI3_GGUF_TO_HF[t.name]
        else:
            blk, i, module, param = t.name.split(".")
            assert blk == "blk", t.name
            key = f"model.layers.{i}.{PHI3_GGUF_TO_HF[module]}.{param}"
        shape = [int(x) for x in reversed(t.shape)]
        sd[key] = torch.from_numpy(np.array(gguf.quants.dequantize(t.data, t.tensor_type), dtype=np.float32).reshape(shape))
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32, attn_implementation="eager")
    missing, unexpected = model.load_state_dict(sd, strict=False)
    assert not unexpected and set(missing) <= {"lm_head.weight"}, (missing, unexpected)
    model.tie_weights()
    model.eval()
    return model


def make_phi3():
    print("[phi3] tiny Phi-3")
    seed_everything()
    llama_cpp = qwen3_llama_cpp()
    sdist = llama_cpp.parent.parent.name
    chat_template = (llama_cpp / PHI3_TEMPLATE_FILE).read_text(encoding="utf-8")
    tk = build_tiny_tokenizer()
    cfg = phi3_config()
    tok_config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": "<|endoftext|>",
        "eos_token": "<|im_end|>",
        "pad_token": "<|im_end|>",
        "unk_token": None,
        "add_bos_token": False,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": TINY_SHAPE["max_position_embeddings"],
        "chat_template": chat_template,
    }
    d = PHI3_DIR
    write_hf_folder(d, cfg, tk, tok_config)

    config = AutoConfig.from_pretrained(str(d))
    assert type(config).__name__ == "Phi3Config", config
    rp = config.rope_parameters
    assert rp["rope_type"] == "longrope" and rp["partial_rotary_factor"] == PHI3_PARTIAL_ROTARY, rp
    torch.manual_seed(SEED + PHI3_SEED_IDX)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32, attn_implementation="eager")
    model.eval()
    assert type(model).__name__ == "Phi3ForCausalLM"
    init_tiny_weights(model, SEED + 100 + PHI3_SEED_IDX)
    sd = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    sd.pop("lm_head.weight")
    h, hd = cfg["hidden_size"], cfg["head_dim"]
    qkv = (cfg["num_attention_heads"] + 2 * cfg["num_key_value_heads"]) * hd
    assert sd["model.layers.0.self_attn.qkv_proj.weight"].shape == (qkv, h)
    assert sd["model.layers.0.mlp.gate_up_proj.weight"].shape == (2 * cfg["intermediate_size"], h)
    save_file(dict(sorted(sd.items())), str(d / "model.safetensors"), metadata={"format": "pt"})

    cases, prompt = tiny_case_ids()
    assert max(len(c) for c in cases) > PHI3_ORIGINAL_CONTEXT >= len(prompt) + 10, "both factor sets exercised"
    loaded = reload_checked(d, model, cases)
    rot = loaded.model.rotary_emb
    short_inv = rot.original_inv_freq.detach().clone()
    assert short_inv.numel() == int(hd * PHI3_PARTIAL_ROTARY) // 2
    rope_info = {
        "rope_parameters": loaded.config.rope_parameters,
        "inv_freq_short": f32_list(short_inv),
        "attention_scaling": float(rot.attention_scaling),
    }
    # the long set, as transformers switches to it past the pre-training context
    forward_logits(loaded, cases[-1])
    rope_info["inv_freq_long"] = f32_list(rot.long_inv_freq.detach().clone())
    assert not torch.equal(rot.long_inv_freq, short_inv)
    sample_texts = TOKENIZATION_CASES + TINY_CORPUS[:3]
    auto_tok = AutoTokenizer.from_pretrained(str(d))
    for text in sample_texts:
        assert list(auto_tok(text)["input_ids"]) == tk.encode(text).ids, text
    meta = versions() | {"arch": cfg["architectures"][0], "model_type": cfg["model_type"]}
    meta |= {"seed": SEED + 100 + PHI3_SEED_IDX, "attn_implementation": "eager", "rope": rope_info}
    meta |= {
        "tokenizer": "tiny tokenizer (tests/fixtures/tiny/tokenizer.json)",
        "chat_template_source": f"{sdist} sdist: vendor/llama.cpp/{PHI3_TEMPLATE_FILE}",
    }
    ref = tiny_reference(loaded, cases, prompt, meta)
    write_json(d / "reference.json", ref)
    print(f"  greedy {prompt} -> {ref['greedy']['new_ids']}")

    g = PHI3_GGUF_DIR
    if g.exists():
        shutil.rmtree(g)
    g.mkdir(parents=True)
    import subprocess

    summary = {}
    for kind in PHI3_GGUF_TYPES:
        path = g / f"phi3-{kind}.gguf"
        args = ["--outtype", kind, "--outfile", str(path), str(d)]
        res = subprocess.run([sys.executable, "-c", PHI3_CONVERT_WRAPPER, str(llama_cpp)] + args, cwd=str(ROOT),
                             capture_output=True, text=True)
        if res.returncode != 0:
            sys.exit(f"convert_hf_to_gguf.py failed ({res.returncode}):\n{res.stdout}\n{res.stderr}")
        info = qwen3_gguf_summary(path)
        kv, tensors = info["metadata"], info["tensors"]
        assert kv["general.architecture"] == "phi3" and kv["tokenizer.ggml.model"] == "gpt2", kv
        assert kv["phi3.rope.dimension_count"] == int(hd * PHI3_PARTIAL_ROTARY), kv
        assert kv["phi3.rope.scaling.original_context_length"] == PHI3_ORIGINAL_CONTEXT, kv
        assert "rope_factors_long.weight" in tensors and "rope_factors_short.weight" in tensors, tensors
        assert "blk.0.attn_qkv.weight" in tensors and "blk.0.attn_q.weight" not in tensors, tensors
        model_g = phi3_model_from_gguf(path, config)
        w_err = max((model_g.state_dict()[k] - v).abs().max().item() for k, v in sd.items())
        if kind == "f32":
            assert w_err == 0.0, w_err
        logits_diff = max((forward_logits(model_g, ids) - forward_logits(loaded, ids)).abs().max().item() for ids in cases)
        print(f"  {path.name}: {path.stat().st_size} bytes, max |weight diff| = {w_err:.3e}, "
              f"max |logits - safetensors| = {logits_diff:.3e}")
        meta_g = versions() | {
            "arch": "Phi3ForCausalLM",
            "source": "tests/fixtures/tiny/phi3",
            "gguf_file": path.name,
            "gguf_sha256": sha256_file(path),
            "converter": {
                "sdist": sdist,
                "script": "vendor/llama.cpp/convert_hf_to_gguf.py",
                "argv": ["convert_hf_to_gguf.py"] + args[:3] + [str(d.relative_to(ROOT))],
                "override": "set_vocab -> _set_vocab_gpt2, get_vocab_base_pre -> 'gpt-2' (tiny vocab hash unknown)",
            },
            "reference": "transformers' Phi3ForCausalLM from tiny/phi3/config.json with the GGUF's tensors "
            "(dequantised by gguf-py): transformers' GGUF loader drops partial rotary and LongRoPE",
            "gguf_metadata": kv,
            "tensors": tensors,
            "max_abs_weight_diff_vs_safetensors": w_err,
            "max_abs_logit_diff_vs_safetensors": logits_diff,
            "attn_implementation": "eager",
        }
        write_json(g / ("reference.json" if kind == "f32" else f"reference_{kind}.json"),
                   tiny_reference(model_g, cases, prompt, meta_g))
        summary[kind] = logits_diff
    return summary


# ----------------------------------------------------------------------------------------------
# H. tiny random-weight Gemma 2 and Gemma 3 (text): HF folders, and the GGUFs llama.cpp's converter writes
# ----------------------------------------------------------------------------------------------

GEMMA_ARCHS = ["gemma2", "gemma3"]
GEMMA_SEED_IDX = {"gemma2": 5, "gemma3": 6}  # torch seed SEED + idx, weights SEED + 100 + idx (after qwen3's 4)
GEMMA_GGUF_TYPES = ["f32", "f16"]
# Gemma's special tokens at Gemma's own ids (google/gemma-2-2b, gemma-3-1b-it: <pad> 0, <eos> 1, <bos> 2,
# <unk> 3, <mask> 4), then the 256 byte-fallback tokens <0x00>..<0xFF>, then the trained pieces.
GEMMA_SPECIALS = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>"]
GEMMA_VOCAB = 512
GEMMA_SLIDING_WINDOW = 4  # < the 7- and 24-token cases, so the window masks keys
# Gemma 3's layer pattern is llama.cpp's hard-wired one (5 sliding, then 1 global: load_swa_pattern(ml, 6)),
# so 6 layers put a global layer in the GGUF too; Gemma 2 alternates (sliding, global).
GEMMA_SHAPE = dict(
    hidden_size=64,
    intermediate_size=128,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=32,  # heads * head_dim = 128 != hidden 64, as in the real Gemmas
    max_position_embeddings=256,
)
# Run in a fresh interpreter: the converter must import its bundled gguf-py, not the gguf this script imported.
GEMMA_CONVERT_WRAPPER = r"""
import sys
llama_cpp = sys.argv[1]
sys.path.insert(0, llama_cpp)
sys.argv = [llama_cpp + "/convert_hf_to_gguf.py"] + sys.argv[2:]
import convert_hf_to_gguf  # puts its bundled gguf-py first on sys.path
from conversion.gemma import Gemma2Model, Gemma3Model
# Gemma's set_vocab reads a sentencepiece tokenizer.model with the sentencepiece package (neither is in the
# reference venv, and sentencepiece cannot be installed offline). The tiny tokenizer.json IS a sentencepiece-style
# BPE (byte_fallback, a Replace(" ", "\u2581") normalizer, a Sequence decoder), which the converter's own
# _set_vocab_llama_hf (gguf-py's LlamaHfVocab) writes as tokenizer.ggml.model = "llama" with tokens, scores and
# token types -- the same keys _set_vocab_sentencepiece writes. add_space_prefix False as Gemma's set_vocab sets it.
def set_vocab(self):
    self._set_vocab_llama_hf()
    self.gguf_writer.add_add_space_prefix(False)
Gemma2Model.set_vocab = set_vocab
Gemma3Model.set_vocab = set_vocab
convert_hf_to_gguf.main()
"""
# GGUF tensor (llama.cpp's gemma2 / gemma3 names) -> Hugging Face key, per layer
GEMMA_GGUF_NAMES = {
    "attn_norm": "input_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "attn_q_norm": "self_attn.q_norm",
    "attn_k_norm": "self_attn.k_norm",
    "post_attention_norm": "post_attention_layernorm",
    "ffn_norm": "pre_feedforward_layernorm",
    "post_ffw_norm": "post_feedforward_layernorm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}


def gemma_tokenizer() -> Tokenizer:
    """A tiny Gemma-style tokenizer.json: BPE with byte fallback over "\u2581"-spaced pieces (what transformers'
    GemmaTokenizer builds: Replace(" ", "\u2581") normalizer, Split(" ", merged_with_previous), decoder
    Replace + ByteFallback + Fuse, BOS prepended). Pieces are trained on the tiny corpus; the merges are the ones
    transformers derives from a Gemma vocabulary (generate_merges over the vocab, best = earliest id), so the
    same vocabulary read back from GGUF (tokens only, no merges) tokenizes identically."""
    from transformers.tokenization_utils_base import generate_merges

    def train() -> list:
        trainer_tk = Tokenizer(models.BPE())
        trainer_tk.normalizer = tokenizers.normalizers.Replace(" ", "\u2581")
        trainer_tk.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="never", split=True)
        ppl = (FIXTURES / "smollm2" / "ppl_text.txt").read_text(encoding="utf-8")
        corpus = TINY_CORPUS + [p for p in ppl.split("\n\n") if p.strip()]
        n_fixed = len(GEMMA_SPECIALS) + 256
        # every character of the corpus in the alphabet (a limited alphabet breaks frequency ties at random)
        trainer = trainers.BpeTrainer(vocab_size=GEMMA_VOCAB - n_fixed, min_frequency=2, show_progress=False)
        trainer_tk.train_from_iterator(corpus, trainer=trainer)
        return sorted(trainer_tk.get_vocab().items(), key=lambda kv: kv[1])

    trained = train()
    assert trained == train(), "BPE training is not deterministic"
    pieces = list(GEMMA_SPECIALS) + [f"<0x{b:02X}>" for b in range(256)]
    for piece, _ in trained:
        if piece not in pieces and len(pieces) < GEMMA_VOCAB:
            pieces.append(piece)
    assert len(pieces) == GEMMA_VOCAB, len(pieces)
    vocab = {p: i for i, p in enumerate(pieces)}
    merges = generate_merges(vocab, {p: -i for i, p in enumerate(pieces)})
    tk = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", fuse_unk=True, byte_fallback=True))
    tk.normalizer = tokenizers.normalizers.Replace(" ", "\u2581")
    tk.pre_tokenizer = pre_tokenizers.Split(" ", behavior="merged_with_previous", invert=False)
    tk.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse()])
    tk.add_special_tokens([AddedToken(t, normalized=False, special=True) for t in GEMMA_SPECIALS])
    tk.post_processor = processors.TemplateProcessing(single="<bos> $A", pair="<bos> $A <bos> $B", special_tokens=[("<bos>", 2)])
    assert tk.get_vocab_size(with_added_tokens=True) == GEMMA_VOCAB
    return tk


def gemma_config(arch: str) -> dict:
    """config.json in the form of google/gemma-2-2b's / gemma-3-1b-pt's, with the tiny shape."""
    common = dict(
        attention_bias=False,
        attention_dropout=0.0,
        bos_token_id=2,
        eos_token_id=1,
        pad_token_id=0,
        hidden_activation="gelu_pytorch_tanh",
        initializer_range=0.02,
        rms_norm_eps=1e-6,
        # llama.cpp scales queries by 1/sqrt(head_dim) (1/sqrt(hidden/heads) for the 27B models) and stores no
        # query_pre_attn_scalar: equal to head_dim here, so the HF folder and its GGUF are the same model.
        query_pre_attn_scalar=GEMMA_SHAPE["head_dim"],
        sliding_window=GEMMA_SLIDING_WINDOW,
        tie_word_embeddings=True,
        torch_dtype="float32",
        use_cache=True,
        vocab_size=GEMMA_VOCAB,
        **GEMMA_SHAPE,
    )
    if arch == "gemma2":
        # caps far below the real 50 / 30 so that tanh bends the tiny model's scores and logits
        return dict(
            architectures=["Gemma2ForCausalLM"],
            model_type="gemma2",
            num_hidden_layers=2,
            attn_logit_softcapping=4.0,
            final_logit_softcapping=5.0,
            rope_theta=10000.0,
            **common,
        )
    return dict(
        architectures=["Gemma3ForCausalLM"],
        model_type="gemma3_text",
        num_hidden_layers=6,
        attn_logit_softcapping=None,
        final_logit_softcapping=None,
        rope_theta=1000000.0,
        rope_local_base_freq=10000.0,
        rope_scaling={"rope_type": "linear", "factor": 8.0},  # as gemma-3-4b and larger (global layers only)
        sliding_window_pattern=6,
        **common,
    )


def init_gemma_weights(model, seed: int) -> None:
    """0.1·randn for every parameter. Gemma's norms scale by (1 + w), so w = 0.1·randn (a missing +1 shows);
    the embeddings are multiplied by √hidden = 8 on lookup, so 0.1 (not init_tiny_weights' 0.3) keeps one tied
    row from winning every greedy step."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, p in sorted(model.named_parameters(), key=lambda kv: kv[0]):
            p.copy_(0.1 * torch.randn(p.shape, generator=g, dtype=torch.float32))


def gemma_convert(llama_cpp: Path, src: Path, outtype: str, out: Path) -> list:
    import subprocess

    args = ["--outtype", outtype, "--outfile", str(out), str(src)]
    res = subprocess.run([sys.executable, "-c", GEMMA_CONVERT_WRAPPER, str(llama_cpp)] + args, cwd=str(ROOT), capture_output=True, text=True)
    if res.returncode != 0:
        sys.exit(f"convert_hf_to_gguf.py failed ({res.returncode}):\n{res.stdout}\n{res.stderr}")
    return ["convert_hf_to_gguf.py", "--outtype", outtype, "--outfile", str(out.relative_to(ROOT)), str(src.relative_to(ROOT))]


def gemma_state_from_gguf(path: Path, n_layers: int) -> dict:
    """The GGUF's tensors under their HF keys, dequantised to f32, with the converter's +1 on every norm undone."""
    sd = {}
    for t in gguf.GGUFReader(str(path)).tensors:
        data = np.array(t.data)
        if t.tensor_type == gguf.GGMLQuantizationType.F16:
            data = data.astype(np.float32)
        assert data.dtype == np.float32, (t.name, data.dtype)
        shape = [int(x) for x in reversed(t.shape)]
        w = torch.from_numpy(data.reshape(shape).copy())
        if t.name == "token_embd.weight":
            key = "model.embed_tokens.weight"
        elif t.name == "output_norm.weight":
            key = "model.norm.weight"
        else:
            _, i, short, param = t.name.split(".")
            assert int(i) < n_layers
            key = f"model.layers.{i}.{GEMMA_GGUF_NAMES[short]}.{param}"
        if key.endswith("norm.weight"):
            w = w - 1.0
        sd[key] = w
    return sd


def make_gemma():
    llama_cpp = qwen3_llama_cpp()
    sdist = llama_cpp.parent.parent.name
    conv_path = llama_cpp / "convert_hf_to_gguf.py"
    tk = gemma_tokenizer()
    sample_texts = TOKENIZATION_CASES + TINY_CORPUS[:3]
    for arch in GEMMA_ARCHS:
        print(f"[gemma] tiny {arch}")
        seed_everything()
        cfg = gemma_config(arch)
        tok_config = {  # google/gemma-2-2b's tokenizer_config.json, with the tiny tokenizer
            "tokenizer_class": "GemmaTokenizer",
            "bos_token": "<bos>",
            "eos_token": "<eos>",
            "pad_token": "<pad>",
            "unk_token": "<unk>",
            "mask_token": "<mask>",
            "add_bos_token": True,
            "add_eos_token": False,
            "clean_up_tokenization_spaces": False,
            "spaces_between_special_tokens": False,
            "model_max_length": GEMMA_SHAPE["max_position_embeddings"],
        }
        d = TINY / arch
        write_hf_folder(d, cfg, tk, tok_config)

        config = AutoConfig.from_pretrained(str(d))
        want_types = (
            ["sliding_attention", "full_attention"] if arch == "gemma2" else ["sliding_attention"] * 5 + ["full_attention"]
        )
        assert config.layer_types == want_types, config.layer_types
        torch.manual_seed(SEED + GEMMA_SEED_IDX[arch])
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32, attn_implementation="eager")
        model.eval()
        assert type(model).__name__ == cfg["architectures"][0], type(model).__name__
        init_gemma_weights(model, SEED + 100 + GEMMA_SEED_IDX[arch])
        sd = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
        assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
        sd.pop("lm_head.weight")
        save_file(dict(sorted(sd.items())), str(d / "model.safetensors"), metadata={"format": "pt"})

        cases, prompt = tiny_case_ids()
        loaded = reload_checked(d, model, cases, arch)
        # the fixture must exercise what makes Gemma Gemma: without the window (or the soft-caps) the same weights
        # give other logits on the 24-token case
        longest = max(cases, key=len)
        assert len(longest) > GEMMA_SLIDING_WINDOW
        changes = {"sliding_window": 10_000}
        if arch == "gemma2":
            changes |= {"attn_logit_softcapping": None, "final_logit_softcapping": None}
        for key, value in changes.items():
            other = AutoConfig.from_pretrained(str(d), **{key: value})
            variant = AutoModelForCausalLM.from_config(other, dtype=torch.float32, attn_implementation="eager").eval()
            variant.load_state_dict(loaded.state_dict())
            moved = (forward_logits(variant, longest) - forward_logits(loaded, longest)).abs().max().item()
            assert moved > 1e-2, (arch, key, moved)
        rope = {"rope_parameters": loaded.config.rope_parameters}
        if arch == "gemma3":
            rope["inv_freq"] = {t: f32_list(getattr(loaded.model.rotary_emb, f"{t}_inv_freq")) for t in ("sliding_attention", "full_attention")}
        else:
            rope["inv_freq"] = f32_list(loaded.model.rotary_emb.inv_freq)

        htok = AutoTokenizer.from_pretrained(str(d))
        tok_cases = []
        for text in sample_texts:
            ids = tk.encode(text).ids
            assert list(htok(text)["input_ids"]) == ids, (text, list(htok(text)["input_ids"]), ids)
            assert ids[0] == 2, "BOS first"
            tok_cases.append({"text": text, "add_special_tokens": True, "ids": ids})

        meta = versions() | {"arch": cfg["architectures"][0], "model_type": cfg["model_type"]}
        meta |= {"seed": SEED + 100 + GEMMA_SEED_IDX[arch], "attn_implementation": "eager", "rope": rope}
        meta |= {
            "layer_types": config.layer_types,
            "auto_tokenizer_class": type(htok).__name__,
            "tokenizer": f"tiny Gemma-style tokenizer (vocab {GEMMA_VOCAB}: 5 specials, 256 byte-fallback tokens, pieces "
            "trained on the tiny corpus; merges = transformers' generate_merges by id)",
        }
        ref = tiny_reference(loaded, cases, prompt, meta)
        ref["tokenizer"] = tok_cases
        write_json(d / "reference.json", ref)
        print(f"  greedy {prompt} -> {ref['greedy']['new_ids']}")

        g = TINY / f"{arch}-gguf"
        if g.exists():
            shutil.rmtree(g)
        g.mkdir(parents=True)
        f32_logits = None
        st_logits = [forward_logits(loaded, ids) for ids in cases]
        for kind in GEMMA_GGUF_TYPES:
            path = g / f"{arch}-{kind}.gguf"
            argv = gemma_convert(llama_cpp, d, kind, path)
            info = qwen3_gguf_summary(path)
            kv, tensors = info["metadata"], info["tensors"]
            assert kv["general.architecture"] == arch and kv["tokenizer.ggml.model"] == "llama", kv
            assert f"{arch}.attention.sliding_window" in kv and "output.weight" not in tensors, kv
            # the GGUF's own weights (norms minus the converter's +1) in the transformers model: its logits are
            # the reference for this file (f16 rounding included)
            gmodel = AutoModelForCausalLM.from_pretrained(str(d), dtype=torch.float32, attn_implementation="eager")
            gmodel.eval()
            gsd = gemma_state_from_gguf(path, cfg["num_hidden_layers"])
            assert set(gsd) == set(sd), set(gsd) ^ set(sd)
            w_err = max((gsd[k] - sd[k]).abs().max().item() for k in sd)
            missing, unexpected = gmodel.load_state_dict(gsd, strict=False)
            assert not unexpected and set(missing) <= {"lm_head.weight"}, (missing, unexpected)
            assert gmodel.lm_head.weight.data_ptr() == gmodel.model.embed_tokens.weight.data_ptr()
            logits = [forward_logits(gmodel, ids) for ids in cases]
            max_diff = max((a - b).abs().max().item() for a, b in zip(logits, st_logits))
            if kind == "f32":
                f32_logits = logits
                assert w_err <= 1e-6 and max_diff <= 1e-4, (w_err, max_diff)
            vs_f32 = max((a - b).abs().max().item() for a, b in zip(logits, f32_logits))
            # transformers' own GGUF tokenizer for gemma (merges rebuilt from the token order) agrees
            gtok = AutoTokenizer.from_pretrained(str(g), gguf_file=path.name)
            gtok_agrees = all(list(gtok(c["text"])["input_ids"]) == c["ids"] for c in tok_cases)
            print(f"  {path.name}: {path.stat().st_size} bytes, max |logits - safetensors| = {max_diff:.3e}, "
                  f"max |weight diff| = {w_err:.3e}, transformers' GGUF tokenizer agrees: {gtok_agrees}")
            meta = versions() | {
                "arch": cfg["architectures"][0],
                "source": f"tests/fixtures/tiny/{arch}",
                "gguf_file": path.name,
                "gguf_sha256": sha256_file(path),
                "converter": {
                    "sdist": sdist,
                    "script": "vendor/llama.cpp/convert_hf_to_gguf.py",
                    "script_sha256": sha256_file(conv_path),
                    "argv": argv,
                    "override": "set_vocab -> _set_vocab_llama_hf (tokenizer.json; no tokenizer.model / sentencepiece)",
                },
                "gguf_metadata": kv,
                "tensor_types": {n: t["type"] for n, t in tensors.items()},
                "reference": "transformers on the GGUF's weights (gguf-py dequantised, norms - 1) in the HF model",
                "max_abs_logit_diff_vs_safetensors": max_diff,
                "max_abs_logit_diff_vs_f32_gguf": vs_f32,
                "max_abs_weight_diff_vs_safetensors": w_err,
                "transformers_gguf_tokenizer_agrees": gtok_agrees,
                "attn_implementation": "eager",
            }
            ref_g = tiny_reference(gmodel, cases, prompt, meta)
            ref_g["tokenizer"] = tok_cases
            write_json(g / ("reference.json" if kind == "f32" else f"reference_{kind}.json"), ref_g)


# ----------------------------------------------------------------------------------------------
# K. llama.cpp's own quantisations: a tiny K-quant-shaped llama (committed) and SmolLM2 (reference only).
#    llama-quantize / llama-perplexity come from scripts/llama-cpp-tools.sh (llama-cpp-python==0.3.36 sdist).
# ----------------------------------------------------------------------------------------------

LLAMA_CPP_HOME = Path.home() / ".cache" / "lora-null" / "llama.cpp"
KQUANT_DIR = TINY / "llama-kquant"
KQUANT_WORK = Path.home() / ".cache" / "lora-null" / "kquant-work"  # the f32 GGUF (5 MB: not committed)
# Every linear row length (hidden 256, intermediate 512, head_dim 64) and the tied embedding's row (hidden 256)
# is a multiple of QK_K = 256, so each tensor can take its K-quant type without llama.cpp's fallbacks.
KQUANT_SHAPE = dict(
    num_hidden_layers=2,
    hidden_size=256,
    intermediate_size=512,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=64,
    max_position_embeddings=256,
)
# llama-quantize's type names; the order is the order of reference.json's "types". No Q6_K file: every one of
# these already stores the tied token_embd.weight as Q6_K (and Q4_K_M / Q5_K_M blk.1 attn_v and ffn_down too),
# and an all-Q6_K file (1.06 MB) would take the folder over its ~8 MB budget.
KQUANT_TYPES = ["Q4_K_M", "Q5_K_M", "Q3_K_M", "Q2_K", "IQ4_XS", "IQ4_NL", "Q5_0", "Q5_1"]
KQUANT_SEED = SEED + 900  # torch seed (from_config); weights SEED + 901; case ids SEED + 902
KQUANT_CASE_LENGTHS = [8, 24]
KQUANT_PPL_LEN = 64  # one window: the first 64 tiny-tokenizer ids of smollm2/ppl_text.txt, first id not scored
KQUANT_LLAMA_PPL = dict(ctx=64, chunks=4)  # llama-perplexity cross-check on the same text
SMOL_KQUANT_DIR = Path.home() / ".cache" / "lora-null" / "smollm2-kquant"
SMOL_KQUANT_TYPES = ["Q4_K_M", "Q5_K_M", "Q6_K", "Q3_K_M", "IQ4_XS"]
SMOL_PPL_SEQ_LEN = 128  # = make_smollm2's perplexity windows


def llama_cpp_tool(tool: str) -> Path:
    """A binary built by scripts/llama-cpp-tools.sh (or found in $LLAMA_CPP_BIN)."""
    env = os.environ.get("LLAMA_CPP_BIN")
    found = [Path(env) / tool] if env else sorted(LLAMA_CPP_HOME.glob(f"build-*/bin/{tool}"))
    found = [p for p in found if p.is_file() and os.access(p, os.X_OK)]
    if not found:
        sys.exit(f"no {tool} under {LLAMA_CPP_HOME}/build-*/bin (or $LLAMA_CPP_BIN): run scripts/llama-cpp-tools.sh")
    return found[-1]


def llama_cpp_meta() -> dict:
    import re
    import subprocess

    q = llama_cpp_tool("llama-quantize")
    out = subprocess.run([str(q), "--help"], capture_output=True, text=True).stdout
    src = q.parent.parent.name  # build-<llama-cpp-python version>
    m = re.search(r"build-(\S+)", src)
    return {
        "source": f"llama-cpp-python=={m.group(1) if m else '?'} sdist, vendor/llama.cpp (scripts/llama-cpp-tools.sh)",
        "build_dir": src,
        "quantize_help_has_allow_requantize": "--allow-requantize" in out,
    }


def llama_quantize(src: Path, dst: Path, qtype: str, allow_requantize: bool) -> tuple:
    """Runs llama-quantize with one thread; returns (ok, build string, last lines of its log)."""
    import re
    import subprocess

    cmd = [str(llama_cpp_tool("llama-quantize"))]
    if allow_requantize:
        cmd.append("--allow-requantize")
    tmp = dst.with_name(dst.name + ".tmp")
    cmd += [str(src), str(tmp), qtype, "1"]
    p = subprocess.run(cmd, capture_output=True, text=True)
    log = p.stdout + p.stderr
    build = re.search(r"version: (\S+ \(build \d+, commit \w+\))", log, re.IGNORECASE)
    if p.returncode != 0 or not tmp.exists():
        tmp.unlink(missing_ok=True)
        return False, build.group(1) if build else None, "\n".join(log.strip().splitlines()[-6:])
    tmp.replace(dst)
    return True, build.group(1) if build else None, "\n".join(
        line for line in log.splitlines() if "fallback" in line or "WARNING" in line
    )


def llama_perplexity(gguf_path: Path, text_path: Path, ctx: int, chunks=None) -> dict:
    """Runs llama-perplexity (one thread) and returns its per-chunk and final estimates plus the token ids it
    evaluated (read back from the --kl-divergence-base logits file, which begins with them)."""
    import re
    import subprocess
    import tempfile

    with tempfile.TemporaryDirectory() as td:
        logits_file = Path(td) / "logits.bin"
        cmd = [str(llama_cpp_tool("llama-perplexity")), "-m", str(gguf_path), "-f", str(text_path), "-c", str(ctx),
               "-t", "1", "--kl-divergence-base", str(logits_file)]
        if chunks is not None:
            cmd += ["--chunks", str(chunks)]
        for attempt in range(3):  # one run in ~100 once ended early without its final line: retry
            p = subprocess.run(cmd, capture_output=True, text=True)
            log = p.stdout + p.stderr
            final = re.search(r"Final estimate: PPL = ([0-9.]+) \+/- ([0-9.]+)", log)
            if p.returncode == 0 and final:
                break
            print(f"  !! llama-perplexity on {gguf_path.name} exited {p.returncode} without a final estimate:\n"
                  + "\n".join(log.splitlines()[-6:]))
        else:
            raise RuntimeError(f"llama-perplexity failed 3 times on {gguf_path.name}")
        raw = logits_file.read_bytes()
        assert raw[:8] == b"_logits_", raw[:8]
        n_ctx, n_vocab, n_chunk = np.frombuffer(raw[8:20], dtype="<i4")
        tokens = np.frombuffer(raw[20:20 + 4 * n_chunk * n_ctx], dtype="<i4").tolist()
    assert n_ctx == ctx
    return {
        "command": f"llama-perplexity -m {gguf_path.name} -f {text_path.name} -c {ctx} -t 1"
                   + (f" --chunks {chunks}" if chunks is not None else ""),
        "ctx": ctx,
        "chunks": int(n_chunk),
        "scored_per_chunk": ctx - ctx // 2 - 1,
        "scored": int(n_chunk) * (ctx - ctx // 2 - 1),
        "chunk_running_ppl": [float(x) for x in re.findall(r"\[\d+\]([0-9.]+),", log)],
        "final_ppl": float(final.group(1)),
        "final_ppl_err": float(final.group(2)),
        "note": "printed with 4 decimals; chunk_running_ppl[i] is the running estimate after chunk i+1",
        "tokens": tokens,
    }


@torch.no_grad()
def llama_style_perplexity(model, tokens: list, ctx: int) -> dict:
    """What llama-perplexity computes, with transformers: windows tokens[i*ctx:(i+1)*ctx] (no BOS inserted:
    add_bos_token is false in these GGUFs), scoring only the second half (positions ctx//2 .. ctx-2 predict the
    next id), nll summed in float64."""
    first = ctx // 2
    nll, count = 0.0, 0
    for i in range(len(tokens) // ctx):
        w = tokens[i * ctx:(i + 1) * ctx]
        logp = torch.log_softmax(forward_logits(model, w).to(torch.float64), dim=-1)
        tgt = torch.tensor(w[first + 1:])
        nll += float(-logp[first:ctx - 1].gather(1, tgt[:, None]).sum())
        count += ctx - 1 - first
    return {"nll_sum": nll, "scored": count, "perplexity": math.exp(nll / count)}


@torch.no_grad()
def windows_perplexity(model, ids: list, seq_len: int) -> dict:
    """make_smollm2's perplexity: consecutive windows of seq_len ids (the last one shorter), the first id of
    each window not scored, nll summed in float64."""
    windows = [ids[i:i + seq_len] for i in range(0, len(ids), seq_len)]
    windows = [w for w in windows if len(w) >= 2]
    nll_sum, scored, per_window = 0.0, 0, []
    for w in windows:
        logp = torch.log_softmax(forward_logits(model, w).to(torch.float64), dim=-1)
        tgt = torch.tensor(w[1:])
        nll = float(-logp[:-1].gather(1, tgt[:, None]).sum())
        nll_sum += nll
        scored += len(w) - 1
        per_window.append({"len": len(w), "nll_sum": nll})
    return {"seq_len": seq_len, "tokens": len(ids), "scored": scored, "nll_sum": nll_sum,
            "perplexity": math.exp(nll_sum / scored), "windows": per_window}


def gguf_types(path: Path) -> tuple:
    """({tensor name: ggml type name}, general.file_type name) read back with gguf-py."""
    r = gguf.GGUFReader(str(path))
    types = {t.name: t.tensor_type.name for t in r.tensors}
    ft = r.fields.get("general.file_type")
    ft = int(ft.contents()) if ft is not None else None
    try:
        ft_name = gguf.LlamaFileType(ft).name if ft is not None else None
    except ValueError:
        ft_name = str(ft)
    return types, ft_name


def types_by_role(types: dict) -> dict:
    """{tensor role (name without blk.N.): {ggml type: count}} -- shows llama-quantize's per-role choices."""
    out = {}
    for name, t in sorted(types.items()):
        role = name.split(".", 2)[2] if name.startswith("blk.") else name
        out.setdefault(role, {})
        out[role][t] = out[role].get(t, 0) + 1
    return out


def type_counts(types: dict) -> dict:
    out = {}
    for t in types.values():
        out[t] = out.get(t, 0) + 1
    return dict(sorted(out.items()))


def kquant_init_weights(model, seed: int) -> None:
    """init_tiny_weights' draws (one N(0, 1) tensor per parameter, in name order) with scales for hidden 256:
    linears 0.8 / sqrt(row length) (= init_tiny_weights' 0.1 at row length 64: 0.05 for q/k/v/o/gate/up,
    0.035 for down), norms 1 + 0.1·N(0, 1), and the (tied) embedding 0.05, so that the logits' std is ~0.8
    (not init_tiny_weights' 0.3 · sqrt(hidden) = 4.8, which gives a random model perplexities >> the vocab)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters(), key=lambda kv: kv[0]):
            n = torch.randn(p.shape, generator=g, dtype=torch.float32)
            if "norm" in name:
                p.copy_(1.0 + 0.1 * n)
            elif "embed_tokens" in name:
                p.copy_(0.05 * n)
            else:
                p.copy_((0.8 / math.sqrt(p.shape[1])) * n)


def kquant_config() -> dict:
    cfg = dict(tiny_configs()["llama"], **KQUANT_SHAPE)
    assert cfg["tie_word_embeddings"] and cfg["vocab_size"] == TINY_VOCAB
    # row lengths (in_features): q/k/v/gate/up and the embedding read hidden, o reads heads·head_dim, down reads
    # intermediate
    for n in (cfg["hidden_size"], cfg["intermediate_size"], cfg["num_attention_heads"] * cfg["head_dim"]):
        assert n % 256 == 0, n
    return cfg


def kquant_case_ids() -> list:
    rng = np.random.default_rng(KQUANT_SEED + 2)
    return [[int(x) for x in rng.integers(3, TINY_VOCAB, size=n)] for n in KQUANT_CASE_LENGTHS]


def kquant_eval(model, cases, ppl_ids) -> dict:
    return {
        "cases": [{"ids": ids, "logits": f32_rows(forward_logits(model, ids))} for ids in cases],
        "perplexity": windows_perplexity(model, ppl_ids, KQUANT_PPL_LEN) | {"ids": ppl_ids},
    }


def make_kquant():
    print("[kquant] tiny K-quant-shaped llama -> f32 GGUF -> llama-quantize")
    seed_everything()
    cfg = kquant_config()
    tk_json = json.loads((TINY / "tokenizer.json").read_text(encoding="utf-8"))
    chat_template = json.loads((TINY / "tokenizer_config.json").read_text(encoding="utf-8"))["chat_template"]
    tk = Tokenizer.from_file(str(TINY / "tokenizer.json"))
    ppl_path = FIXTURES / "smollm2" / "ppl_text.txt"
    ppl_ids = tk.encode(ppl_path.read_text(encoding="utf-8")).ids[:KQUANT_PPL_LEN]
    assert len(ppl_ids) == KQUANT_PPL_LEN
    cases = kquant_case_ids()

    config = AutoConfig.for_model(**{k: v for k, v in cfg.items() if k not in ("architectures", "torch_dtype")})
    torch.manual_seed(KQUANT_SEED)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32, attn_implementation="eager")
    model.eval()
    kquant_init_weights(model, KQUANT_SEED + 1)
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    sd = {k: v.detach().numpy().copy() for k, v in model.state_dict().items() if k != "lm_head.weight"}

    # f32 GGUF the way part gguf writes the tiny ones (convert_hf_to_gguf.py would refuse the tiny BPE's
    # unknown pre-tokenizer hash), kept out of the repo: it is 5 MB
    if KQUANT_WORK.exists():
        shutil.rmtree(KQUANT_WORK)
    KQUANT_WORK.mkdir(parents=True)
    f32_path = KQUANT_WORK / "f32.gguf"
    write_tiny_gguf(f32_path, "f32", hf_to_gguf_tensors(sd, cfg), cfg, tk_json, chat_template)
    f32_model = AutoModelForCausalLM.from_pretrained(
        str(KQUANT_WORK), gguf_file=f32_path.name, dtype=torch.float32, attn_implementation="eager"
    )
    f32_model.eval()
    assert_float32(f32_model)
    ref_sd = model.state_dict()
    w_err = max((f32_model.state_dict()[k] - ref_sd[k]).abs().max().item() for k in ref_sd)
    assert w_err == 0.0, f"f32.gguf weights differ from the torch model by {w_err} (q/k permutation wrong?)"
    f32_ref = kquant_eval(model, cases, ppl_ids)
    for c in f32_ref["cases"]:
        d = (forward_logits(f32_model, c["ids"]) - forward_logits(model, c["ids"])).abs().max().item()
        assert d <= 1e-5, d
    f32_types, _ = gguf_types(f32_path)
    f32_llama = llama_perplexity(f32_path, ppl_path, **KQUANT_LLAMA_PPL)
    llama_tokens = f32_llama["tokens"]
    hf_tokens = tk.encode(ppl_path.read_text(encoding="utf-8")).ids
    tokens_agree = llama_tokens == hf_tokens[:len(llama_tokens)]
    assert tokens_agree, "llama.cpp tokenises ppl_text.txt differently from tokenizer.json"
    f32_llama |= {"transformers_same_windows": llama_style_perplexity(model, llama_tokens, KQUANT_LLAMA_PPL["ctx"])}
    print(f"  f32: ppl {f32_ref['perplexity']['perplexity']:.4f}; llama-perplexity {f32_llama['final_ppl']}"
          f" vs transformers {f32_llama['transformers_same_windows']['perplexity']:.4f}")

    if KQUANT_DIR.exists():
        shutil.rmtree(KQUANT_DIR)
    KQUANT_DIR.mkdir(parents=True)
    types_out, refused, build = {}, {}, None
    for qtype in KQUANT_TYPES:
        path = KQUANT_DIR / f"{qtype}.gguf"
        ok, b, log = llama_quantize(f32_path, path, qtype, allow_requantize=False)
        build = build or b
        if not ok:
            print(f"  !! llama-quantize refused {qtype}:\n{log}")
            refused[qtype] = log
            continue
        types, ft = gguf_types(path)
        qmodel = AutoModelForCausalLM.from_pretrained(
            str(KQUANT_DIR), gguf_file=path.name, dtype=torch.float32, attn_implementation="eager"
        )
        qmodel.eval()
        assert_float32(qmodel)
        assert qmodel.config.tie_word_embeddings, "tied GGUF must load tied"
        ev = kquant_eval(qmodel, cases, ppl_ids)
        qsd = qmodel.state_dict()
        # per-tensor relative RMS error of the dequantised weight (transformers' un-permuted, gguf-py-dequantised
        # q/k included: a wrong un-permutation would show as an error ~sqrt(2) here, not the quantisation noise)
        rel = {}
        for k in sorted(ref_sd):
            if k == "lm_head.weight":
                continue
            a, b2 = qsd[k].to(torch.float64), ref_sd[k].to(torch.float64)
            rel[k] = float(torch.linalg.vector_norm(a - b2) / torch.linalg.vector_norm(b2))
        case_diffs = [
            max(abs(x - y) for rx, ry in zip(c["logits"], c0["logits"]) for x, y in zip(rx, ry))
            for c, c0 in zip(ev["cases"], f32_ref["cases"])
        ]
        logit_diff = max(case_diffs)
        worst = max((v for k, v in rel.items() if "norm" not in k))
        lp = llama_perplexity(path, ppl_path, **KQUANT_LLAMA_PPL)
        assert lp.pop("tokens") == llama_tokens
        lp["transformers_same_windows"] = llama_style_perplexity(qmodel, llama_tokens, KQUANT_LLAMA_PPL["ctx"])
        types_out[qtype] = {
            "file": path.name,
            "bytes": path.stat().st_size,
            "sha256": sha256_file(path),
            "file_type": ft,
            "tensor_types": types,
            "type_counts": type_counts(types),
            "quantize_warnings": log,
            "max_abs_logit_diff_vs_f32": case_diffs,
            "weight_rel_rms_err_vs_f32": rel,
            **ev,
            "llama_perplexity": lp,
        }
        print(f"  {qtype}: {path.stat().st_size} bytes, types {type_counts(types)}, ft {ft}\n"
              f"    max |logits - f32| {logit_diff:.4f}, worst weight rel err {worst:.4f},"
              f" ppl {ev['perplexity']['perplexity']:.4f} (f32 {f32_ref['perplexity']['perplexity']:.4f});"
              f" llama-perplexity {lp['final_ppl']} vs transformers {lp['transformers_same_windows']['perplexity']:.4f}")

    meta = versions() | {
        "arch": "LlamaForCausalLM",
        "config": cfg,
        "seeds": {"torch_from_config": KQUANT_SEED, "weights": KQUANT_SEED + 1, "case_ids": KQUANT_SEED + 2},
        "weights": " ".join(kquant_init_weights.__doc__.split()),
        "tokenizer": "tests/fixtures/tiny/tokenizer.json (written into each GGUF as part gguf does: gpt2 / smollm)",
        "source_gguf": {
            "file": "f32.gguf (not committed: written to ~/.cache/lora-null/kquant-work by this part)",
            "sha256": sha256_file(f32_path),
            "bytes": f32_path.stat().st_size,
            "tensor_types": f32_types,
        },
        "llama_cpp": llama_cpp_meta() | {"build": build, "quantize": "llama-quantize f32.gguf <TYPE>.gguf <TYPE> 1"},
        "attn_implementation": "eager",
        "loader": "transformers AutoModelForCausalLM.from_pretrained(dir, gguf_file=<TYPE>.gguf): gguf-py dequantize"
                  " + transformers' q/k reverse permutation",
        "perplexity": "windows of seq_len ids from ids, first id of each window not scored (make_smollm2's rule);"
                      " here a single window of 64 ids: the tiny tokenizer's first 64 ids of smollm2/ppl_text.txt",
        "llama_perplexity": "llama.cpp's own estimate on smollm2/ppl_text.txt (tokenised by llama.cpp from the"
                            " GGUF vocab): chunks of ctx ids, only the second half of each scored; tokens = the ids"
                            " it evaluated; transformers_same_windows = the same windows and rule in transformers",
        "llama_cpp_tokens_equal_tokenizer_json": tokens_agree,
        "refused": refused,
    }
    # the f32 model's logits are left out (the f32 GGUF is not committed): per type, max_abs_logit_diff_vs_f32
    # gives the distance to them, one value per case
    f32_out = {
        "cases": [{"ids": c["ids"], "logits_l2": [f64(torch.linalg.vector_norm(torch.tensor(r, dtype=torch.float64)))
                                                  for r in c["logits"]]} for c in f32_ref["cases"]],
        "perplexity": f32_ref["perplexity"],
        "llama_perplexity": {k: v for k, v in f32_llama.items() if k != "tokens"},
    }
    ref = {"meta": meta, "tokens_llama_perplexity": llama_tokens, "f32": f32_out, "types": types_out}
    write_json(KQUANT_DIR / "reference.json", ref)
    total = sum(p.stat().st_size for p in KQUANT_DIR.iterdir())
    print(f"  {KQUANT_DIR.relative_to(ROOT)}: {total} bytes")
    return ref


def make_smollm2_kquant():
    print("[smollm2-kquant] SmolLM2 Q4_1 -> llama-quantize --allow-requantize -> perplexity")
    seed_everything()
    src = SMOL_DIR / SMOL_FILE
    if not src.exists():
        sys.exit(f"missing {src}: run scripts/fetch-model.sh first")
    assert sha256_file(src) == SMOL_SHA256
    ppl_path = FIXTURES / "smollm2" / "ppl_text.txt"
    ppl_text = ppl_path.read_text(encoding="utf-8")
    base_ref = json.loads((FIXTURES / "smollm2" / "reference.json").read_text(encoding="utf-8"))["perplexity"]
    SMOL_KQUANT_DIR.mkdir(parents=True, exist_ok=True)
    results, refused, build, base_ids = {}, {}, None, None
    for qtype in ["Q4_1"] + SMOL_KQUANT_TYPES:
        if qtype == "Q4_1":
            path, d = src, SMOL_DIR
        else:
            path, d = SMOL_KQUANT_DIR / f"SmolLM2-135M-Instruct.{qtype}.gguf", SMOL_KQUANT_DIR
            if not path.exists():  # deterministic (one thread), so a finished file is kept
                ok, b, log = llama_quantize(src, path, qtype, allow_requantize=True)
                build = build or b
                if not ok:
                    print(f"  !! llama-quantize refused {qtype}:\n{log}")
                    refused[qtype] = log
                    continue
        types, ft = gguf_types(path)
        tok = AutoTokenizer.from_pretrained(str(d), gguf_file=path.name)
        ids = encode(tok, ppl_text)
        base_ids = base_ids or ids
        assert ids == base_ids, qtype
        model = AutoModelForCausalLM.from_pretrained(
            str(d), gguf_file=path.name, dtype=torch.float32, attn_implementation="eager"
        )
        model.eval()
        assert_float32(model)
        hf = windows_perplexity(model, ids, SMOL_PPL_SEQ_LEN)
        if qtype == "Q4_1":
            assert hf["seq_len"] == base_ref["seq_len"] and hf["tokens"] == base_ref["total_ids"]
            assert abs(hf["nll_sum"] - base_ref["nll_sum"]) <= 1e-6 * base_ref["nll_sum"], (hf, base_ref)
        lp = llama_perplexity(path, ppl_path, SMOL_PPL_SEQ_LEN)
        tokens = lp.pop("tokens")
        lp["tokens_equal_transformers_ids_prefix"] = tokens == ids[:len(tokens)]
        lp["transformers_same_windows"] = llama_style_perplexity(model, tokens, SMOL_PPL_SEQ_LEN)
        results[qtype] = {
            "file": path.name,
            "bytes": path.stat().st_size,
            "sha256": sha256_file(path),
            "file_type": ft,
            "type_counts": type_counts(types),
            "types_by_role": types_by_role(types),
            "transformers": hf,
            "llama_perplexity": lp,
        }
        print(f"  {qtype}: {path.stat().st_size} bytes {type_counts(types)}\n    transformers ppl {hf['perplexity']:.4f}"
              f" ({hf['scored']} scored); llama-perplexity {lp['final_ppl']} ({lp['scored']} scored) vs transformers"
              f" on its windows {lp['transformers_same_windows']['perplexity']:.4f}")
        del model
    meta = versions() | {
        "source_file": SMOL_FILE,
        "source_sha256": SMOL_SHA256,
        "quantize": "llama-quantize --allow-requantize SmolLM2-135M-Instruct.Q4_1.gguf <out> <TYPE> 1 (files in"
                    " ~/.cache/lora-null/smollm2-kquant, not committed); Q4_1 = the source file itself",
        "llama_cpp": llama_cpp_meta() | {"build": build},
        "text_file": "ppl_text.txt",
        "text_sha256": hashlib.sha256(ppl_text.encode("utf-8")).hexdigest(),
        "transformers_perplexity": "AutoModelForCausalLM.from_pretrained(dir, gguf_file=...) float32 eager; exactly"
                        " as tests/fixtures/smollm2/reference.json (windows of 128 ids, first of each not scored)",
        "llama_perplexity": "llama.cpp's own: floor(n_tokens / ctx) chunks of ctx ids, no BOS (add_bos false), only"
                            " positions ctx/2 .. ctx-2 of each chunk scored; transformers_same_windows = that rule"
                            " in transformers on the ids llama.cpp evaluated",
        "fallbacks": "SmolLM2's hidden size 576 is not a multiple of QK_K = 256, so llama-quantize gives every tensor"
                     " with 576-long rows (all but ffn_down, whose rows are 1536 long) a 32-block fallback type"
                     " (Q5_0, Q5_1, Q8_0, Q4_0, IQ4_NL): see types_by_role; the K-quant and IQ4_XS files are thus"
                     " mostly legacy-quant files, and larger than the Q4_1 source for Q4_K_M / Q5_K_M / Q6_K",
        "refused": refused,
    }
    write_json(FIXTURES / "smollm2" / "kquant_reference.json", {"meta": meta, "types": results})
    return results


# ----------------------------------------------------------------------------------------------
# quantize: f32 rows -> Q8_0 / Q4_K / Q6_K blocks by llama.cpp's own reference quantisers
# ----------------------------------------------------------------------------------------------

QUANTIZE_DIR = FIXTURES / "quantize"
QUANTIZE_SEED = SEED + 1000
QUANTIZE_TYPES = ["Q8_0", "Q4_K", "Q6_K"]
QUANTIZE_ROW = 256  # values per row given to ggml_quantize_chunk = one K-quant super-block, 8 Q8_0 blocks
# kinds of finite 256-value blocks, given in turn to the first QUANTIZE_FINITE_BLOCKS blocks (quantize_block)
QUANTIZE_KINDS = [
    "normal", "outliers", "bf16_grid", "f16_grid", "laplace", "student_t", "norm_weights", "negative", "shifted",
    "sparse", "small", "large", "integers", "sixteenths", "mixed_groups", "constant", "zeros", "uniform",
]
QUANTIZE_FINITE_BLOCKS = 96
# then one block of each of these: NaN / inf, and finite values at the edges of the f32 and f16 ranges
QUANTIZE_SPECIAL = [
    "nan_first", "nan_last", "nan_middle", "all_nan", "nan_payloads", "pos_inf", "neg_inf", "both_inf",
    "f16_overflow", "near_f32_max", "f32_subnormal", "tiny_1e-37", "tiny_1e-20", "around_1e-15", "signed_zeros",
    "single_spike",
]
# A tiny driver, compiled at run time (in a temporary folder) against the llama.cpp build's libggml-base.a:
# it quantises rows of QUANTIZE_ROW float32 values with ggml's public ggml_quantize_chunk and no importance
# matrix, which is quantize_row_<type>_ref -- what llama-quantize runs when it has no --imatrix.
QUANTIZE_DRIVER_C = r"""
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "ggml.h"

int main(int argc, char ** argv) {
    if (argc != 5) { fprintf(stderr, "usage: driver TYPE N_PER_ROW in.f32 out.bin\n"); return 2; }
    enum ggml_type type;
    if (!strcmp(argv[1], "Q8_0")) type = GGML_TYPE_Q8_0;
    else if (!strcmp(argv[1], "Q4_K")) type = GGML_TYPE_Q4_K;
    else if (!strcmp(argv[1], "Q6_K")) type = GGML_TYPE_Q6_K;
    else { fprintf(stderr, "unknown type %s\n", argv[1]); return 2; }
    const int64_t n_per_row = atoll(argv[2]);
    FILE * f = fopen(argv[3], "rb");
    if (!f) { perror(argv[3]); return 1; }
    fseek(f, 0, SEEK_END);
    const long bytes = ftell(f);
    fseek(f, 0, SEEK_SET);
    if (n_per_row <= 0 || bytes <= 0 || bytes % (4 * n_per_row)) { fprintf(stderr, "bad size\n"); return 1; }
    float * src = malloc(bytes);
    if (!src || fread(src, 1, bytes, f) != (size_t) bytes) { fprintf(stderr, "short read\n"); return 1; }
    fclose(f);
    const int64_t nrows = bytes / 4 / n_per_row;
    const size_t size = ggml_row_size(type, n_per_row) * nrows;
    void * dst = calloc(1, size);
    if (!dst || ggml_quantize_chunk(type, src, dst, 0, nrows, n_per_row, NULL) != size) {
        fprintf(stderr, "quantize failed\n");
        return 1;
    }
    f = fopen(argv[4], "wb");
    if (!f || fwrite(dst, 1, size, f) != size || fclose(f)) { perror(argv[4]); return 1; }
    return 0;
}
"""


def quantize_block(rng, kind: str) -> np.ndarray:
    """256 float32 values of one kind (QUANTIZE_KINDS / QUANTIZE_SPECIAL), weight-like where finite."""
    n = QUANTIZE_ROW
    sigma = 10.0 ** rng.uniform(-3.0, 0.0)
    sign = 1.0 if rng.integers(0, 2) else -1.0
    normal = rng.normal(0.0, sigma, n)
    bits = lambda u: np.array(u, dtype=np.uint32).view(np.float32)  # noqa: E731
    if kind == "normal":
        x = normal
    elif kind == "outliers":  # 1-4 values 8-40 sigma out
        x = normal.copy()
        idx = rng.choice(n, size=int(rng.integers(1, 5)), replace=False)
        x[idx] = np.where(rng.integers(0, 2, idx.size) == 1, 1.0, -1.0) * rng.uniform(8.0, 40.0, idx.size) * sigma
    elif kind == "bf16_grid":  # round to nearest even bfloat16, as weights loaded from a bf16 checkpoint
        u = normal.astype(np.float32).view(np.uint32).astype(np.uint64)
        x = ((u + 0x7FFF + ((u >> 16) & 1)) & 0xFFFF0000).astype(np.uint32).view(np.float32)
    elif kind == "f16_grid":
        x = normal.astype(np.float16)
    elif kind == "laplace":
        x = rng.laplace(0.0, sigma, n)
    elif kind == "student_t":
        x = rng.standard_t(3.0, n) * sigma
    elif kind == "norm_weights":  # all positive, like RMSNorm weights
        x = 1.0 + 0.1 * rng.normal(0.0, 1.0, n)
    elif kind == "negative":
        x = -(0.5 + 0.1 * np.abs(rng.normal(0.0, 1.0, n)))
    elif kind == "shifted":
        x = normal + sign * 3.0 * sigma
    elif kind == "sparse":  # 70% zeros, one whole group of 32 and one of 16 zero
        x = np.where(rng.uniform(size=n) < 0.7, 0.0, normal)
        g32, g16 = int(rng.integers(0, 8)), int(rng.integers(0, 16))
        x[32 * g32:32 * g32 + 32] = 0.0
        x[16 * g16:16 * g16 + 16] = 0.0
    elif kind == "small":  # scales in or below the f16 subnormal range
        x = rng.normal(0.0, 10.0 ** rng.uniform(-9.0, -5.0), n)
    elif kind == "large":
        x = rng.normal(0.0, 10.0 ** rng.uniform(2.0, 4.5), n)
    elif kind == "integers":  # exact ties in nearest-int rounding
        x = rng.integers(-8, 9, n).astype(np.float64)
    elif kind == "sixteenths":
        x = rng.integers(-64, 65, n) / 16.0
    elif kind == "mixed_groups":  # per group of 16: its own scale, or all zero, or constant
        x = np.empty(n)
        for g in range(n // 16):
            r = rng.uniform()
            s = 10.0 ** rng.uniform(-4.0, 0.0)
            x[16 * g:16 * g + 16] = 0.0 if r < 0.15 else np.full(16, s * sign) if r < 0.3 else rng.normal(0.0, s, 16)
    elif kind == "constant":
        x = np.full(n, sign * 10.0 ** rng.uniform(-3.0, 1.0))
    elif kind == "zeros":
        x = np.where(rng.integers(0, 2, n) == 1, -0.0, 0.0)
    elif kind == "uniform":
        x = rng.uniform(-sigma, sigma, n)
    elif kind in ("nan_first", "nan_last", "nan_middle"):
        x = normal.astype(np.float32)
        x[{"nan_first": 0, "nan_last": n - 1, "nan_middle": 77}[kind]] = np.nan
    elif kind == "all_nan":
        x = np.full(n, np.nan)
    elif kind == "nan_payloads":  # quiet NaN with a payload, negative NaN, signalling NaN
        x = normal.astype(np.float32)
        x[[5, 100, 200]] = bits([0x7FC00123, 0xFFC00000, 0x7F800001])
    elif kind in ("pos_inf", "neg_inf", "both_inf"):
        x = normal.copy()
        if kind != "neg_inf":
            x[3] = np.inf
        if kind != "pos_inf":
            x[130] = -np.inf
    elif kind == "f16_overflow":  # max |x| / 127 above the largest f16 (Q8_0 d = inf)
        x = rng.normal(0.0, 3e6, n)
        x[9] = 1e7
    elif kind == "near_f32_max":  # max - min overflows f32
        x = rng.uniform(-3e38, 3e38, n)
    elif kind == "f32_subnormal":
        x = rng.normal(0.0, 1e-40, n).astype(np.float32)
    elif kind == "tiny_1e-37":  # Q8_0: d = max/127 is an f32 subnormal
        x = rng.normal(0.0, 1e-37, n)
    elif kind == "tiny_1e-20":  # scales far below f16's range
        x = rng.normal(0.0, 1e-20, n)
    elif kind == "around_1e-15":  # ggml's GROUP_MAX_EPS = 1e-15: groups above and below it
        x = rng.normal(0.0, 1e-15, n)
    elif kind == "signed_zeros":
        x = np.where(rng.uniform(size=n) < 0.9, np.where(rng.integers(0, 2, n) == 1, -0.0, 0.0), normal)
    elif kind == "single_spike":
        x = np.zeros(n)
        x[int(rng.integers(0, n))] = sign * sigma
    else:
        raise ValueError(kind)
    return np.asarray(x).astype(np.float32)


def quantize_llama_cpp(types: list, values: np.ndarray) -> tuple:
    """({type: reference bytes}, meta): values quantised by the compiled QUANTIZE_DRIVER_C."""
    import re
    import subprocess
    import tempfile

    build = llama_cpp_tool("llama-quantize").parent.parent
    lib = build / "ggml" / "src" / "libggml-base.a"
    cache = (build / "CMakeCache.txt").read_text()
    m = re.search(r"^CMAKE_HOME_DIRECTORY:INTERNAL=(.*)$", cache, re.MULTILINE)
    src = Path(os.environ.get("LLAMA_CPP_DIR") or (m.group(1) if m else ""))
    if not lib.is_file() or not (src / "ggml" / "include" / "ggml.h").is_file():
        sys.exit(f"need {lib} and the llama.cpp sources it was built from: run scripts/llama-cpp-tools.sh")
    out = {}
    with tempfile.TemporaryDirectory() as td:
        td = Path(td)
        (td / "driver.c").write_text(QUANTIZE_DRIVER_C)
        cc = os.environ.get("CC", "cc")
        cmd = [cc, "-O2", "-std=gnu11", f"-I{src / 'ggml' / 'include'}", str(td / "driver.c"), str(lib),
               "-lm", "-lpthread", "-fopenmp", "-lstdc++", "-o", str(td / "driver")]
        subprocess.run(cmd, check=True)
        values.astype("<f4").tofile(td / "input.f32")
        for name in types:
            subprocess.run([str(td / "driver"), name, str(QUANTIZE_ROW), str(td / "input.f32"), str(td / "out.bin")],
                           check=True)
            out[name] = (td / "out.bin").read_bytes()
    quants_c = src / "ggml" / "src" / "ggml-quants.c"
    # how ggml-quants.c was compiled (optimisation / machine / float flags): no -march / -mfma / -ffast-math
    # means plain SSE2 f32 arithmetic on x86-64, no fused multiply-adds
    flags = None
    commands = build / "compile_commands.json"
    if commands.is_file():
        for entry in json.loads(commands.read_text()):
            if entry["file"].endswith("ggml-quants.c") and "ggml-base" in entry.get("command", ""):
                flags = [f for f in entry["command"].split() if re.match(r"-(O|m|f|std=)", f)]
    meta = llama_cpp_meta() | {
        "library": "build-*/ggml/src/libggml-base.a",
        "ggml_quants_c_flags": flags,
        "ggml_quants_c_sha256": sha256_file(quants_c),
    }
    return out, meta


def make_quantize():
    print("[quantize] f32 blocks -> Q8_0 / Q4_K / Q6_K by llama.cpp's reference quantisers")
    rng = np.random.default_rng(QUANTIZE_SEED)
    QUANTIZE_DIR.mkdir(parents=True, exist_ok=True)
    kinds = [QUANTIZE_KINDS[i % len(QUANTIZE_KINDS)] for i in range(QUANTIZE_FINITE_BLOCKS)] + QUANTIZE_SPECIAL
    with np.errstate(over="ignore", invalid="ignore"):
        values = np.concatenate([quantize_block(rng, k) for k in kinds])
    finite = [bool(np.isfinite(values[QUANTIZE_ROW * i:QUANTIZE_ROW * (i + 1)]).all()) for i in range(len(kinds))]
    assert all(finite[:QUANTIZE_FINITE_BLOCKS])
    raw_in = values.astype("<f4").tobytes()
    (QUANTIZE_DIR / "input.bin").write_bytes(raw_in)
    print(f"  wrote {(QUANTIZE_DIR / 'input.bin').relative_to(ROOT)} ({len(raw_in)} bytes)")
    refs, llama_meta = quantize_llama_cpp(QUANTIZE_TYPES, values)
    types = {}
    n_fin = QUANTIZE_FINITE_BLOCKS * QUANTIZE_ROW
    for name in QUANTIZE_TYPES:
        qtype = gguf.GGMLQuantizationType[name]
        block_elems, block_bytes = gguf.GGML_QUANT_SIZES[qtype]
        raw = refs[name]
        assert len(raw) == values.size // block_elems * block_bytes, name
        # sanity: gguf-py dequantises the finite blocks with max |x| >= 0.01 (scales well inside f16's range)
        # back to within a fraction of that maximum
        with np.errstate(over="ignore", invalid="ignore"):
            back = gguf.quants.dequantize(np.frombuffer(raw, dtype=np.uint8), qtype)
        back = back[:n_fin].reshape(-1, QUANTIZE_ROW)
        x = values[:n_fin].reshape(-1, QUANTIZE_ROW)
        span = np.abs(x).max(axis=1)
        big = span >= 0.01
        worst = float(np.max(np.abs(back - x)[big].max(axis=1) / span[big]))
        assert worst < 0.2, (name, worst)
        path = QUANTIZE_DIR / f"{name}.bin"
        path.write_bytes(raw)
        print(f"  wrote {path.relative_to(ROOT)} ({len(raw)} bytes); finite blocks: max |error| / max |x| {worst:.3g}")
        types[name] = {"id": int(qtype), "block_elems": block_elems, "block_bytes": block_bytes, "file": path.name,
                       "bytes": len(raw), "sha256": hashlib.sha256(raw).hexdigest()}
    meta = versions() | {
        "seed": QUANTIZE_SEED,
        "generator": "numpy.random.default_rng(seed), one call of quantize_block(rng, kind) per 256-value block in"
                     " order; the first finite_blocks blocks cycle through the weight-like `kinds`, then one block"
                     " of each `special` kind (NaN, inf and finite extremes)",
        "kinds": QUANTIZE_KINDS,
        "special": QUANTIZE_SPECIAL,
        "reference": "ggml_quantize_chunk(GGML_TYPE_<TYPE>, input, out, 0, n_rows, 256, NULL) of libggml-base.a from"
                     " llama.cpp's build (= quantize_row_<type>_ref; llama-quantize without --imatrix), called by"
                     " a small C driver compiled at run time (make_reference.py QUANTIZE_DRIVER_C); rows of 256",
        "llama_cpp": llama_meta,
    }
    write_json(QUANTIZE_DIR / "reference.json", {
        "meta": meta,
        "input": {"file": "input.bin", "format": "little-endian float32", "values": int(values.size),
                  "bytes": len(raw_in), "sha256": hashlib.sha256(raw_in).hexdigest(),
                  "finite_blocks": QUANTIZE_FINITE_BLOCKS},
        "blocks": [{"kind": k, "finite": f} for k, f in zip(kinds, finite)],
        "types": types,
    })
    return types


PARTS = ["smollm2", "tiny", "gguf", "init", "train", "peft", "quants", "qwen3", "phi3", "gemma", "kquant", "quantize"]
# parts run only with --only (slow, write nothing but a small JSON into the repo)
EXTRA_PARTS = ["smollm2-kquant"]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", choices=PARTS + EXTRA_PARTS, help="regenerate only this part")
    args = ap.parse_args()
    print("versions:", json.dumps(versions()))
    parts = [args.only] if args.only else PARTS
    if "smollm2" in parts:
        make_smollm2()
    if "tiny" in parts:
        make_tiny()
    if "gguf" in parts:
        make_gguf()
    if "init" in parts:
        make_init()
    if "train" in parts:
        make_train()
    if "peft" in parts:
        make_peft()
    if "quants" in parts:
        make_quants()
    if "qwen3" in parts:
        make_qwen3()
    if "phi3" in parts:
        make_phi3()
    if "gemma" in parts:
        make_gemma()
    if "kquant" in parts:
        make_kquant()
    if "quantize" in parts:
        make_quantize()
    if "smollm2-kquant" in parts:
        make_smollm2_kquant()
    total = sum(p.stat().st_size for p in FIXTURES.rglob("*") if p.is_file())
    print(f"fixtures total: {total} bytes")


if __name__ == "__main__":
    main()
