"""The public surfaces of kaiyuan.tune and kaiyuan.export: sorted ``__all__`` that matches what is exported, and
importing either (or running `kaiyuan tune list`) leaves torch, transformers and peft unimported."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize("module", ["kaiyuan.tune", "kaiyuan.export"])
def test_all_is_sorted_and_complete(module: str) -> None:
    import importlib

    mod = importlib.import_module(module)

    # isort-style order, as ruff's RUF022 keeps it: CONSTANTS, then Classes, then functions
    def kind(name: str) -> tuple[int, str]:
        return (0 if name.isupper() else 1 if name[0].isupper() else 2, name)

    assert list(mod.__all__) == sorted(mod.__all__, key=kind)
    assert all(hasattr(mod, name) for name in mod.__all__)
    public = {n for n in vars(mod) if not n.startswith("_") and not isinstance(getattr(mod, n), type(sys))}
    assert public == set(mod.__all__)


def test_heavy_imports_stay_lazy() -> None:
    code = (
        "import sys, kaiyuan.tune, kaiyuan.export, kaiyuan.cli.tune, kaiyuan.cli.export; "
        "print(sorted(m for m in ('torch', 'transformers', 'peft', 'llama_cpp') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
