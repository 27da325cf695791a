"""`kaiyuan tune` guards: everything cheap is checked before a model is loaded or a run folder is made."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from kaiyuan.cli._app import cli


def _kaiyuan(*args: str, home: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KAIYUAN_HOME": str(home)}
    return subprocess.run(
        [sys.executable, "-m", "kaiyuan", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=300,
    )


def _good_data(path: Path) -> Path:
    path.write_text(
        json.dumps(
            {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}
        )
        + "\n",
        encoding="utf-8",
    )
    return path


def test_bad_data_lines_stop_the_run_before_loading_anything(kaiyuan_home: Path, tmp_path: Path) -> None:
    data = tmp_path / "bad.jsonl"
    data.write_text('{"messages": [{"role": "user", "content": "hi"}]}\n{"oops": 1}\n', encoding="utf-8")
    result = _kaiyuan("tune", "smollm2", "--data", str(data), "--name", "x", home=kaiyuan_home, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "line 1:" in result.stderr and "line 2:" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (kaiyuan_home / "runs").exists() or not any((kaiyuan_home / "runs").iterdir())


def test_policy_forbidding_the_derivative_stops_before_training(kaiyuan_home: Path, tmp_path: Path) -> None:
    (kaiyuan_home / "kaiyuan.toml").write_text('[policy]\ndeny = ["apache-2.0"]\n', encoding="utf-8")
    data = _good_data(tmp_path / "d.jsonl")
    result = _kaiyuan("tune", "smollm2", "--data", str(data), "--name", "x", home=kaiyuan_home, cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    assert "license policy forbids tune" in result.stderr
    assert "apache-2.0" in result.stderr
    assert not (kaiyuan_home / "runs").exists() or not any((kaiyuan_home / "runs").iterdir())


def test_unknown_base_and_taken_name(kaiyuan_home: Path, tmp_path: Path) -> None:
    data = _good_data(tmp_path / "d.jsonl")
    result = _kaiyuan(
        "tune", "no-such-model", "--data", str(data), "--name", "x", home=kaiyuan_home, cwd=tmp_path
    )
    assert result.returncode == 1 and "no-such-model" in result.stderr
    taken = _kaiyuan(
        "tune", "smollm2", "--data", str(data), "--name", "smollm2:135m", home=kaiyuan_home, cwd=tmp_path
    )
    assert taken.returncode == 1 and "already exists" in taken.stderr


def test_usage_and_list_without_runs() -> None:
    runner = CliRunner()
    missing = runner.invoke(cli, ["tune", "smollm2"])
    assert missing.exit_code == 2 and "missing --data, --name" in missing.output
    listed = runner.invoke(cli, ["tune", "list"])
    assert listed.exit_code == 0 and "no fine-tuning runs yet" in listed.output
    assert runner.invoke(cli, ["tune", "list", "--json"]).output.strip() == "[]"
    help_text = runner.invoke(cli, ["tune", "--help"]).output
    assert "kaiyuan tune BASE --data FILE --name NEW" in help_text and "--resume" in help_text
    resume_mixed = runner.invoke(cli, ["tune", "--resume", "--data", "x.jsonl"])
    assert resume_mixed.exit_code == 2 and "--resume takes no" in resume_mixed.output
