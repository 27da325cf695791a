"""Release-bundle writers: LICENSE, NOTICE, model card front matter and a CycloneDX 1.6 ML-BOM that validates."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from kaiyuan.license import (
    cyclonedx_bom,
    derivative,
    write_cyclonedx_bom,
    write_license_file,
    write_model_card,
    write_notice,
)

LLAMA = {"repo_url": "https://huggingface.co/meta-llama/Llama-3.1-8B-Instruct"}


def validator():  # type: ignore[no-untyped-def]
    cyclonedx = pytest.importorskip("cyclonedx.validation.json", reason="test extra: cyclonedx-python-lib")
    from cyclonedx.schema import SchemaVersion

    return cyclonedx.JsonStrictValidator(SchemaVersion.V1_6)


def front_matter(path: Path) -> dict:  # type: ignore[type-arg]
    text = path.read_text(encoding="utf-8")
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n")[1])


def test_bundle_for_a_llama_adapter(tmp_path: Path) -> None:
    model = derivative("llama-support-bot", [LLAMA], "adapter", datasets=["HuggingFaceH4/ultrachat_200k"])
    notice = write_notice(tmp_path, model).read_text(encoding="utf-8")
    assert "Llama 3.1 is licensed under the Llama 3.1 Community License" in notice
    assert 'display "Built with Llama"' in notice
    assert 'must begin with "Llama"' in notice
    assert "https://www.llama.com/llama3_1/use-policy/" in notice
    assert "not legal advice" in notice

    license_text = write_license_file(
        tmp_path, model, texts={"llama3.1": "LLAMA 3.1 COMMUNITY LICENSE AGREEMENT\n..."}
    )
    body = license_text.read_text(encoding="utf-8")
    assert license_text.name == "LICENSE"
    assert "Llama 3.1 Community License Agreement (LicenseRef-llama3.1)" in body
    assert "LLAMA 3.1 COMMUNITY LICENSE AGREEMENT" in body

    card = write_model_card(tmp_path, model, description="A support bot.", tags=["support"])
    assert card.name == "README.md"
    assert front_matter(card) == {
        "license": "llama3.1",
        "base_model": "meta-llama/Llama-3.1-8B-Instruct",
        "base_model_relation": "adapter",
        "datasets": ["HuggingFaceH4/ultrachat_200k"],
        "tags": ["kaiyuan", "support", "adapter"],
    }
    assert "**Built with Llama**" in card.read_text(encoding="utf-8")


def test_card_for_a_custom_license_uses_other_name_and_link(tmp_path: Path) -> None:
    model = derivative("hy-tune", [{"repo_url": "tencent/Hunyuan-7B-Instruct"}], "finetune")
    front = front_matter(write_model_card(tmp_path / "card.md", model))
    assert front["license"] == "other"
    assert front["license_name"] == "tencent-hunyuan-community"
    assert front["license_link"].startswith("https://huggingface.co/tencent/")
    notice = write_notice(tmp_path / "NOTICE", model).read_text(encoding="utf-8")
    assert "not licensed in: EU, GB, KR" in notice


def test_merge_card_names_the_strictest_license_and_both_bases(tmp_path: Path) -> None:
    parents = [{"name": "a", "repo_url": "Qwen/Qwen2.5-7B"}, {"name": "b", "license": "cc-by-nc-4.0"}]
    model = derivative("merged", parents, "merge")
    front = front_matter(write_model_card(tmp_path, model))
    assert front["license"] == "cc-by-nc-4.0"
    assert front["base_model"] == ["Qwen/Qwen2.5-7B", "b"]
    assert front["base_model_relation"] == "merge"
    assert "merged parents disagree on commercial_use" in write_notice(tmp_path, model).read_text(
        encoding="utf-8"
    )


def test_unknown_license_is_written_as_unknown(tmp_path: Path) -> None:
    model = {"name": "mystery", "license": {"id": "other", "name": "whatever-1.0"}}
    assert "unknown" in write_license_file(tmp_path, model).read_text(encoding="utf-8")
    assert front_matter(write_model_card(tmp_path, model))["license"] == "unknown"


@pytest.mark.parametrize(
    "model",
    [
        derivative(
            "llama-bot", [LLAMA], "adapter", datasets=["HuggingFaceH4/ultrachat_200k", "local-data.jsonl"]
        ),
        derivative("r1-tune", [{"repo_url": "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B"}], "finetune"),
        derivative(
            "two", [{"repo_url": "Qwen/Qwen2.5-7B"}, {"name": "nc", "license": "cc-by-nc-4.0"}], "merge"
        ),
        {
            "name": "smollm2:135m",
            "license": {"id": "apache-2.0"},
            "repo_url": "HuggingFaceTB/SmolLM2-135M-Instruct",
        },
        {"name": "mystery", "license": {"id": "other", "name": "acme"}},
        {"name": "nothing-declared"},
    ],
    ids=["llama-adapter", "r1-distill-chain", "merge", "smollm2", "unknown", "bare"],
)
def test_cyclonedx_bom_validates_against_the_1_6_schema(model: dict, tmp_path: Path) -> None:  # type: ignore[type-arg]
    path = write_cyclonedx_bom(tmp_path, model, version="1.0", sha256="sha256-" + "ab" * 32)
    assert path.name == "bom.cdx.json"
    text = path.read_text(encoding="utf-8")
    assert validator().validate_str(text) is None
    bom = json.loads(text)
    assert bom["specVersion"] == "1.6"
    component = bom["metadata"]["component"]
    assert component["type"] == "machine-learning-model"
    assert "modelCard" in component


def test_bom_pedigree_nests_ancestors_and_licenses() -> None:
    bom = cyclonedx_bom(
        derivative("r1-tune", [{"repo_url": "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B"}], "finetune")
    )
    main = bom["metadata"]["component"]
    (distill,) = main["pedigree"]["ancestors"]
    assert distill["name"] == "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B"
    assert distill["licenses"] == [{"license": {"id": "MIT", "acknowledgement": "declared"}}]
    grand = {a["name"]: a["licenses"][0]["license"]["id"] for a in distill["pedigree"]["ancestors"]}
    assert grand == {"Qwen/Qwen2.5-Math-7B": "Apache-2.0", "deepseek-ai/DeepSeek-R1": "MIT"}


def test_bom_records_custom_licenses_by_name_and_url_and_effective_terms() -> None:
    bom = cyclonedx_bom(
        derivative("llama-bot", [LLAMA], "adapter", datasets=["HuggingFaceH4/ultrachat_200k"])
    )
    main = bom["metadata"]["component"]
    assert main["licenses"][0]["license"]["name"] == "Llama 3.1 Community License Agreement"
    props = {(p["name"], p["value"]) for p in main["properties"]}
    assert ("kaiyuan:license:attribution", "Built with Llama") in props
    assert ("kaiyuan:license:name_prefix", "Llama") in props
    assert main["modelCard"]["modelParameters"]["datasets"] == [
        {"ref": "dataset:HuggingFaceH4/ultrachat_200k"}
    ]
    assert bom["components"][0]["type"] == "data"
