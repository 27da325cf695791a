"""`kaiyuan export --quant` measures the file it wrote against its source by default, records it, puts it in the
bundle's model card, and fails a release the policy's max_kl forbids. The source is an F32 GGUF of the bundled
SmolLM2 (llama.cpp's own dequantization: exactly the Q4_1 weights), so Q8_0 costs little and Q4_0 a lot
(docs/eval.md)."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from kaiyuan.config import load_settings
from kaiyuan.store import ModelStore
from tests.fixtures.cli import kaiyuan
from tests.tune.models import make_f32_copy

pytestmark = pytest.mark.slow  # an F32 copy of SmolLM2 (540 MB) quantized and scored per test


@pytest.fixture(scope="module")
def f32_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_f32_copy(tmp_path_factory.mktemp("f32") / "smollm2-f32.gguf")


@pytest.fixture
def f32(f32_file: Path, tmp_path: Path) -> str:
    copy = tmp_path / f32_file.name
    shutil.copyfile(f32_file, copy)
    ModelStore.from_settings(load_settings()).import_gguf(copy, "smollm2:f32", link=True)
    return "smollm2:f32"


def evals(name: str) -> list[dict[str, object]]:
    return ModelStore.from_settings(load_settings()).resolve(name).evals


def test_a_quantized_export_is_measured_and_the_policy_fails_a_costly_one(
    f32: str, tmp_path: Path, kaiyuan_home: Path
) -> None:
    q8 = tmp_path / "q8.gguf"
    proc = kaiyuan("export", f32, "--quant", "Q8_0", "-o", str(q8))
    assert proc.returncode == 0, proc.stderr
    assert f"cost against {f32}: mean KL" in proc.stderr and "quick: 4 windows of 128 tokens" in proc.stderr
    (record,) = evals(f32)
    assert record["kind"] == "export" and record["quick"] is True and record["n_ctx"] == 128
    assert record["output"] == {
        "file": "q8.gguf",
        "quantization": "Q8_0",
        "digest": record["output"]["digest"],
    }  # type: ignore[index]
    assert 0 < record["kl"]["mean"] < 0.02 and record["top1_agreement"] > 0.9  # type: ignore[index,operator]

    (kaiyuan_home / "kaiyuan.toml").write_text("[policy]\nmax_kl = 0.05\n", encoding="utf-8")
    q4 = tmp_path / "q4.gguf"
    proc = kaiyuan("export", f32, "--quant", "Q4_0", "-o", str(q4))
    assert proc.returncode == 1, proc.stderr
    error = proc.stderr.strip().splitlines()[-1]
    assert error.startswith(f"Error: q4.gguf against {f32}: mean KL 0.") and "max_kl = 0.05" in error
    assert not q4.exists() and "Traceback" not in proc.stderr
    q4_record = next(r for r in evals(f32) if r["output"]["quantization"] == "Q4_0")  # type: ignore[index]
    assert q4_record["kl"]["mean"] > 0.05  # type: ignore[index,operator]

    shown = kaiyuan("show", f32).stdout
    assert "export Q8_0" in shown and "export Q4_0" in shown
    # the costly file was never released; the source itself is not held to its cost
    check = kaiyuan("license", "check", f32)
    assert check.returncode == 0 and f"allowed  {f32}" in check.stdout, check.stdout


def test_no_eval_skips_the_measurement_unless_the_policy_needs_it(
    f32: str, tmp_path: Path, kaiyuan_home: Path
) -> None:
    out = tmp_path / "q8.gguf"
    proc = kaiyuan("export", f32, "--quant", "Q8_0", "-o", str(out), "--no-eval")
    assert proc.returncode == 0, proc.stderr
    assert "cost against" not in proc.stderr and evals(f32) == [] and out.exists()

    (kaiyuan_home / "kaiyuan.toml").write_text("[policy]\nmax_kl = 0.05\n", encoding="utf-8")
    proc = kaiyuan("export", f32, "--quant", "Q8_0", "-o", str(tmp_path / "again.gguf"), "--no-eval")
    assert proc.returncode == 1 and "--no-eval cannot skip the measurement" in proc.stderr
    assert not (tmp_path / "again.gguf").exists()


def test_the_bundle_model_card_shows_the_measured_cost(f32: str, tmp_path: Path) -> None:
    bundle = tmp_path / "release"
    proc = kaiyuan("export", f32, "--quant", "Q8_0", "--bundle", str(bundle))
    assert proc.returncode == 0, proc.stderr
    card = (bundle / "README.md").read_text(encoding="utf-8")
    (record,) = evals(f32)
    section = card.split("## Evaluation", 1)[1].split("\n## ", 1)[0]
    assert "| quantization cost vs the source |" in section
    assert f"mean KL {record['kl']['mean']:.6f}" in section and "top-1" in section  # type: ignore[index]


def test_a_model_trained_for_a_short_context_is_measured_in_windows_of_its_length(
    tiny_gguf_factory: Callable[..., Path], tmp_path: Path
) -> None:
    from tests.convert.test_hf_to_gguf import f32_copy

    f32 = f32_copy(tiny_gguf_factory(arch="llama", n_ctx_train=32), tmp_path / "tiny-f32.gguf")
    ModelStore.from_settings(load_settings()).import_gguf(f32, "tiny:f32")
    proc = kaiyuan("export", "tiny:f32", "--quant", "Q8_0", "-o", str(tmp_path / "q8.gguf"))
    assert proc.returncode == 0, proc.stderr
    (record,) = evals("tiny:f32")
    assert record["n_ctx"] == 32 and record["windows"] == 4
