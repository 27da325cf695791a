"""The license catalog: every family the issue names is there, with the terms its text states, and lookups by
id, alias, link and LICENSE text find the right entry (and nothing else)."""

from __future__ import annotations

import re

import pytest

from kaiyuan.license import get_catalog, identify
from kaiyuan.license._record import identify_text

CATALOG = get_catalog()
ENTRIES = list(CATALOG.licenses.values())

# Families the catalog must carry (issue 6), by the identifier cards and GGUF files use.
REQUIRED = [
    "mit", "apache-2.0", "bsd-3-clause", "cc-by-4.0", "cc-by-sa-4.0", "cc-by-nc-4.0", "bigscience-bloom-rail-1.0",
    "creativeml-openrail-m", "bigscience-openrail-m", "llama2", "llama3", "llama3.1", "llama3.2", "llama3.3", "llama4",
    "gemma", "deepseek", "qwen", "qwen-research", "tongyi-qianwen", "glm-4", "tencent-hunyuan-community", "mrl",
    "mnpl", "falcon-llm-license", "yi-license", "baichuan2", "internlm",
]  # fmt: skip

# id: (commercial_use, mau_limit, attribution, name_prefix, territory_excluded, research_only, osi_approved,
#      flows_to_outputs) - the facts each license text states (see the catalog's url for each).
FACTS = {
    "mit": ("allowed", None, (), None, (), False, True, False),
    "apache-2.0": ("allowed", None, (), None, (), False, True, False),
    "cc-by-nc-4.0": ("forbidden", None, (), None, (), True, False, False),
    "llama2": ("conditional", 700_000_000, (), None, (), False, False, True),
    "llama3": ("conditional", 700_000_000, ("Built with Meta Llama 3",), "Llama 3", (), False, False, True),
    "llama3.1": ("conditional", 700_000_000, ("Built with Llama",), "Llama", (), False, False, True),
    "llama3.2": ("conditional", 700_000_000, ("Built with Llama",), "Llama", (), False, False, True),
    "llama3.3": ("conditional", 700_000_000, ("Built with Llama",), "Llama", (), False, False, True),
    "llama4": ("conditional", 700_000_000, ("Built with Llama",), "Llama", ("EU",), False, False, True),
    "gemma": ("allowed", None, (), None, (), False, False, True),
    "qwen": ("conditional", 100_000_000, ("Built with Qwen",), None, (), False, False, True),
    "qwen-research": ("forbidden", None, ("Built with Qwen",), None, (), True, False, True),
    "tongyi-qianwen": ("conditional", 100_000_000, (), None, (), False, False, True),
    "glm-4": ("conditional", None, (), "glm-4", (), False, False, True),
    "tencent-hunyuan-community": (
        "conditional",
        100_000_000,
        (),
        None,
        ("EU", "GB", "KR"),
        False,
        False,
        True,
    ),
    "mrl": ("forbidden", None, (), None, (), True, False, True),
    "mnpl": ("forbidden", None, (), None, (), True, False, True),
    "baichuan2": ("conditional", 1_000_000, (), None, (), False, False, False),
}


def test_every_required_family_is_in_the_catalog() -> None:
    missing = [lid for lid in REQUIRED if lid not in CATALOG.licenses]
    assert missing == []


@pytest.mark.parametrize("entry", ENTRIES, ids=lambda e: e.id)
def test_entry_is_well_formed(entry) -> None:  # type: ignore[no-untyped-def]
    assert entry.url.startswith("https://"), "each entry names the text its terms were read from"
    assert entry.spdx and (re.fullmatch(r"[A-Za-z0-9.+-]+", entry.spdx))
    assert entry.terms.osi_approved or entry.spdx.startswith(("LicenseRef-", "CC"))
    if entry.terms.research_only:
        assert entry.terms.commercial_use == "forbidden"
    if entry.terms.mau_limit is not None:
        assert entry.terms.commercial_use == "conditional"
    if entry.terms.share_alike:
        assert entry.terms.flows_to_derivatives
    for policy in filter(None, [entry.terms.use_policy]):
        assert policy.startswith("https://")
    for territory in entry.terms.territory_excluded:
        assert territory == "EU" or re.fullmatch(r"[A-Z]{2}", territory)


@pytest.mark.parametrize("entry", ENTRIES, ids=lambda e: e.id)
def test_entry_is_found_by_id_spdx_name_and_aliases(entry) -> None:  # type: ignore[no-untyped-def]
    for key in (entry.id, entry.id.upper(), entry.spdx, entry.name, *entry.aliases):
        assert CATALOG.get(key) is entry, key


@pytest.mark.parametrize("entry", [e for e in ENTRIES if e.fingerprints], ids=lambda e: e.id)
def test_fingerprint_phrases_identify_their_license(entry) -> None:  # type: ignore[no-untyped-def]
    text = (
        "Some preamble.\n\n" + "\n\n".join(p.upper() for p in entry.fingerprints) + "\n\nMore terms follow."
    )
    record = identify_text(text)
    assert record.id == entry.id
    assert record.confidence == ("high" if len(entry.fingerprints) >= 2 else "medium")


