"""``kaiyuan convert`` and ``kaiyuan import ./folder`` as a user runs them: store models in, converted models out,
with their lineage, inherited license and the errors a user sees for conversions that cannot be done."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from kaiyuan.cli._app import cli
from kaiyuan.store import ModelStore
from tests.cli.test_models import kaiyuan  # the real command line in a fresh process
from tests.convert.greedy import PROMPTS, llama_greedy, llama_tokens
from tests.store.test_hf_models import make_hf_folder

pytestmark = pytest.mark.slow


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_tiny_qwen3_to_hf_and_back_keeps_greedy_tokens_and_records_lineage(
    kaiyuan_home: Path, tiny_gguf_factory: Callable[..., Path], tmp_path: Path
) -> None:
    pytest.importorskip("transformers")
    from tests.convert.test_hf_to_gguf import f32_copy

    f32 = f32_copy(tiny_gguf_factory(arch="qwen3", license={"id": "mit"}), tmp_path / "tiny-f32.gguf")
    assert run("import", str(f32), "--name", "tiny:f32").exit_code == 0
    result = run("convert", "tiny:f32", "--to", "hf", "--dtype", "float32")
    assert result.exit_code == 0, result.output
    assert "converted tiny:f32 to tiny:f32-hf (Hugging Face, F32, license mit)" in result.output
    result = run("convert", "tiny:f32-hf", "--to", "gguf", "--name", "tiny:back")
    assert result.exit_code == 0, result.output

    store = ModelStore(kaiyuan_home)
    hf, back = store.resolve("tiny:f32-hf"), store.resolve("tiny:back")
    assert hf.format == "hf" and (hf.model_path / "config.json").is_file()
    assert back.format == "gguf" and back.quantization == "F32"
    for child, parent in ((hf, "tiny:f32"), (back, "tiny:f32-hf")):
        assert child.lineage["relation"] == "converted"
        assert child.lineage["base_models"][0]["name"] == parent
        assert child.license["id"] == "mit" and child.license["source"] == "inherited"
        assert child.source.startswith(f"convert:{parent}@sha256-")
    prompts = [llama_tokens(f32, text) for text in PROMPTS]
    assert llama_greedy(back.model_path, prompts, 16) == llama_greedy(f32, prompts, 16)


def test_quantized_conversion_goes_through_llama_cpp(
    kaiyuan_home: Path, tiny_gguf_factory: Callable[..., Path]
) -> None:
    pytest.importorskip("transformers")
    run("import", str(tiny_gguf_factory(arch="llama")), "--name", "tiny")
    assert run("convert", "tiny", "--to", "hf").exit_code == 0
    result = run("convert", "tiny:hf", "--to", "gguf", "--quant", "q8_0")
    assert result.exit_code == 0, result.output
    manifest = ModelStore(kaiyuan_home).resolve("tiny:hf-q8_0")
    assert manifest.quantization == "Q8_0"


@pytest.mark.parametrize(
    ("setup", "args", "message"),
    [
        ("gguf", ["--to", "gguf"], "already a GGUF model"),
        ("gguf", ["--to", "hf", "--quant", "Q4_K_M"], "--quant applies to --to gguf"),
        ("gpt2", ["--to", "gguf"], "'GPT2LMHeadModel' cannot be converted to GGUF by kaiyuan; supported: "),
        ("gguf", ["--to", "gguf", "--quant", "Q3_XYZ"], "unknown quantization 'Q3_XYZ'"),
    ],
)
def test_impossible_conversions_say_why_and_add_nothing(
    setup: str,
    args: list[str],
    message: str,
    kaiyuan_home: Path,
    tiny_gguf_factory: Callable[..., Path],
    tmp_path: Path,
) -> None:
    if setup == "gguf":
        run("import", str(tiny_gguf_factory(arch="llama")), "--name", "m")
    else:
        folder = make_hf_folder(tmp_path / "gpt2")
        (folder / "config.json").write_text(
            json.dumps({"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2"})
        )
        assert run("import", str(folder), "--name", "m").exit_code == 0
    before = sorted(m.full_name for m in ModelStore(kaiyuan_home).list())
    result = kaiyuan("convert", "m", *args)
    assert result.returncode != 0
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert sorted(m.full_name for m in ModelStore(kaiyuan_home).list()) == before


def test_policy_that_forbids_the_license_stops_the_conversion_before_work(
    kaiyuan_home: Path, tiny_gguf_factory: Callable[..., Path]
) -> None:
    run("import", str(tiny_gguf_factory(arch="llama", license={"id": "mit"})), "--name", "m")
    (kaiyuan_home / "kaiyuan.toml").write_text('[policy]\ndeny = ["mit"]\n')
    result = kaiyuan("convert", "m", "--to", "hf")
    assert result.returncode != 0 and "mit" in result.stderr
    assert not ModelStore(kaiyuan_home).exists("m:hf")
    assert not list((kaiyuan_home / "models").glob(".convert-*"))


def test_import_folder_then_list_show_and_rm(kaiyuan_home: Path, tmp_path: Path) -> None:
    folder = make_hf_folder(tmp_path / "Tiny-Qwen")
    result = run("import", str(folder))
    assert result.exit_code == 0, result.output
    assert "imported tiny-qwen:latest" in result.output and "license apache-2.0" in result.output
    listed = json.loads(run("list", "--json").output)
    row = next(r for r in listed if r["name"] == "tiny-qwen:latest")
    assert row["format"] == "hf" and row["architecture"] == "qwen2" and row["parameters"] == 88
    shown = json.loads(run("show", "tiny-qwen", "--json", "--metadata").output)
    assert shown["format"] == "hf" and Path(shown["path"]).is_dir()
    assert shown["license"]["id"] == "apache-2.0"
    assert shown["metadata"]["config.model_type"] == "'qwen2'"
    text = run("show", "tiny-qwen").output
    assert "Hugging Face folder (safetensors)" in text and "finetune" in text
    assert run("rm", "tiny-qwen").exit_code == 0
    assert not ModelStore(kaiyuan_home).exists("tiny-qwen")


def test_import_folder_without_weights_names_the_missing_part(tmp_path: Path) -> None:
    folder = make_hf_folder(tmp_path / "broken")
    (folder / "model.safetensors").unlink()
    result = kaiyuan("import", str(folder))
    assert result.returncode != 0
    assert "no *.safetensors weights" in result.stderr and "Traceback" not in result.stderr
