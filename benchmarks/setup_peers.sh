#!/usr/bin/env bash
# Build the peers the benchmarks compare against, outside the package, from sources on PyPI:
#   - llama.cpp's llama-server, llama-batched-bench and llama-perplexity, from the llama.cpp tree vendored in the
#     llama-cpp-python==0.3.36 sdist (the same llama.cpp that kaiyuan runs on);
#   - llama-cpp-python's own OpenAI server (pip extra [server]) in a separate virtual environment.
# Output: benchmarks/.build/bin/{llama-server,llama-batched-bench,llama-perplexity}, benchmarks/.build/lcp-venv/
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
BUILD="$HERE/.build"
mkdir -p "$BUILD/bin"
JOBS="${JOBS:-2}"

if [ ! -x "$BUILD/bin/llama-server" ] || [ ! -x "$BUILD/bin/llama-batched-bench" ] || [ ! -x "$BUILD/bin/llama-perplexity" ]; then
  if [ ! -d "$BUILD/src/vendor/llama.cpp" ]; then
    rm -rf "$BUILD/sdist" "$BUILD/src"
    python3 -m pip download -q --no-deps --no-binary :all: -d "$BUILD/sdist" llama-cpp-python==0.3.36
    mkdir -p "$BUILD/src"
    tar xzf "$BUILD"/sdist/llama_cpp_python-0.3.36.tar.gz -C "$BUILD/src" --strip-components=1
  fi
  cmake -S "$BUILD/src/vendor/llama.cpp" -B "$BUILD/cmake" -DCMAKE_BUILD_TYPE=Release \
    -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=ON -DLLAMA_BUILD_SERVER=ON -DGGML_NATIVE=ON >/dev/null
  cmake --build "$BUILD/cmake" -j "$JOBS" --target llama-server llama-batched-bench llama-perplexity
  cp "$BUILD/cmake/bin/llama-server" "$BUILD/cmake/bin/llama-batched-bench" "$BUILD/cmake/bin/llama-perplexity" "$BUILD/bin/"
  # the binaries link the shared ggml/llama libraries built next to them
  cp -a "$BUILD"/cmake/bin/*.so* "$BUILD/bin/" 2>/dev/null || true
fi

if [ ! -x "$BUILD/lcp-venv/bin/python" ]; then
  python3 -m venv "$BUILD/lcp-venv"
  # pip reuses the llama-cpp-python wheel it cached when kaiyuan was installed
  "$BUILD/lcp-venv/bin/pip" install -q 'llama-cpp-python[server]==0.3.36'
fi
echo "peers ready in $BUILD"
