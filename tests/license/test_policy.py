"""The [policy] table: parsing, every check, unknown handling, warn mode, and the derivative rules."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from kaiyuan.errors import ConfigError, LicenseDenied
from kaiyuan.license import derivative, enforce_policy, evaluate


def model(license_id: str | None, *bases: str, name: str = "m") -> dict[str, Any]:
    return {
        "name": name,
        "license": {"id": license_id, "source": "gguf"},
        "lineage": {
            "relation": "finetune" if bases else None,
            "base_models": [{"repo_url": f"https://huggingface.co/{b}"} for b in bases],
        },
    }


def reasons(m: dict[str, Any], policy: dict[str, Any], action: str = "serve") -> list[str]:
    decision = evaluate(m, policy, action=action).policy
    assert decision is not None
    return decision.reasons


def test_empty_policy_allows_everything_even_unknown() -> None:
    assert reasons(model(None), {}) == []
    enforce_policy(model("cc-by-nc-4.0"), {}, "serve")
    enforce_policy(model(None), None, "import")


@pytest.mark.parametrize(
    ("policy", "message"),
    [
        ({"alow": ["mit"]}, "unknown key"),
        ({"allow": ["not-a-license"]}, "unknown license id"),
        ({"deny": ["unknown"]}, "allow_unknown"),
        ({"commercial": "yes"}, "true or false"),
        ({"mau": -1}, "whole number"),
        ({"mau": True}, "whole number"),
        ({"territory": "Germany"}, "two-letter"),
        ({"mode": "audit"}, "enforce"),
        ({"allow": 3}, "list of strings"),
    ],
)
def test_malformed_policy_is_a_config_error(policy: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        enforce_policy(model("mit"), policy, "serve")


def test_deny_reaches_ancestors() -> None:
    got = reasons(model("apache-2.0", "meta-llama/Llama-3.1-8B", name="tune"), {"deny": ["llama3.1"]})
    assert got == ["license llama3.1 (from meta-llama/Llama-3.1-8B) is denied by the policy"]


def test_allow_list_accepts_aliases_and_checks_every_license() -> None:
    assert reasons(model("mit"), {"allow": ["MIT", "Apache 2.0"]}) == []
    got = reasons(model("mit", "Qwen/Qwen2.5-72B"), {"allow": ["mit", "apache-2.0"]})
    assert len(got) == 1 and "qwen" in got[0] and "allow list" in got[0]


def test_commercial_use_denies_non_commercial_and_research_only() -> None:
    assert reasons(model("apache-2.0"), {"commercial": True}) == []
    assert reasons(model("llama3.1"), {"commercial": True}) == []  # conditional: allowed with obligations
    for lid in ("cc-by-nc-4.0", "mrl", "mnpl", "qwen-research"):
        got = reasons(model(lid), {"commercial": True})
        assert len(got) == 1 and f"by {lid}" in got[0]
    assert reasons(model("apache-2.0", "Qwen/Qwen2.5-3B"), {"commercial": True})  # inherited research license


@pytest.mark.parametrize(
    ("territory", "denied"),
    [("DE", True), ("de", True), ("FR", True), ("EU", True), ("GB", True), ("UK", True), ("KR", True),
     ("US", False), ("CN", False), (["US", "KR"], True), (["US", "SG"], False)],
)  # fmt: skip
def test_territory_against_hunyuan(territory: Any, denied: bool) -> None:
    got = reasons(model("tencent-hunyuan-community"), {"territory": territory})
    assert bool(got) is denied
    if denied:
        assert "does not apply in" in got[0]


def test_llama4_excludes_eu_members() -> None:
    assert reasons(model("llama4"), {"territory": "IT"})
    assert not reasons(model("llama3.3"), {"territory": "IT"})


def test_mau_over_the_license_limit_is_denied() -> None:
    assert reasons(model("llama3.1"), {"mau": 5_000_000}) == []
    got = reasons(model("qwen"), {"mau": 150_000_000})
    assert got and "100,000,000" in got[0]
    assert reasons(model("baichuan2"), {"mau": 2_000_000})


def test_unknown_license_denied_only_when_the_policy_asks() -> None:
    unknown = model(None, name="mystery")
    assert reasons(unknown, {"mode": "enforce"}) == []  # nothing asked
    assert reasons(unknown, {"allow_unknown": False})[0].startswith("license unknown for mystery")
    assert reasons(unknown, {"commercial": True})[0].startswith("license unknown")
    assert reasons(unknown, {"commercial": True, "allow_unknown": True}) == []
    assert reasons(unknown, {"allow": ["mit"], "allow_unknown": True}) == []


def test_unknown_ancestor_is_unknown_too() -> None:
    m = {
        "name": "tune",
        "license": {"id": "mit"},
        "lineage": {"relation": "finetune", "base_models": [{"name": "Mystery 7B"}]},
    }
    assert "Mystery 7B" in reasons(m, {"territory": "DE"})[0]


def test_enforce_raises_license_denied_with_reasons() -> None:
    with pytest.raises(LicenseDenied) as info:
        enforce_policy(model("cc-by-nc-4.0", name="nc:latest"), {"commercial": True}, "import")
    assert "nc:latest" in info.value.message and "import" in info.value.message
    assert info.value.reasons == [
        "commercial use is not permitted by cc-by-nc-4.0 (the policy sets commercial = true)"
    ]
    assert info.value.http_status == 403


def test_warn_mode_logs_instead_of_raising(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="kaiyuan.license"):
        decision = enforce_policy(model("cc-by-nc-4.0"), {"commercial": True, "mode": "warn"}, "serve")
    assert decision.allowed is False and decision.mode == "warn"
    assert any("commercial use is not permitted" in r.message for r in caplog.records)


def test_export_requires_the_naming_rule() -> None:
    parents = [{"repo_url": "https://huggingface.co/meta-llama/Llama-3.1-8B-Instruct"}]
    bad = derivative("support-bot:latest", parents, "adapter")
    got = reasons(bad, {"commercial": True}, action="export")
    assert len(got) == 1 and '"Llama"' in got[0] and "Llama-support-bot" in got[0]
    good = derivative("llama-support-bot:latest", parents, "adapter")
    assert reasons(good, {"commercial": True}, action="export") == []
    assert reasons(bad, {"commercial": True}, action="tune") == []  # naming matters when distributing


def test_tune_refuses_a_derivative_with_a_blocking_conflict() -> None:
    parents = [
        {"repo_url": "https://huggingface.co/meta-llama/Llama-3.1-8B"},
        {"repo_url": "https://huggingface.co/THUDM/glm-4-9b"},
    ]
    merged = derivative("llama-glm-merge", parents, "merge")
    got = reasons(merged, {"commercial": True}, action="tune")
    assert any("naming rules cannot all be met" in r for r in got)
    with pytest.raises(LicenseDenied):
        enforce_policy(merged, {"commercial": True}, "tune")


def test_obligations_are_listed_even_when_allowed() -> None:
    decision = evaluate(model("llama3.1"), {"commercial": True}).policy
    assert decision is not None and decision.allowed
    assert 'display "Built with Llama"' in decision.obligations


def test_unknown_action_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="action"):
        enforce_policy(model("mit"), {}, "sell")
