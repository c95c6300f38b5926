#!/usr/bin/env bash
# Builds llama.cpp's own command-line tools -- llama-quantize, llama-perplexity, llama-export-lora (and the
# cheap llama-completion) -- for REFERENCE work only (scripts/make_reference.py parts "kquant" and
# "smollm2-kquant"). Nothing in CI or the Rust build uses them.
#
# Source: the PyPI sdist of llama-cpp-python, which vendors llama.cpp in vendor/llama.cpp/ (PyPI is the only
# source registry reachable here). Pinned: llama-cpp-python==0.3.36, sha256 of the sdist checked below.
#
#   scripts/llama-cpp-tools.sh            # download + unpack + build (each step skipped when already done)
#   eval "$(scripts/llama-cpp-tools.sh --env)"   # same, then export LLAMA_CPP_BIN / LLAMA_CPP_DIR / GGUF_PY
#
# Layout (LORA_NULL_CACHE, default ~/.cache/lora-null):
#   $cache/llama.cpp/llama_cpp_python-0.3.36.tar.gz          the sdist
#   $cache/llama.cpp/llama_cpp_python-0.3.36/vendor/llama.cpp   llama.cpp sources, convert_hf_to_gguf.py, gguf-py/
#   $cache/llama.cpp/build-0.3.36/bin/                        the binaries (static, CPU only)
#
# Build: cmake, Release, CPU backend only (no CUDA/Metal/Vulkan), static libraries, no OpenSSL/HTTPS download
# support (LLAMA_CURL is deprecated in this llama.cpp and HTTPS now goes through LLAMA_OPENSSL), no tests,
# examples, server, web UI or unified app; only the listed targets are built.
# CPU features: GGML_NATIVE=OFF with an explicit x86-64-v3 set (AVX AVX2 FMA F16C BMI2), NOT -march=native:
# these machines' CPUs report AMX, -march=native then compiles ggml's AMX kernels, and the first AMX
# instruction (tilezero, in ggml_backend_amx_mul_mat: K-quant matmuls) dies with SIGILL because the kernel
# does not grant the process AMX state. x86-64-v3 also runs on any other machine the cache is reused on.
# Override with LLAMA_CPP_CPU_FLAGS="-DGGML_NATIVE=ON" (or others); a change of flags reconfigures.
# Needs cmake and g++ (`apt-get install -y cmake g++`; the script installs cmake itself when it is missing and
# it runs as root). ~10 min on 2 cores, built under `nice -n 10`.
set -euo pipefail

version=0.3.36
sdist_sha=832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e
targets=(llama-quantize llama-perplexity llama-export-lora llama-completion)
cache=${LORA_NULL_CACHE:-$HOME/.cache/lora-null}
base="$cache/llama.cpp"
tarball="$base/llama_cpp_python-$version.tar.gz"
src="$base/llama_cpp_python-$version/vendor/llama.cpp"
build="$base/build-$version"
bin="$build/bin"
jobs=${JOBS:-$(nproc)}

emit_env=0
if [ "${1:-}" = "--env" ]; then emit_env=1; fi
log() { echo "$@" >&2; }

if ! command -v cmake >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    log "cmake missing: apt-get install -y cmake"
    DEBIAN_FRONTEND=noninteractive apt-get install -y cmake >&2 \
      || { apt-get update >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y cmake >&2; }
  else
    log "error: cmake is required (apt-get install -y cmake)"; exit 1
  fi
fi
command -v c++ >/dev/null 2>&1 || { log "error: a C++ compiler is required (apt-get install -y g++)"; exit 1; }

mkdir -p "$base"

# 1. the sdist (pip builds its metadata, which needs scikit-build-core from PyPI: ~1-2 min)
if [ -f "$tarball" ] && echo "$sdist_sha  $tarball" | sha256sum --check --status; then
  log "sdist: $tarball (verified)"
else
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  log "downloading llama-cpp-python==$version (sdist)"
  python3 -m pip download --quiet --no-deps --no-binary :all: -d "$tmp" "llama-cpp-python==$version" >&2
  echo "$sdist_sha  $tmp/llama_cpp_python-$version.tar.gz" | sha256sum --check --status \
    || { log "error: the sdist does not match sha256 $sdist_sha"; exit 1; }
  mv "$tmp/llama_cpp_python-$version.tar.gz" "$tarball"
fi

# 2. unpack
if [ -f "$src/CMakeLists.txt" ] && [ -f "$src/convert_hf_to_gguf.py" ]; then
  log "sources: $src"
else
  log "unpacking $tarball"
  rm -rf "$base/llama_cpp_python-$version"
  tar -xzf "$tarball" -C "$base"
fi

# 3. configure + build only the wanted targets
cpu_flags=${LLAMA_CPP_CPU_FLAGS:--DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON -DGGML_AVX512=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF}
# shellcheck disable=SC2206
cmake_flags=(
  -DCMAKE_BUILD_TYPE=Release
  -DBUILD_SHARED_LIBS=OFF
  $cpu_flags
  -DGGML_CPU=ON -DGGML_BACKEND_DL=OFF
  -DGGML_CUDA=OFF -DGGML_METAL=OFF -DGGML_VULKAN=OFF -DGGML_RPC=OFF
  -DLLAMA_OPENSSL=OFF
  -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF
  -DLLAMA_BUILD_APP=OFF -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF
  -DLLAMA_BUILD_COMMON=ON -DLLAMA_BUILD_TOOLS=ON
)
stamp="$build/.lora-null-flags"
if [ -f "$build/CMakeCache.txt" ] && [ "$(cat "$stamp" 2>/dev/null)" != "${cmake_flags[*]}" ]; then
  log "build flags changed: reconfiguring $build from scratch"
  rm -rf "$build"
fi
missing=0
for t in "${targets[@]}"; do [ -x "$bin/$t" ] || missing=1; done
if [ "$missing" = 0 ]; then
  log "binaries: already built in $bin"
else
  if [ ! -f "$build/CMakeCache.txt" ]; then
    log "configuring $build: ${cmake_flags[*]}"
    cmake -S "$src" -B "$build" "${cmake_flags[@]}" >&2
    echo "${cmake_flags[*]}" > "$stamp"
  fi
  log "building ${targets[*]} with $jobs jobs"
  nice -n 10 cmake --build "$build" --config Release -j "$jobs" --target "${targets[@]}" >&2
fi
for t in "${targets[@]}"; do [ -x "$bin/$t" ] || { log "error: $bin/$t was not built"; exit 1; }; done

if [ "$emit_env" = 1 ]; then
  echo "export LLAMA_CPP_BIN='$bin'"
  echo "export LLAMA_CPP_DIR='$src'"
  echo "export GGUF_PY='$src/gguf-py'"
else
  echo "llama-cpp-python $version (llama.cpp $(sed -n 's/^set(LLAMA_VERSION_\(MAJOR\|MINOR\|PATCH\) \([0-9]*\))/\2/p' "$src/CMakeLists.txt" | paste -sd.) from the sdist)"
  for t in "${targets[@]}"; do echo "$t: $bin/$t"; done
  echo "convert_hf_to_gguf.py: $src/convert_hf_to_gguf.py"
  echo "gguf-py (PYTHONPATH): $src/gguf-py"
  echo "LLAMA_CPP_BIN=$bin"
fi
