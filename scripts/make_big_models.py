#!/usr/bin/env python3
"""Helper of scripts/make-big-models.sh (see there): random-weight models with real shapes.

    make_big_models.py hf NAME SMOLLM2_GGUF OUT_DIR      HF folder: config.json, model.safetensors (bf16), tokenizer
    make_big_models.py convert LLAMA_CPP_DIR HF_DIR OUT  convert_hf_to_gguf.py with the patches below
    make_big_models.py params HF_DIR                     parameter count, from the safetensors headers

Heavy imports live inside the subcommands: `convert` must import llama.cpp's bundled gguf-py, not the venv's.
"""

import json
import math
import struct
import sys
from pathlib import Path

# Values from each model's published config.json. Only the architecture is real: the weights are random and
# every model gets SmolLM2's tokenizer (49152 tokens), hence bos/eos are SmolLM2-Instruct's ids (1, 2), not the
# original ones (Qwen's 151643, Llama's 128000/128001 do not exist in that tokenizer).
COMMON = {"hidden_act": "silu", "initializer_range": 0.02, "tie_word_embeddings": True, "bos_token_id": 1,
          "eos_token_id": 2, "attention_dropout": 0.0, "use_cache": True}
CONFIGS = {
    "smollm2-360m": {  # HuggingFaceTB/SmolLM2-360M
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 960,
        "intermediate_size": 2560, "num_hidden_layers": 32, "num_attention_heads": 15, "num_key_value_heads": 5,
        "vocab_size": 49152, "max_position_embeddings": 8192, "rope_theta": 100000.0, "rms_norm_eps": 1e-5,
        "attention_bias": False, "mlp_bias": False,
    },
    "qwen2.5-0.5b": {  # Qwen/Qwen2.5-0.5B (q/k/v biases are built into transformers' Qwen2 attention)
        "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_size": 896,
        "intermediate_size": 4864, "num_hidden_layers": 24, "num_attention_heads": 14, "num_key_value_heads": 2,
        "vocab_size": 151936, "max_position_embeddings": 32768, "rope_theta": 1000000.0, "rms_norm_eps": 1e-6,
        "use_sliding_window": False, "sliding_window": 32768, "max_window_layers": 24,
    },
    "llama-3.2-1b": {  # meta-llama/Llama-3.2-1B
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 2048,
        "intermediate_size": 8192, "num_hidden_layers": 16, "num_attention_heads": 32, "num_key_value_heads": 8,
        "head_dim": 64, "vocab_size": 128256, "max_position_embeddings": 131072, "rope_theta": 500000.0,
        "rope_scaling": {"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                         "original_max_position_embeddings": 8192},
        "rms_norm_eps": 1e-5, "attention_bias": False, "mlp_bias": False,
    },
}
SEED = 0

# The published SmolLM2 tokenizer.json splits digits one by one before the GPT-2 byte-level regex; the GGUF
# keeps that only as tokenizer.ggml.pre = "smollm", so transformers' GGUF loader rebuilds a plain ByteLevel
# pre-tokenizer. Put the real one back: tokenizer.json then tokenizes like llama.cpp's "smollm", and
# convert_hf_to_gguf.py recognises it by its check-text hash (it refuses unknown BPE pre-tokenizers).
SMOLLM_PRE_TOKENIZER = {"type": "Sequence", "pretokenizers": [
    {"type": "Digits", "individual_digits": True},
    {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
]}


def make_hf(name: str, smollm2_gguf: Path, out: Path) -> None:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(2)
    tok = AutoTokenizer.from_pretrained(str(smollm2_gguf.parent), gguf_file=smollm2_gguf.name)
    tok.save_pretrained(str(out))
    tj = json.loads((out / "tokenizer.json").read_text("utf-8"))
    tj["pre_tokenizer"] = SMOLLM_PRE_TOKENIZER
    (out / "tokenizer.json").write_text(json.dumps(tj, ensure_ascii=False), "utf-8")

    spec = dict(CONFIGS[name])
    config = AutoConfig.for_model(spec.pop("model_type"), **COMMON, **spec)
    assert len(tok) <= config.vocab_size
    torch.manual_seed(SEED)
    # Built directly in bf16 (transformers sets the default dtype while constructing): no fp32 copy of the 1B.
    model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    assert all(p.dtype == torch.bfloat16 for p in model.parameters())
    model.save_pretrained(str(out))
    n = sum(p.numel() for p in model.parameters())  # tied lm_head counted once
    print(f"{name}: {type(model).__name__}, {n:,} parameters, bf16 -> {out}")


def convert(llama_cpp: Path, hf: Path, out: Path) -> None:
    sys.path.insert(0, str(llama_cpp))
    sys.argv = [str(llama_cpp / "convert_hf_to_gguf.py"), "--outtype", "f16", "--outfile", str(out), str(hf)]
    import convert_hf_to_gguf  # puts its bundled gguf-py first on sys.path
    from conversion.base import TextModel

    # Llama's and Qwen2's set_vocab try a sentencepiece tokenizer.model first, expecting FileNotFoundError when
    # there is none, but import sentencepiece (not in the reference venv) before looking. There is none here.
    def no_sentencepiece(self):
        raise FileNotFoundError(self.dir_model / "tokenizer.model")

    TextModel._create_vocab_sentencepiece = no_sentencepiece
    # The converter names a BPE pre-tokenizer by hashing how AutoTokenizer splits a check text. For a qwen2
    # folder transformers 5 ignores tokenizer_config's class and loads Qwen2Tokenizer, which swaps in Qwen's
    # regex: the hash is then unknown and the converter refuses. tokenizer.json (what llama.cpp gets) is SmolLM2's.
    assert json.loads((hf / "tokenizer.json").read_text("utf-8"))["pre_tokenizer"] == SMOLLM_PRE_TOKENIZER
    TextModel.get_vocab_base_pre = lambda self, tokenizer: "smollm"
    # A vocab_size larger than the tokenizer is fine: the converter fills the missing ids with [PAD<i>] tokens
    # (type UNUSED), so token_embd keeps all vocab_size rows and no tokenizer padding is needed.
    convert_hf_to_gguf.main()


def params(hf: Path) -> int:
    n = 0
    for f in sorted(hf.glob("*.safetensors")):
        with open(f, "rb") as fh:
            header = json.loads(fh.read(struct.unpack("<Q", fh.read(8))[0]))
        for k, v in header.items():
            if k != "__metadata__":
                n += math.prod(v["shape"])
    return n


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "hf":
        make_hf(args[0], Path(args[1]), Path(args[2]))
    elif cmd == "convert":
        convert(Path(args[0]), Path(args[1]), Path(args[2]))
    elif cmd == "params":
        print(params(Path(args[0])))
    else:
        sys.exit(f"unknown subcommand {cmd}")
