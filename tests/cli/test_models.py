"""`kaiyuan list | show | import | rm | copy` as a user runs them: real processes, real files, the real model."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner
from tests.fixtures import tiny_gguf
from tests.fixtures.signals import interruptible
from tests.fixtures.tiny_gguf import smollm2_path

from kaiyuan.cli._app import cli
from kaiyuan.gguf import read_gguf

tiny_gguf_factory = tiny_gguf.tiny_gguf_factory  # the session fixture, made visible to this module
Factory = Callable[..., Path]


def kaiyuan(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the real command line in a fresh process (KAIYUAN_HOME comes from the autouse fixture)."""
    return subprocess.run(
        [sys.executable, "-m", "kaiyuan", *args],
        capture_output=True,
        text=True,
        env=dict(os.environ),
        timeout=300,
    )


def snapshot(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def test_list_shows_the_bundled_model_with_its_license() -> None:
    proc = kaiyuan("list")
    assert proc.returncode == 0, proc.stderr
    header, *rows = proc.stdout.splitlines()
    assert header.split() == ["NAME", "ID", "SIZE", "MODIFIED", "LICENSE"]
    row = next(r for r in rows if r.startswith("smollm2:135m "))
    cells = row.split()
    assert cells[-1] == "apache-2.0"
    assert len(cells[1]) == 12 and cells[2:4] == ["98", "MB"]


def test_list_json() -> None:
    result = CliRunner().invoke(cli, ["list", "--json"])
    assert result.exit_code == 0, result.output
    (entry,) = json.loads(result.output)
    assert entry["name"] == "smollm2:135m" and entry["license"] == "apache-2.0"
    assert entry["digest"].startswith("sha256-") and entry["size"] == smollm2_path().stat().st_size


def test_show_json_of_the_bundled_model() -> None:
    proc = kaiyuan("show", "smollm2", "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["name"] == "smollm2:135m"
    assert data["architecture"] == "llama"
    assert 130e6 < data["parameters"] < 140e6 and data["parameter_size"] == "134.5M"
    assert data["quantization"] == "Q4_1"
    assert data["context_length"] == 8192
    assert data["template"] == read_gguf(smollm2_path()).chat_template
    assert data["license"]["id"] == "apache-2.0"
    assert data["lineage"] == {"relation": None, "base_models": [], "datasets": []}
    assert data["size"] == smollm2_path().stat().st_size and data["digest"].startswith("sha256-")


def test_show_text_and_template() -> None:
    runner = CliRunner()
    text = runner.invoke(cli, ["show", "smollm2"])
    assert text.exit_code == 0, text.output
    for expected in (
        "Model",
        "architecture",
        "134.5M",
        "Q4_1",
        "8192",
        "License",
        "apache-2.0",
        "Lineage",
        "Template",
    ):
        assert expected in text.output
    assert "--template prints all" in text.output
    template = runner.invoke(cli, ["show", "smollm2", "--template"])
    assert template.output == (read_gguf(smollm2_path()).chat_template or "") + "\n"
    meta = runner.invoke(cli, ["show", "smollm2", "--metadata"])
    assert "tokenizer.ggml.tokens" in meta.output and "[49152 string items]" in meta.output


def test_import_show_copy_rm(kaiyuan_home: Path, tiny_gguf_factory: Factory) -> None:
    path = tiny_gguf_factory(
        license={"id": "mit"}, base_models=[{"name": "Base Model", "organization": "Org", "version": "v1"}]
    )
    proc = kaiyuan("import", str(path), "--name", "Tiny:V1")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("imported tiny:v1 (")
    shown = json.loads(kaiyuan("show", "tiny:v1", "--json").stdout)
    assert shown["license"]["id"] == "mit"
    assert shown["lineage"]["relation"] == "finetune"
    assert shown["lineage"]["base_models"][0]["name"] == "Base Model"
    text = kaiyuan("show", "tiny:v1").stdout
    assert "base model" in text and "Base Model (Org) v1" in text

    other = str(tiny_gguf_factory(seed=5, license={"id": "mit"}))
    again = kaiyuan("import", other, "--name", "tiny:v1")
    assert again.returncode == 1 and "already exists" in again.stderr and "--force" in again.stderr
    assert kaiyuan("import", other, "--name", "tiny:v1", "--force").returncode == 0

    assert kaiyuan("copy", "tiny:v1", "tiny-copy").stdout.strip() == "copied 'tiny:v1' to 'tiny-copy:latest'"
    rows = {row.split()[0]: row.split() for row in kaiyuan("list").stdout.splitlines()[1:]}
    assert rows["tiny:v1"][-1] == rows["tiny-copy:latest"][-1] == "mit"
    assert rows["tiny:v1"][1] == rows["tiny-copy:latest"][1], "a copy shares the blob"
    blob = json.loads(kaiyuan("show", "tiny:v1", "--json").stdout)["path"]

    removed = kaiyuan("rm", "tiny:v1", "tiny-copy")
    assert removed.returncode == 0, removed.stderr
    assert removed.stdout.splitlines() == ["deleted 'tiny:v1'", "deleted 'tiny-copy:latest'"]
    assert not Path(blob).exists(), "rm deletes blobs no model uses"
    assert [row.split()[0] for row in kaiyuan("list").stdout.splitlines()[1:]] == ["smollm2:135m"]


def test_import_default_name_comes_from_the_file(tiny_gguf_factory: Factory, tmp_path: Path) -> None:
    named = tmp_path / "My-Model.Q4_0.gguf"
    named.write_bytes(tiny_gguf_factory().read_bytes())
    proc = kaiyuan("import", str(named))
    assert proc.returncode == 0, proc.stderr
    assert "imported my-model.q4_0:latest" in proc.stdout


def _lie_about_metadata_count(data: bytes) -> bytes:
    return data[:16] + struct.pack("<Q", 2**40) + data[24:]


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda good: b"# not a model\n" * 50, "not a GGUF file (bad magic"),
        (lambda good: good[: len(good) * 3 // 4], "truncated"),
        (_lie_about_metadata_count, "claims 1099511627776 metadata keys"),
    ],
    ids=["text-file", "truncated", "lying-metadata-count"],
)
def test_bad_import_is_one_line_and_adds_nothing(
    kaiyuan_home: Path,
    tiny_gguf_factory: Factory,
    tmp_path: Path,
    make: Callable[[bytes], bytes],
    expected: str,
) -> None:
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(make(tiny_gguf_factory().read_bytes()))
    before = snapshot(kaiyuan_home)
    proc = kaiyuan("import", str(bad), "--name", "bad")
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"Error: {bad}: ") and expected in lines[0]
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    assert snapshot(kaiyuan_home) == before, "no manifest, no blob, no temporary file"


