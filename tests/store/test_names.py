"""Model names: Ollama-style name[:tag], lowercase, validated, mapped to manifest paths."""

from __future__ import annotations

from pathlib import Path

import pytest

import kaiyuan.store
from kaiyuan.errors import InvalidRequest
from kaiyuan.store import ModelName, parse_name


def test_public_names_are_sorted() -> None:
    assert kaiyuan.store.__all__ == sorted(kaiyuan.store.__all__, key=lambda n: (not n.isupper(), n))


@pytest.mark.parametrize(
    ("text", "name", "tag"),
    [
        ("smollm2", "smollm2", "latest"),
        ("SmolLM2:135M", "smollm2", "135m"),
        ("  qwen2.5-coder:7b-instruct_q4  ", "qwen2.5-coder", "7b-instruct_q4"),
        ("hf.co/Org/Repo-GGUF:Q4_K_M", "hf.co/org/repo-gguf", "q4_k_m"),
        ("my/model", "my/model", "latest"),
    ],
)
def test_valid_names(text: str, name: str, tag: str) -> None:
    assert parse_name(text) == ModelName(name, tag)
    assert str(parse_name(text)) == f"{name}:{tag}"


@pytest.mark.parametrize(
    "text",
    ["", ":tag", "a b", "../etc", "a/../b", "a//b", "-x", "x:", "x:.hidden", "x:a:b/c", "é", "a" * 201],
)
def test_invalid_names(text: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse_name(text)
    assert "\n" not in caught.value.message


def test_manifest_path_round_trip(tmp_path: Path) -> None:
    for name in (ModelName("hf.co/org/repo", "q4_k_m"), ModelName("a", "b"), ModelName("a/b", "latest")):
        path = name.manifest_path(tmp_path)
        assert path.is_relative_to(tmp_path)
        assert ModelName.from_manifest_path(path, tmp_path) == name
    # "a" tagged "b" and "a/b" tagged "latest" live side by side without clashing
    assert ModelName("a", "b").manifest_path(tmp_path) != ModelName("a/b", "latest").manifest_path(tmp_path)
