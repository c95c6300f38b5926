#!/usr/bin/env bash
# Random-weight models with the REAL shapes of SmolLM2-360M, Qwen2.5-0.5B and Llama-3.2-1B, for memory and
# speed measurements only (the weights are noise, so outputs and perplexities mean nothing). No download: the
# configs are written out in scripts/make_big_models.py, the tokenizer is SmolLM2's, taken from the
# SmolLM2-135M GGUF in assets/models (scripts/fetch-model.sh).
#
#   scripts/make-big-models.sh            # all three; each step skipped when its output exists
#   scripts/make-big-models.sh llama-3.2-1b
#
# Output (per-step logs convert.log, quantize-<type>.log sit beside the files; LORA_NULL_CACHE, default ~/.cache/lora-null):
#   $cache/big-models/<name>/hf/                 config.json, model.safetensors (bf16), tokenizer.json, ...
#   $cache/big-models/<name>/<name>-q4_0.gguf    convert_hf_to_gguf.py --outtype f16, then llama-quantize Q4_0
#   $cache/big-models/llama-3.2-1b/llama-3.2-1b-q4_k_m.gguf
#   $cache/big-models/params.txt                 parameter count of each model (tied embeddings counted once)
# llama-quantize's Q4_0 keeps its usual mixture: the tied token_embd becomes Q6_K, or Q8_0 when the hidden size
# is not a multiple of 256 (SmolLM2-360M, Qwen2.5-0.5B), as in published Q4_0 files.
#
# The tokenizer has 49152 tokens, fewer than the Qwen/Llama vocab_size: convert_hf_to_gguf.py fills the missing ids
# with [PAD<i>] (UNUSED) tokens, so the GGUF vocab and token_embd keep the real size; those rows are never hit.
# In transformers, the qwen2 folder loads as Qwen2Tokenizer (Qwen's split regex over SmolLM2's vocab and merges).
#
# Needs the reference venv (scripts/requirements-reference.txt; PY overrides) and llama.cpp's tools
# (scripts/llama-cpp-tools.sh). One model at a time: ~23 GB RAM and 2 cores suffice; the 1B's weights
# are 2.5 GB in bf16, never held in fp32. ~60 GB free disk is plenty (the f16 GGUF is deleted after quantising).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cache=${LORA_NULL_CACHE:-$HOME/.cache/lora-null}
# The reference venv: PY, else refvenv, else venv (scripts/make_reference.py's).
py=${PY:-$cache/refvenv/bin/python}
[ -n "${PY:-}" ] || [ -x "$py" ] || py=$cache/venv/bin/python
[ -x "$py" ] || { echo "make-big-models.sh: no reference venv at $py: set PY (see scripts/make_reference.py)" >&2; exit 2; }
helper="$root/scripts/make_big_models.py"
out="$cache/big-models"
# assets/models is git-ignored: a worktree finds the GGUF in the main checkout (first in `git worktree list`)
main=$(git -C "$root" worktree list --porcelain | sed -n '1s/^worktree //p')
smol=${SMOLLM2_GGUF:-$root/assets/models/SmolLM2-135M-Instruct.Q4_1.gguf}
[ -f "$smol" ] || smol="$main/assets/models/SmolLM2-135M-Instruct.Q4_1.gguf"
[ -f "$smol" ] || { echo "error: no SmolLM2-135M-Instruct.Q4_1.gguf (scripts/fetch-model.sh, or set SMOLLM2_GGUF)" >&2; exit 1; }
eval "$("$root/scripts/llama-cpp-tools.sh" --env)"  # LLAMA_CPP_BIN, LLAMA_CPP_DIR (builds them if missing)
export OMP_NUM_THREADS=2 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1

models=("$@")
[ ${#models[@]} -gt 0 ] || models=(smollm2-360m qwen2.5-0.5b llama-3.2-1b)
mkdir -p "$out"
for name in "${models[@]}"; do
  d="$out/$name"
  mkdir -p "$d"
  if [ ! -f "$d/hf/model.safetensors" ]; then
    # built aside and renamed, so an interrupted run leaves nothing that looks finished
    rm -rf "$d/hf.tmp"
    "$py" "$helper" hf "$name" "$smol" "$d/hf.tmp"
    rm -rf "$d/hf" && mv "$d/hf.tmp" "$d/hf"
  fi
  types=(Q4_0)
  [ "$name" = llama-3.2-1b ] && types+=(Q4_K_M)
  for t in "${types[@]}"; do
    q="$d/$name-${t,,}.gguf"
    [ -f "$q" ] && continue
    f16="$d/$name-f16.gguf"
    if [ ! -f "$f16" ]; then
      echo "[$name] convert_hf_to_gguf.py --outtype f16 (log: $d/convert.log)"
      "$py" "$helper" convert "$LLAMA_CPP_DIR" "$d/hf" "$f16.tmp" > "$d/convert.log" 2>&1 \
        || { tail -20 "$d/convert.log" >&2; exit 1; }
      mv "$f16.tmp" "$f16"
    fi
    echo "[$name] llama-quantize $t"
    "$LLAMA_CPP_BIN/llama-quantize" "$f16" "$q.tmp" "$t" "$(nproc)" > "$d/quantize-${t,,}.log" 2>&1 \
      || { tail -20 "$d/quantize-${t,,}.log" >&2; exit 1; }
    mv "$q.tmp" "$q"
  done
  rm -f "$d/$name-f16.gguf"
done

# recomputed from every finished model, so it is right however many runs built them
: > "$out/params.txt.tmp"
for d in "$out"/*/; do
  [ -f "$d/hf/model.safetensors" ] || continue
  printf '%s\t%s\n' "$(basename "$d")" "$("$py" "$helper" params "$d/hf")" >> "$out/params.txt.tmp"
done
mv "$out/params.txt.tmp" "$out/params.txt"

echo "== parameters ($out/params.txt)"
column -t "$out/params.txt"
echo "== files"
du -h --apparent-size "$out"/*/hf/model.safetensors "$out"/*/*.gguf
