"""``kaiyuan convert`` measures what the conversion cost against its source by default (the Hugging Face side
scored with transformers, the GGUF side with llama.cpp, on the same windows), records it on the new model, and
``kaiyuan license check`` judges it against the policy's max_kl; ``--no-eval`` skips it, and then the check says
the cost was never measured."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from kaiyuan.cli._app import cli
from kaiyuan.store import ModelStore
from tests.fixtures.cli import kaiyuan

pytestmark = pytest.mark.slow


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_conversions_are_measured_recorded_and_checked_against_the_policy(
    kaiyuan_home: Path, tiny_gguf_factory: Callable[..., Path], tmp_path: Path
) -> None:
    pytest.importorskip("transformers")
    from tests.convert.test_hf_to_gguf import f32_copy

    f32 = f32_copy(tiny_gguf_factory(arch="qwen3", license={"id": "mit"}), tmp_path / "tiny-f32.gguf")
    assert run("import", str(f32), "--name", "tiny:f32").exit_code == 0
    result = run("convert", "tiny:f32", "--to", "hf", "--dtype", "float32")
    assert result.exit_code == 0, result.output
    assert "cost against tiny:f32: mean KL" in result.output

    store = ModelStore(kaiyuan_home)
    (record,) = store.resolve("tiny:f32-hf").evals
    assert record["kind"] == "against" and record["quick"] is True
    assert record["against"]["name"] == "tiny:f32" and "transformers" in record["engine"]
    # F32 weights in both engines: the same distributions up to float rounding
    assert record["kl"]["mean"] < 1e-4 and record["top1_agreement"] > 0.98

    result = run("convert", "tiny:f32-hf", "--to", "gguf", "--quant", "Q4_0", "--name", "tiny:q4")
    assert result.exit_code == 0, result.output
    (q4,) = store.resolve("tiny:q4").evals
    assert q4["kl"]["mean"] > record["kl"]["mean"]
    result = run(
        "convert", "tiny:f32-hf", "--to", "gguf", "--quant", "Q8_0", "--name", "tiny:q8", "--no-eval"
    )
    assert result.exit_code == 0 and "cost against" not in result.output
    assert store.resolve("tiny:q8").evals == []

    policy = tmp_path / "policy.toml"
    policy.write_text(f"[policy]\nmax_kl = {q4['kl']['mean'] / 2:.6f}\n", encoding="utf-8")
    check = kaiyuan("license", "check", "tiny:f32-hf", "tiny:q4", "tiny:q8", "--policy", str(policy))
    assert check.returncode == 1, check.stderr
    assert "allowed  tiny:f32-hf" in check.stdout
    assert (
        f"tiny:q4 against tiny:f32-hf: mean KL {q4['kl']['mean']:.4f} is above the policy's max_kl"
        in check.stdout
    )
    assert "tiny:q8 was converted from tiny:f32-hf but its cost was never measured" in check.stdout
    assert "kaiyuan eval tiny:q8 --against tiny:f32-hf" in check.stdout

    policy.write_text("[policy]\nmax_kl = 'small'\n", encoding="utf-8")
    check = kaiyuan("license", "check", "tiny:q4", "--policy", str(policy))
    assert check.returncode == 2 and "max_kl must be a number" in check.stderr
