"""Detection from files: GGUF metadata written by the gguf package, model cards, LICENSE texts, model folders."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from kaiyuan.errors import InvalidModelFile
from kaiyuan.license import detect_from_path, evaluate

Factory = Callable[..., Path]

LLAMA_31_TEXT = """LLAMA 3.1 COMMUNITY LICENSE AGREEMENT
Llama 3.1 Version Release Date: July 23, 2024
"Agreement" means the terms and conditions for use, reproduction, distribution and modification of the
Llama Materials set forth herein.
"""

MIT_TEXT = """MIT License

Copyright (c) 2025 Someone

Permission is hereby granted, free of charge, to any person obtaining a copy of this software and associated
documentation files (the "Software"), to deal in the Software without restriction ...

The above copyright notice and this permission notice shall be included in all copies or substantial portions of
the Software.
"""


def test_gguf_license_and_base_models_are_read(tiny_gguf_factory: Factory) -> None:
    path = tiny_gguf_factory(
        license={
            "id": "other",
            "name": "qwen-research",
            "link": "https://huggingface.co/Qwen/Qwen2.5-3B/blob/main/LICENSE",
        },
        base_models=[
            {
                "name": "Qwen2.5 3B",
                "organization": "Qwen",
                "repo_url": "https://huggingface.co/Qwen/Qwen2.5-3B",
            }
        ],
        name="My Qwen Tune",
    )
    model = detect_from_path(path)
    assert model["name"] == "My Qwen Tune"
    assert model["license"]["source"] == "gguf"
    assert model["lineage"]["relation"] == "finetune"
    report = evaluate(model)
    assert report.license.id == "qwen-research"
    assert report.license.confidence == "high"
    assert [n.name for n in report.lineage] == ["Qwen/Qwen2.5-3B"]
    assert report.effective.commercial_use == "forbidden"


def test_gguf_without_license_is_unknown_never_permissive(tiny_gguf_factory: Factory) -> None:
    report = evaluate(detect_from_path(tiny_gguf_factory(name="nameless")))
    assert report.license.id == "unknown"
    assert report.license.confidence == "none"
    assert report.effective.commercial_use == "unknown"
    assert report.effective.unknown == ["nameless"]
    assert report.openness.mof_class is None and report.openness.osaid == "unknown"


def test_gguf_with_a_license_kaiyuan_does_not_know_keeps_the_declared_value(
    tiny_gguf_factory: Factory,
) -> None:
    report = evaluate(
        detect_from_path(tiny_gguf_factory(license={"id": "other", "name": "acme-model-license-v7"}))
    )
    assert report.license.id == "unknown"
    assert report.license.declared == {"id": "other", "name": "acme-model-license-v7"}
    assert report.to_json()["license"]["name"] == "acme-model-license-v7"


def test_gguf_adapter_type_gives_adapter_relation(tiny_gguf_factory: Factory) -> None:
    path = tiny_gguf_factory(
        license={"id": "llama3.1"},
        base_models=[{"name": "Llama 3.1 8B", "organization": "Meta Llama"}],
        metadata={"general.type": "adapter"},
    )
    model = detect_from_path(path)
    assert model["lineage"]["relation"] == "adapter"
    report = evaluate(model)
    assert report.lineage[0].name == "meta-llama/Llama-3.1-8B"  # resolved by display name + organization
    assert report.lineage[0].relation == "adapter"


def test_a_file_that_is_not_gguf_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "model.gguf"
    bad.write_bytes(b"GGUF\x03\x00\x00\x00" + b"\xff" * 8)
    with pytest.raises(InvalidModelFile):
        detect_from_path(bad)
    with pytest.raises(InvalidModelFile, match="no such file"):
        detect_from_path(tmp_path / "missing.gguf")


def test_model_card_front_matter(tmp_path: Path) -> None:
    card = tmp_path / "DeepSeek-R1-Distill-Qwen-7B" / "README.md"
    card.parent.mkdir()
    card.write_text(
        "---\nlicense: mit\nlibrary_name: transformers\nbase_model:\n- Qwen/Qwen2.5-Math-7B\n"
        "datasets: [open-r1/OpenR1-Math-220k]\ntags: [reasoning]\n---\n# DeepSeek-R1-Distill-Qwen-7B\n",
        encoding="utf-8",
    )
    model = detect_from_path(card)
    assert model["card"] is True
    report = evaluate(model)
    assert report.license.id == "mit" and report.license.source == "card"
    assert report.datasets == ["open-r1/OpenR1-Math-220k"]
    # the folder names the model: a known distill, so the teacher the card leaves out is added from the table
    assert [(n.name, n.license.id) for n in report.lineage] == [
        ("Qwen/Qwen2.5-Math-7B", "apache-2.0"),
        ("deepseek-ai/DeepSeek-R1", "mit"),
    ]


def test_card_with_other_license_uses_license_name_and_link(tmp_path: Path) -> None:
    card = tmp_path / "README.md"
    card.write_text(
        "---\nlicense: other\nlicense_name: tencent-hunyuan-community\n"
        "license_link: https://huggingface.co/tencent/Hunyuan-A13B-Instruct/blob/main/LICENSE\n---\n",
        encoding="utf-8",
    )
    report = evaluate(detect_from_path(card))
    assert report.license.id == "tencent-hunyuan-community"
    assert report.effective.territory_excluded == ["EU", "GB", "KR"]


def test_bad_card_yaml_is_a_clear_error(tmp_path: Path) -> None:
    card = tmp_path / "README.md"
    card.write_text("---\nlicense: [unclosed\n---\n", encoding="utf-8")
    with pytest.raises(InvalidModelFile, match="not valid YAML"):
        detect_from_path(card)


def test_folder_with_only_a_license_file_is_fingerprinted(tmp_path: Path) -> None:
    (tmp_path / "LICENSE").write_text(LLAMA_31_TEXT, encoding="utf-8")
    (tmp_path / "config.json").write_text("{}", encoding="utf-8")
    report = evaluate(detect_from_path(tmp_path))
    assert report.license.id == "llama3.1"
    assert report.license.source == "license_file"
    assert report.license.confidence == "high"  # two phrases of the text matched


def test_folder_card_contradicted_by_license_text_applies_both(tmp_path: Path) -> None:
    (tmp_path / "README.md").write_text("---\nlicense: apache-2.0\n---\n", encoding="utf-8")
    (tmp_path / "LICENSE.txt").write_text(LLAMA_31_TEXT, encoding="utf-8")
    report = evaluate(detect_from_path(tmp_path))
    assert report.license.id == "apache-2.0"
    assert report.license.confidence == "low"
    assert "llama3.1" in report.effective.licenses
    assert report.effective.name_prefix == "Llama"


def test_folder_with_card_gguf_and_mit_license(tmp_path: Path, tiny_gguf_factory: Factory) -> None:
    shutil.copy(tiny_gguf_factory(license={"id": "mit"}), tmp_path / "model.gguf")
    (tmp_path / "LICENSE").write_text(MIT_TEXT, encoding="utf-8")
    model = detect_from_path(tmp_path)
    assert model["files"] == [str(tmp_path / "model.gguf")]
    report = evaluate(model)
    assert report.license.id == "mit" and report.license.confidence == "high"
    assert report.effective.licenses == ["mit"]


def test_empty_folder_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(InvalidModelFile, match="no model card"):
        detect_from_path(tmp_path)


def test_undeclared_license_is_found_through_the_table_by_repository(tiny_gguf_factory: Factory) -> None:
    path = tiny_gguf_factory(
        name="Qwen2.5 3B Instruct",
        metadata={"general.repo_url": "https://huggingface.co/Qwen/Qwen2.5-3B-Instruct"},
    )
    report = evaluate(detect_from_path(path))
    assert report.license.id == "qwen-research"
    assert (report.license.source, report.license.confidence) == ("table", "high")  # by its repository id
    assert report.known_model == "Qwen/Qwen2.5-3B-Instruct"


def test_a_card_can_be_judged_from_its_text_before_any_download() -> None:
    from kaiyuan.license import model_from_card, parse_card

    text = (
        "---\nlicense: llama3.2\nbase_model: meta-llama/Llama-3.2-11B-Vision-Instruct\n---\n# A vision tune\n"
    )
    report = evaluate(
        model_from_card(parse_card(text), name="vision-tune"), {"territory": "DE"}, action="pull"
    )
    assert report.policy is not None and not report.policy.allowed
    assert "EU" in report.policy.reasons[0]
