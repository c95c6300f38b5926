#!/usr/bin/env bash
# The run command from README.md: fetches the default model and runs the CLI on it.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/lora-null/target}"
scripts/setup.sh
scripts/fetch-model.sh
model=assets/models/SmolLM2-135M-Instruct.Q4_1.gguf
cargo run --bin lora-null -- generate --model "$model" --chat --prompt "${1:-What is the capital of France?}" --max-new-tokens 48
