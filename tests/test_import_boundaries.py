"""Import direction (docs/decisions.md, "Layers"): the license package and the engine stay free of heavy and upper
layers."""

from __future__ import annotations

import subprocess
import sys

import pytest


def imported_after(module: str) -> set[str]:
    code = f"import sys, {module}; print('\\n'.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return set(out.split())


def top_level(modules: set[str]) -> set[str]:
    return {m.split(".")[0] for m in modules}


@pytest.mark.parametrize(
    ("module", "forbidden"),
    [
        (
            "kaiyuan.license",
            {"torch", "transformers", "llama_cpp", "fastapi", "pydantic", "starlette", "uvicorn"},
        ),
        (
            "kaiyuan.engine",
            {"fastapi", "pydantic", "starlette", "torch", "transformers", "vllm", "tokenizers"},
        ),
        # conversion imports torch and transformers only when a conversion runs
        ("kaiyuan.convert", {"torch", "transformers", "safetensors", "llama_cpp", "fastapi"}),
    ],
)
def test_no_heavy_imports(module: str, forbidden: set[str]) -> None:
    assert top_level(imported_after(module)) & forbidden == set()


@pytest.mark.parametrize(
    ("module", "forbidden_kaiyuan"),
    [
        ("kaiyuan.license", {"kaiyuan.engine", "kaiyuan.server", "kaiyuan.store", "kaiyuan.chat", "kaiyuan.tune",
                             "kaiyuan.protocol", "kaiyuan.export", "kaiyuan.cli"}),
        ("kaiyuan.engine", {"kaiyuan.server", "kaiyuan.protocol", "kaiyuan.store", "kaiyuan.chat", "kaiyuan.cli",
                            "kaiyuan.license", "kaiyuan.tune", "kaiyuan.export"}),
    ],
)  # fmt: skip
def test_no_upward_imports(module: str, forbidden_kaiyuan: set[str]) -> None:
    loaded = imported_after(module)
    assert {m for m in loaded if any(m == f or m.startswith(f + ".") for f in forbidden_kaiyuan)} == set()


def test_license_detection_of_a_gguf_still_needs_nothing_heavy(tmp_path) -> None:  # type: ignore[no-untyped-def]
    code = (
        "import sys\n"
        "from kaiyuan.license import evaluate, get_catalog\n"
        "evaluate({'name': 'x', 'license': {'id': 'llama3.1'}}, {'commercial': True})\n"
        "get_catalog()\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'pydantic', 'fastapi', 'llama_cpp', 'numpy'}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
