#!/usr/bin/env bash
# The real-GPU benchmark, run on a lent GPU machine (the device tool; no network there): the
# native wgpu path (Vulkan) against PyTorch on CUDA in one invocation, same model shape, same
# text, same work as `scripts/bench.sh forward|train`, plus our CPU backend on that machine's
# cores. The real SmolLM2 file is too large to send, so the model is SmolLM2-135M's config and
# tokenizer with random float32 weights (scripts/bench/random_model.py); speed does not depend
# on the weights.
#
# Prepare here (see BENCHMARKS.md): .gpu/lora-null.gz (the stripped CLI, gzip), .gpu/smollm2-shape
# (config.json + tokenizer files saved from the GGUF), .gl/*.deb (the Vulkan loader and glvnd, which
# NVIDIA's Vulkan driver needs: libvulkan1 libglvnd0 libegl1 libgl1 libglx0 libgles2 libopengl0).
# Then: device run --carry .gpu .gl -- bash scripts/bench/gpu.sh   (results in $OUT)
set -uo pipefail
out="${OUT:-/tmp/gpu-bench}"
mkdir -p "$out"
log() { echo "== $*" | tee -a "$out/log.txt"; }
for f in .gl/*.deb; do dpkg -x "$f" /; done
ldconfig
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$out/gpu.txt"
# .gpu/lora-null.gz is the default build; any other .gpu/lora-null-*.gz (e.g. built with
# --features gpu-fusion,gpu-autotune) is benchmarked beside it on the GPU.
for z in .gpu/lora-null*.gz; do
  b="/tmp/$(basename "$z" .gz)"
  gunzip -c "$z" > "$b" && chmod +x "$b"
done
bin=/tmp/lora-null
"$bin" devices | tee "$out/devices.txt"
if ! grep -qi nvidia "$out/devices.txt"; then
  export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
  log "no NVIDIA adapter at first; with VK_DRIVER_FILES=$VK_DRIVER_FILES:"
  "$bin" devices | tee "$out/devices.txt"
fi
model=/tmp/smollm2-random
python3 scripts/bench/random_model.py .gpu/smollm2-shape "$model" 2>&1 | tail -1 | tee -a "$out/log.txt"
text=tests/fixtures/smollm2/ppl_text.txt
res="$out/results.jsonl"
for z in .gpu/lora-null-*.gz; do
  [ -e "$z" ] || continue
  b="/tmp/$(basename "$z" .gz)"
  log "$(basename "$b"), forward and train, wgpu"
  timeout 240 "$b" bench forward --model "$model" --text "$text" --tokens 512 --device wgpu --repeats 5 | sed "s/\"device\":\"/\"device\":\"$(basename "$b"): /" | tee -a "$res"
  timeout 240 "$b" bench train --model "$model" --text "$text" --rank 16 --batch 4 --tokens 128 --device wgpu --steps 5 | sed "s/\"device\":\"/\"device\":\"$(basename "$b"): /" | tee -a "$res"
done
# CPU=0 skips our CPU-backend rows (about 45 s) when only the GPU rows are wanted.
devices="wgpu"; [ "${CPU:-1}" = 0 ] || devices="wgpu cpu"
for dev in $devices; do
  log "ours, forward, $dev"
  timeout 240 "$bin" bench forward --model "$model" --text "$text" --tokens 512 --device "$dev" --repeats 5 | tee -a "$res"
  log "ours, train, $dev"
  timeout 240 "$bin" bench train --model "$model" --text "$text" --rank 16 --batch 4 --tokens 128 --device "$dev" --steps 5 | tee -a "$res"
done
log "pytorch, forward, cuda"
python3 scripts/bench/torch_forward.py --model "$model" --text "$text" --tokens 512 --device cuda --repeats 5 | tee -a "$res"
log "pytorch + peft, train, cuda"
python3 scripts/bench/torch_train.py --model "$model" --text "$text" --rank 16 --batch 4 --tokens 128 --device cuda --steps 5 | tee -a "$res"
log "done"
