"""Two processes importing at the same time leave one consistent manifest and no temporary files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from kaiyuan.store import ModelStore
from tests.fixtures import tiny_gguf
from tests.fixtures.tiny_gguf import smollm2_path

tiny_gguf_factory = tiny_gguf.tiny_gguf_factory  # the session fixture, made visible to this module
Factory = Callable[..., Path]


def _start_import(path: Path, name: str, home: Path) -> subprocess.Popen[str]:
    env = dict(os.environ, KAIYUAN_HOME=str(home))
    return subprocess.Popen(
        [sys.executable, "-m", "kaiyuan", "import", str(path), "--name", name],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _leftovers(home: Path) -> list[Path]:
    return [p for p in home.rglob("*") if p.name.startswith(".partial-") or p.name.endswith(".tmp")]


def test_two_processes_import_the_same_file(kaiyuan_home: Path) -> None:
    # The 98 MB bundled file takes long enough to copy that the two imports overlap.
    procs = [_start_import(smollm2_path(), "race:v1", kaiyuan_home) for _ in range(2)]
    results = [(p.communicate(timeout=300), p.returncode) for p in procs]
    assert [code for _, code in results] == [0, 0], results
    manifest_files = list((kaiyuan_home / "models" / "manifests" / "race").glob("*"))
    assert [p.name for p in manifest_files] == ["v1.json"]
    data = json.loads(manifest_files[0].read_text(encoding="utf-8"))
    manifest = ModelStore(kaiyuan_home).resolve("race:v1")
    assert data["blob"]["digest"] == manifest.blob.digest
    assert manifest.model_path.is_file() and not manifest.model_path.is_symlink()
    assert manifest.model_path.stat().st_size == smollm2_path().stat().st_size
    assert _leftovers(kaiyuan_home) == []


def test_two_processes_import_different_files_under_one_name(
    kaiyuan_home: Path, tiny_gguf_factory: Factory
) -> None:
    files = [tiny_gguf_factory(seed=10), tiny_gguf_factory(seed=11)]
    procs = [_start_import(path, "contested", kaiyuan_home) for path in files]
    outcomes = []
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        outcomes.append((proc.returncode, err))
    codes = sorted(code for code, _ in outcomes)
    assert codes == [0, 1], outcomes
    loser_error = next(err for code, err in outcomes if code == 1)
    assert "already exists" in loser_error and len(loser_error.strip().splitlines()) == 1
    winner = files[[code for code, _ in outcomes].index(0)]
    manifest = ModelStore(kaiyuan_home).resolve("contested")
    assert manifest.model_path.read_bytes() == winner.read_bytes()
    blobs = [p for p in (kaiyuan_home / "models" / "blobs").iterdir() if p.name.startswith("sha256-")]
    assert sorted(p.name for p in blobs) == sorted(
        [manifest.blob.digest, ModelStore(kaiyuan_home).resolve("smollm2").blob.digest]
    )
    assert _leftovers(kaiyuan_home) == []