def test_unknown_model_lists_close_names() -> None:
    proc = kaiyuan("show", "smolm2")
    assert proc.returncode == 1
    assert proc.stderr.strip() == (
        "Error: model 'smolm2' not found; `kaiyuan list` shows your models "
        "(did you mean: smollm2:latest, smollm2:135m?)"
    )


def test_rm_of_the_bundled_model_is_refused() -> None:
    proc = kaiyuan("rm", "smollm2")
    assert proc.returncode == 2 and "bundled" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_import_refused_by_the_license_policy(kaiyuan_home: Path, tiny_gguf_factory: Factory) -> None:
    (kaiyuan_home / "kaiyuan.toml").write_text('[policy]\ndeny = ["mit"]\n', encoding="utf-8")
    before = snapshot(kaiyuan_home)
    proc = kaiyuan("import", str(tiny_gguf_factory(license={"id": "mit"})), "--name", "denied")
    assert proc.returncode == 1, proc.stderr
    first_line = proc.stderr.splitlines()[0]
    assert first_line.startswith("Error: license policy forbids import of denied:latest")
    assert "Traceback" not in proc.stderr
    assert snapshot(kaiyuan_home) == before


def test_ctrl_c_during_import_leaves_nothing(kaiyuan_home: Path) -> None:
    import signal
    import time

    kaiyuan("list")  # register the bundled model first: only the import's own files are at stake
    before = snapshot(kaiyuan_home)
    blobs = kaiyuan_home / "models" / "blobs"
    proc = subprocess.Popen(
        [sys.executable, "-m", "kaiyuan", "import", str(smollm2_path()), "--name", "interrupted"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=interruptible,
    )
    deadline = time.monotonic() + 60
    while proc.poll() is None and not list(blobs.glob(".partial-*")) and time.monotonic() < deadline:
        time.sleep(0.002)
    if proc.poll() is not None:
        proc.communicate()
        pytest.skip("the copy finished before the interrupt could land")
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    if proc.returncode == 0:  # on a busy machine the last chunk and the commit can beat the signal
        assert kaiyuan("show", "interrupted").returncode == 0, "exit 0 must mean a complete import"
        pytest.skip("the import finished before the interrupt landed")
    assert proc.returncode == 130, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert snapshot(kaiyuan_home) == before


def test_import_a_lora_adapter_on_a_base(tmp_path: Path) -> None:
    from tests.fixtures.lora_gguf import random_lora

    lora = random_lora(smollm2_path(), tmp_path / "support-lora.gguf")
    plain = kaiyuan("import", str(lora), "--name", "nope")
    assert plain.returncode == 1 and "--base" in plain.stderr and "Traceback" not in plain.stderr

    proc = kaiyuan("import", str(lora), "--base", "smollm2", "--name", "smollm2-support")
    assert proc.returncode == 0, proc.stderr
    shown = json.loads(kaiyuan("show", "smollm2-support", "--json").stdout)
    base = json.loads(kaiyuan("show", "smollm2", "--json").stdout)
    assert shown["base"] == "smollm2:135m" and len(shown["adapters"]) == 1
    assert shown["lineage"]["relation"] == "adapter"
    assert shown["lineage"]["base_models"][0]["name"] == "smollm2:135m"
    assert (
        shown["license"]["inherited"] is True
        and shown["license"]["id"] == base["license"]["id"] == "apache-2.0"
    )

    not_an_adapter = kaiyuan("import", smollm2_path(), "--base", "smollm2", "--name", "x")
    assert not_an_adapter.returncode == 1 and "not a LoRA adapter" in not_an_adapter.stderr
    missing_base = kaiyuan("import", str(lora), "--base", "no-such-model", "--name", "y")
    assert missing_base.returncode == 1 and "no-such-model" in missing_base.stderr
