"""`kaiyuan license show/check/explain/list` as a user runs them: real files, real policy files, exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from click.testing import CliRunner

from kaiyuan.cli._app import cli

Factory = Callable[..., Path]


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["license", *args])
    return result.exit_code, result.output


def hunyuan_gguf(factory: Factory) -> Path:
    return factory(
        license={"id": "other", "name": "tencent-hunyuan-community"},
        base_models=[
            {
                "name": "Hunyuan 7B Instruct",
                "organization": "Tencent",
                "repo_url": "https://huggingface.co/tencent/Hunyuan-7B-Instruct",
            }
        ],
        name="Hunyuan Tune",
    )


def test_show_a_gguf_file(tiny_gguf_factory: Factory) -> None:
    code, out = run("show", str(hunyuan_gguf(tiny_gguf_factory)))
    assert code == 0
    assert "Tencent Hunyuan Community License Agreement [tencent-hunyuan-community]" in out
    assert "tencent/Hunyuan-7B-Instruct [tencent-hunyuan-community] --finetune--> Hunyuan Tune" in out
    assert "excluded: EU, GB, KR" in out
    assert "not legal advice" in out


def test_show_json_is_the_report_schema(tiny_gguf_factory: Factory) -> None:
    code, out = run("show", str(hunyuan_gguf(tiny_gguf_factory)), "--json")
    assert code == 0
    data = json.loads(out)
    assert data["schema"] == "kaiyuan.license.report/1"
    assert data["license"]["id"] == "tencent-hunyuan-community"
    assert data["license"]["source"] == "gguf"
    assert data["lineage"][0]["name"] == "tencent/Hunyuan-7B-Instruct"
    assert data["effective"]["territory_excluded"] == ["EU", "GB", "KR"]
    assert data["openness"]["osaid"] == "fail"
    assert data["policy"] is None  # no [policy] in this KAIYUAN_HOME


def test_show_a_model_card_before_import(tmp_path: Path) -> None:
    card = tmp_path / "README.md"
    card.write_text(
        "---\nlicense: other\nlicense_name: mrl\nbase_model: mistralai/Ministral-8B-Instruct-2410\n---\n"
    )
    code, out = run("show", str(card))
    assert code == 0
    assert "Mistral AI Research License [mrl]" in out
    assert "research only         yes" in out


def test_show_uses_the_policy_of_kaiyuan_toml(kaiyuan_home: Path, tiny_gguf_factory: Factory) -> None:
    (kaiyuan_home / "kaiyuan.toml").write_text('[policy]\nterritory = "DE"\n', encoding="utf-8")
    code, out = run("show", str(hunyuan_gguf(tiny_gguf_factory)))
    assert code == 0
    assert "Policy:       DENIED (enforce mode)" in out
    assert "does not apply in DE" in out


def test_check_exit_codes_with_a_policy_file(tmp_path: Path, tiny_gguf_factory: Factory) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text('[policy]\ncommercial = true\nterritory = ["DE"]\nmau = 5_000_000\n', encoding="utf-8")
    apache = tiny_gguf_factory(license={"id": "apache-2.0"}, name="ok")
    code, out = run("check", str(apache), "--policy", str(policy))
    assert (code, out.split()[0]) == (0, "allowed")

    code, out = run("check", str(apache), str(hunyuan_gguf(tiny_gguf_factory)), "--policy", str(policy))
    assert code == 1
    assert "DENIED" in out and "does not apply in DE" in out

    code, out = run("check", str(hunyuan_gguf(tiny_gguf_factory)), "--policy", str(policy), "--json")
    assert code == 1
    line = json.loads(out.splitlines()[0])
    assert line["allowed"] is False and line["license"] == "tencent-hunyuan-community"


def test_check_warn_mode_exits_zero(tmp_path: Path, tiny_gguf_factory: Factory) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text('mode = "warn"\nterritory = "KR"\n', encoding="utf-8")  # top-level keys work too
    code, out = run("check", str(hunyuan_gguf(tiny_gguf_factory)), "--policy", str(policy))
    assert code == 0
    assert out.startswith("warning")


def test_check_usage_errors_exit_two(tmp_path: Path) -> None:
    bad_policy = tmp_path / "bad.toml"
    bad_policy.write_text("[policy]\ncommercial = maybe\n", encoding="utf-8")
    card = tmp_path / "README.md"
    card.write_text("---\nlicense: mit\n---\n", encoding="utf-8")
    assert run("check", str(card), "--policy", str(bad_policy))[0] == 2
    unknown_key = tmp_path / "unknown.toml"
    unknown_key.write_text("[policy]\ncomercial = true\n", encoding="utf-8")
    code, out = run("check", str(card), "--policy", str(unknown_key))
    assert code == 2 and "unknown key" in out
    assert run("check", str(tmp_path / "missing.gguf"))[0] == 2
    assert run("check")[0] == 2


def test_check_unknown_model_name_exits_two_from_the_console_script() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "kaiyuan", "license", "check", "no-such-model:latest"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr


def test_explain_and_list() -> None:
    code, out = run("explain", "Llama-3.1")
    assert code == 0
    assert "Llama 3.1 Community License Agreement [llama3.1]" in out
    assert 'attribution           "Built with Llama"' in out
    assert "https://www.llama.com/llama3_1/license/" in out
    assert "meta-llama/Llama-3.1-8B" in out
    code, out = run("explain", "llama31")
    assert code == 2 and "did you mean" in out
    code, out = run("list")
    assert code == 0
    assert len(out.splitlines()) >= 30
    assert any(line.startswith("qwen-research") and "forbidden" in line for line in out.splitlines())


def test_show_and_check_a_model_in_the_store(
    kaiyuan_home: Path, tmp_path: Path, tiny_gguf_factory: Factory
) -> None:
    from kaiyuan.store import ModelStore

    ModelStore(kaiyuan_home).import_gguf(hunyuan_gguf(tiny_gguf_factory), "hy-tune:q4")
    code, out = run("show", "hy-tune:q4")
    assert code == 0
    assert out.startswith("Model:        hy-tune:q4")
    assert "tencent/Hunyuan-7B-Instruct [tencent-hunyuan-community]" in out
    policy = tmp_path / "policy.toml"
    policy.write_text('[policy]\nterritory = "KR"\n', encoding="utf-8")
    code, out = run("check", "hy-tune:q4", "smollm2", "--policy", str(policy))
    assert code == 1
    assert out.splitlines()[0].startswith("DENIED  hy-tune:q4")
    assert any(line.startswith("allowed  smollm2") for line in out.splitlines())
