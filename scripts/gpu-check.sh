#!/usr/bin/env bash
# GPU check (issue 12/13): run on a machine with an NVIDIA GPU, from the repository root. Under 8 minutes:
#   1. installs kaiyuan with the CUDA vLLM extra and a CUDA build of llama-cpp-python (16 cores: ~4 min to compile)
#   2. runs the vLLM engine tests and the OpenAI-SDK suite on the vLLM engine (on CUDA now)
#   3. runs llama.cpp with --gpu-layers (the gpu-marked tests) and checks `kaiyuan serve` says it runs on the GPU
#   4. a short vllm_bench (1 round, 64 tokens)
# Each step prints PASS/FAIL; the exit code is the number of failed steps.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-$(mktemp -d)}"
failed=0
step() { local name="$1"; shift; echo "=== $name"; if "$@" >"$OUT/$name.log" 2>&1; then echo "PASS $name"; else echo "FAIL $name (log: $OUT/$name.log)"; tail -20 "$OUT/$name.log"; failed=$((failed + 1)); fi; }

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || { echo "no NVIDIA GPU"; exit 1; }

install() {
  python3 -m pip install -q -e '.[test,tune,vllm]' &&
  CMAKE_ARGS="-DGGML_CUDA=on" FORCE_CMAKE=1 CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" \
    python3 -m pip install -q --no-cache-dir --force-reinstall --no-deps 'llama-cpp-python==0.3.36' &&
  python3 -c "import llama_cpp; assert llama_cpp.llama_supports_gpu_offload(), 'llama.cpp built without CUDA'"
}
step install install
step vllm-engine python3 -m pytest -q -x tests/engine/vllm tests/server/test_openai_sdk_vllm.py
step llama-gpu-layers python3 -m pytest -q -x tests/engine/llama_cpp/test_gpu_offload.py -m "gpu or not gpu"
serve_says_gpu() {
  local port=18123 log="$OUT/serve.log"
  python3 -m kaiyuan serve --port "$port" >"$log" 2>&1 &
  local pid=$!
  for _ in $(seq 1 120); do curl -sf "http://127.0.0.1:$port/health" >/dev/null && break; sleep 1; done
  kill "$pid"; wait "$pid" 2>/dev/null
  grep -E "layers on the GPU" "$log"
}
step serve-on-gpu serve_says_gpu
step vllm-bench python3 benchmarks/vllm_bench.py --rounds 1 --tokens 64 --peers kaiyuan-vllm,vllm-serve,kaiyuan-llama.cpp
cat "$OUT/vllm-bench.log" | tail -12
echo "gpu-check: $failed step(s) failed; logs in $OUT"
exit "$failed"
