"""``kaiyuan pull`` from the command line against the local hub stand-in: progress and summary, --name/--force,
the license policy refusing before weights, an unknown repository, and resuming after an interrupted download."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from tests.fixtures.tiny_gguf import template_text
from tests.store.pull.hub_standin import HubStandIn, sha256_hex

from kaiyuan.cli._app import cli
from kaiyuan.config import load_settings
from kaiyuan.store import ModelStore

CARD = "---\nlicense: apache-2.0\n---\n# Tiny\n"


@pytest.fixture
def tiny(tiny_gguf_factory: Callable[..., Path]) -> bytes:
    return tiny_gguf_factory(
        license={"id": "apache-2.0"}, chat_template=template_text("Qwen-Qwen2.5-7B-Instruct"), name="Tiny"
    ).read_bytes()


@pytest.fixture
def hub(tiny: bytes, monkeypatch: pytest.MonkeyPatch) -> Iterator[HubStandIn]:
    with HubStandIn() as server:
        server.add_hf("Org/Tiny-GGUF", {"README.md": CARD.encode(), "tiny-Q4_K_M.gguf": tiny})
        server.add_ollama("library/tiny", "1b", [("model", tiny)])
        for name in ("KAIYUAN_HF_ENDPOINT", "KAIYUAN_MODELSCOPE_ENDPOINT", "KAIYUAN_OLLAMA_REGISTRY"):
            monkeypatch.setenv(name, server.url)
        yield server


def names() -> list[str]:
    return [m.full_name for m in ModelStore.from_settings(load_settings()).list()]


def test_pull_shows_progress_and_adds_the_model(hub: HubStandIn, tiny: bytes) -> None:
    result = CliRunner().invoke(cli, ["pull", "hf://Org/Tiny-GGUF:Q4_K_M"])
    assert result.exit_code == 0, result.output
    assert f"pulled tiny:q4_k_m ({len(tiny):,} bytes, Q4_0, license apache-2.0)" in result.stdout
    assert "pulling manifest" in result.stderr and "verifying sha256 digest" in result.stderr
    assert f"pulling {sha256_hex(tiny)[:12]}" in result.stderr
    assert "tiny:q4_k_m" in names()


def kaiyuan(*args: str) -> subprocess.CompletedProcess[str]:
    """The real console entry point (errors mapped to one line and an exit code)."""
    return subprocess.run(
        [sys.executable, "-m", "kaiyuan", *args],
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_name_force_and_quiet(hub: HubStandIn, tiny_gguf_factory: Callable[..., Path]) -> None:
    runner = CliRunner()
    first = runner.invoke(cli, ["pull", "tiny:1b", "--name", "ollama-tiny", "--quiet"])
    assert first.exit_code == 0 and first.stdout == "ollama-tiny:latest\n" and first.stderr == ""
    ModelStore.from_settings(load_settings()).import_gguf(tiny_gguf_factory(), "mine")
    taken = kaiyuan("pull", "hf://Org/Tiny-GGUF", "-n", "mine")
    assert taken.returncode == 1 and "already exists" in taken.stderr and "--force" in taken.stderr
    forced = runner.invoke(cli, ["pull", "hf://Org/Tiny-GGUF", "-n", "mine", "--force", "-q"])
    assert forced.exit_code == 0 and forced.stdout == "mine:latest\n"
    assert (
        ModelStore.from_settings(load_settings()).resolve("mine").source
        == "hf://Org/Tiny-GGUF/tiny-Q4_K_M.gguf"
    )


def test_policy_refusal_and_not_found(hub: HubStandIn, kaiyuan_home: Path) -> None:
    (kaiyuan_home / "kaiyuan.toml").write_text('[policy]\ndeny = ["apache-2.0"]\n', encoding="utf-8")
    denied = kaiyuan("pull", "hf://Org/Tiny-GGUF")
    assert denied.returncode == 1 and "Error: license policy forbids pull of tiny:q4_k_m" in denied.stderr
    assert not hub.fetched("/cdn/")
    missing = kaiyuan("pull", "hf://Org/Nope")
    assert missing.returncode == 1 and "Error: hf://Org/Nope not found (HTTP 404" in missing.stderr
    bad = kaiyuan("pull", "s3://x/y")
    assert bad.returncode == 2 and "cannot pull 's3://x/y'" in bad.stderr
    for proc in (denied, missing, bad):
        assert "Traceback" not in proc.stderr
    assert names() == ["smollm2:135m"]


def test_interrupted_pull_resumes_from_a_real_process(
    hub: HubStandIn, tiny: bytes, kaiyuan_home: Path
) -> None:
    hexd = sha256_hex(tiny)
    hub.cut[hexd] = 100
    env = {**os.environ, "KAIYUAN_HOME": str(kaiyuan_home)}
    first = subprocess.run(
        [sys.executable, "-m", "kaiyuan", "pull", "hf://Org/Tiny-GGUF"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert first.returncode == 1 and "run the pull again to resume" in first.stderr
    assert "Traceback" not in first.stderr
    held = (kaiyuan_home / "models" / "blobs" / f".partial-pull-{hexd}").stat().st_size
    hub.cut[hexd] = 0
    second = subprocess.run(
        [sys.executable, "-m", "kaiyuan", "pull", "hf://Org/Tiny-GGUF"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert second.returncode == 0, second.stderr
    assert hub.fetched("/cdn/")[-1].headers["range"] == f"bytes={held}-"
    assert "tiny:q4_k_m" in names()