@pytest.mark.parametrize("entry", [e for e in ENTRIES if e.links], ids=lambda e: e.id)
def test_first_link_identifies_its_license(entry) -> None:  # type: ignore[no-untyped-def]
    link = "https://" + entry.links[0].lstrip("/")
    assert identify("other", None, link, source="card").id == entry.id


@pytest.mark.parametrize("lid", sorted(FACTS))
def test_terms_match_the_license_text(lid: str) -> None:
    t = CATALOG.licenses[lid].terms
    got = (
        t.commercial_use,
        t.mau_limit,
        t.attribution,
        t.name_prefix,
        t.territory_excluded,
        t.research_only,
        t.osi_approved,
        t.flows_to_outputs,
    )
    assert got == FACTS[lid]


def test_notices_are_the_licensors_exact_text() -> None:
    assert CATALOG.licenses["llama3.1"].terms.notice == (
        "Llama 3.1 is licensed under the Llama 3.1 Community License, Copyright © Meta Platforms, Inc. "
        "All Rights Reserved."
    )
    assert CATALOG.licenses["gemma"].terms.notice.startswith("Gemma is provided under and subject to")
    assert (
        "Tencent Hunyuan Community License Agreement"
        in CATALOG.licenses["tencent-hunyuan-community"].terms.notice
    )


@pytest.mark.parametrize(
    ("repo", "license_id"),
    [
        ("meta-llama/Llama-3.1-8B", "llama3.1"),
        ("meta-llama/llama-3.1-8b-instruct", "llama3.1"),
        ("https://huggingface.co/meta-llama/Llama-3.2-3B-Instruct", "llama3.2"),
        ("meta-llama/Llama-3.3-70B-Instruct", "llama3.3"),
        ("Qwen/Qwen2.5-Math-7B", "apache-2.0"),
        ("Qwen/Qwen2.5-3B-Instruct", "qwen-research"),
        ("Qwen/Qwen2.5-Coder-3B", "qwen-research"),
        ("Qwen/Qwen2.5-72B-Instruct", "qwen"),
        ("Qwen/Qwen3-8B", "apache-2.0"),
        ("deepseek-ai/DeepSeek-R1", "mit"),
        ("deepseek-ai/DeepSeek-R1-Distill-Qwen-7B", "mit"),
        ("deepseek-ai/DeepSeek-V2-Lite", "deepseek"),
        ("mistralai/Mistral-7B-Instruct-v0.3", "apache-2.0"),
        ("mistralai/Mistral-Nemo-Instruct-2407", "apache-2.0"),
        ("mistralai/Mistral-Small-24B-Instruct-2501", "apache-2.0"),
        ("mistralai/Ministral-8B-Instruct-2410", "mrl"),
        ("mistralai/Codestral-22B-v0.1", "mnpl"),
        ("google/gemma-2-9b-it", "gemma"),
        ("google/gemma-3-4b-it", "gemma"),
        ("THUDM/glm-4-9b-chat", "glm-4"),
        ("THUDM/GLM-4-9B-0414", "mit"),
        ("tencent/Hunyuan-A13B-Instruct", "tencent-hunyuan-community"),
        ("baidu/ERNIE-4.5-0.3B-PT", "apache-2.0"),
        ("HuggingFaceTB/SmolLM2-135M-Instruct", "apache-2.0"),
        ("microsoft/Phi-3-mini-4k-instruct", "mit"),
        ("microsoft/phi-4", "mit"),
        ("tiiuae/Falcon3-7B-Instruct", "falcon-llm-license"),
        ("01-ai/Yi-1.5-9B-Chat", "apache-2.0"),
        ("internlm/internlm2_5-7b-chat", "internlm"),
        ("baichuan-inc/Baichuan2-7B-Chat", "baichuan2"),
        ("https://modelscope.cn/models/Qwen/Qwen2.5-7B-Instruct", "apache-2.0"),
    ],
)
def test_well_known_base_models_resolve_offline(repo: str, license_id: str) -> None:
    entry = CATALOG.base_model(repo)
    assert entry is not None
    assert entry.license == license_id


def test_a_repo_not_in_the_table_is_not_guessed() -> None:
    assert CATALOG.base_model("someone/Llama-3.1-8B-my-finetune") is None
    assert CATALOG.base_model("https://example.com/meta-llama/Llama-3.1-8B") is None
    assert CATALOG.base_model_by_name("Llama") is None


def test_gguf_display_names_find_table_entries() -> None:
    entry = CATALOG.base_model_by_name("Qwen2.5 Math 7B", "Qwen")
    assert entry is not None and entry.repo == "Qwen/Qwen2.5-Math-7B"


def test_table_parents_are_in_the_table_too() -> None:
    for entry in CATALOG.base_models.values():
        for parent in entry.base_models:
            assert CATALOG.base_model(parent.repo) is not None, f"{entry.repo} -> {parent.repo}"
