"""Known model identities: a model kaiyuan's table knows carries its lineage when its card or file leaves it out
(the R1 distills' cards say MIT and name no Llama or Qwen base), and a well-known model whose card has no license
tag is recognised by its repository id, a redistribution's repository name, its GGUF name or its store name, with
the confidence and the reason in the report. The inputs are what the real cards and pulls give."""

from __future__ import annotations

from typing import Any

import pytest

from kaiyuan.license import evaluate, license_summary, model_from_card, parse_card

# The front matter of the real DeepSeek-R1-Distill-Llama-8B / -70B cards (license: mit, no base_model).
R1_DISTILL_CARD = "---\nlicense: mit\nlibrary_name: transformers\n---\n# DeepSeek-R1\n"
# A card that names the teacher only, as some fine-tunes of the distills do.
TEACHER_ONLY_CARD = "---\nlicense: mit\nbase_model:\n- deepseek-ai/DeepSeek-R1\n---\n"


def pulled(card: str, source: str, name: str = "model:latest") -> dict[str, Any]:
    """What a pull records from a card: its license and lineage, and the source reference."""
    return {**model_from_card(parse_card(card)), "name": name, "source": source}


@pytest.mark.parametrize(
    ("repo", "base", "license_id"),
    [
        ("deepseek-ai/DeepSeek-R1-Distill-Llama-8B", "meta-llama/Llama-3.1-8B", "llama3.1"),
        ("deepseek-ai/DeepSeek-R1-Distill-Llama-70B", "meta-llama/Llama-3.3-70B-Instruct", "llama3.3"),
        ("deepseek-ai/DeepSeek-R1-Distill-Qwen-7B", "Qwen/Qwen2.5-Math-7B", "apache-2.0"),
        ("deepseek-ai/DeepSeek-R1-Distill-Qwen-32B", "Qwen/Qwen2.5-32B", "apache-2.0"),
    ],
)
@pytest.mark.parametrize("card", [R1_DISTILL_CARD, TEACHER_ONLY_CARD], ids=["mit-only", "teacher-only"])
def test_r1_distills_carry_their_base_even_when_the_card_leaves_it_out(
    repo: str, base: str, license_id: str, card: str
) -> None:
    for source in (f"hf://{repo}/model.gguf", f"hf://bartowski/{repo.split('/')[1]}-GGUF/model-Q4_K_M.gguf"):
        report = evaluate(pulled(card, source))
        assert report.license.id == "mit"
        parents = {(n.repo, n.license.id) for n in report.lineage}
        assert (base, license_id) in parents and ("deepseek-ai/DeepSeek-R1", "mit") in parents
        assert license_id in report.effective.licenses


def test_llama_terms_flow_down_to_the_llama_distills() -> None:
    summary = license_summary(pulled(R1_DISTILL_CARD, "hf://deepseek-ai/DeepSeek-R1-Distill-Llama-8B/x.gguf"))
    assert summary["commercial_use"] == "conditional"  # not "allowed", as MIT alone would say
    assert summary["mau_limit"] == 700_000_000
    report = evaluate(pulled(R1_DISTILL_CARD, "hf://deepseek-ai/DeepSeek-R1-Distill-Llama-8B/x.gguf"))
    assert report.effective.name_prefix == "Llama" and report.effective.attribution


def test_a_redistribution_that_names_the_original_walks_through_it() -> None:
    card = "---\nbase_model: deepseek-ai/DeepSeek-R1-Distill-Llama-8B\nlicense: mit\n---\n"
    report = evaluate(pulled(card, "hf://unsloth/DeepSeek-R1-Distill-Llama-8B-GGUF/x.gguf"))
    depth = {n.repo: n.depth for n in report.lineage}
    assert depth["deepseek-ai/DeepSeek-R1-Distill-Llama-8B"] == 1 and depth["meta-llama/Llama-3.1-8B"] == 2


@pytest.mark.parametrize(
    ("model", "repo", "confidence", "reason"),
    [
        (
            {"name": "m", "source": "hf://Qwen/Qwen2.5-7B-Instruct/x.gguf"},
            "Qwen/Qwen2.5-7B-Instruct",
            "high",
            "its repository id Qwen/Qwen2.5-7B-Instruct",
        ),
        (
            {"name": "m", "source": "hf://Qwen/Qwen2.5-7B-Instruct-GGUF/qwen2.5-7b-instruct-q4_k_m.gguf"},
            "Qwen/Qwen2.5-7B-Instruct",
            "medium",
            "its repository name Qwen/Qwen2.5-7B-Instruct-GGUF (a redistribution of Qwen/Qwen2.5-7B-Instruct)",
        ),
        (
            {"name": "m", "display_name": "Meta Llama 3.1 8B Instruct", "organization": "Meta Llama"},
            "meta-llama/Meta-Llama-3.1-8B-Instruct",
            "medium",
            "its model file's name 'Meta Llama 3.1 8B Instruct'",
        ),
        (
            {"name": "deepseek-r1-distill-llama-8b:q4_k_m"},
            "deepseek-ai/DeepSeek-R1-Distill-Llama-8B",
            "low",
            "its name 'deepseek-r1-distill-llama-8b:q4_k_m'",
        ),
    ],
)
def test_a_model_without_a_license_tag_is_recognised_with_confidence_and_reason(
    model: dict[str, Any], repo: str, confidence: str, reason: str
) -> None:
    report = evaluate({**model, "license": {}})
    assert report.known_model == repo
    assert report.license.source == "table" and report.license.confidence == confidence
    assert report.license.known
    (note,) = report.license.notes
    assert f"recognised as {repo} by {reason}" in note and f"confidence {confidence}" in note


def test_an_unknown_or_ambiguous_name_stays_unknown() -> None:
    for name in ("my-model:latest", "llama:latest", "chat-bot:7b"):
        report = evaluate({"name": name, "license": {}})
        assert report.license.id == "unknown" and report.known_model is None
