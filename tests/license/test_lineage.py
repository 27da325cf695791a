"""Lineage and effective terms: what flows down from ancestors, the strictest wins, conflicts are reported."""

from __future__ import annotations

from typing import Any

from kaiyuan.license import derivative, derive_terms, evaluate, license_summary


def base(repo: str, **extra: Any) -> dict[str, Any]:
    return {"name": repo.split("/")[-1], "repo_url": f"https://huggingface.co/{repo}", **extra}


def test_adapter_of_llama_31_keeps_attribution_naming_rule_and_use_policy() -> None:
    eff = derive_terms([base("meta-llama/Llama-3.1-8B-Instruct")], "adapter")
    assert eff.attribution == ["Built with Llama"]
    assert eff.name_prefix == "Llama"
    assert eff.use_policy == ["https://www.llama.com/llama3_1/use-policy/"]
    assert eff.mau_limit == 700_000_000
    assert eff.commercial_use == "conditional"
    assert any("Llama 3.1 is licensed under" in n for n in eff.notices)
    assert eff.conflicts == []


def test_merge_of_apache_and_cc_by_nc_is_non_commercial_with_the_disagreement_reported() -> None:
    parents = [
        {"name": "apache-model", "license": {"id": "apache-2.0"}},
        {"name": "nc-model", "license": {"id": "cc-by-nc-4.0"}},
    ]
    eff = derive_terms(parents, "merge")
    assert eff.commercial_use == "forbidden"
    assert eff.research_only is True
    assert eff.osi_approved is False
    disagreements = {c["term"]: c for c in eff.conflicts if c["kind"] == "merge_disagreement"}
    assert disagreements["commercial_use"]["values"] == {"apache-model": "allowed", "nc-model": "forbidden"}
    assert disagreements["commercial_use"]["resolution"] == "forbidden"
    assert not any(c["blocking"] for c in eff.conflicts)


def test_r1_distill_on_qwen_math_inherits_apache_and_mit() -> None:
    report = evaluate(
        {
            "name": "r1-distill",
            "license": {"id": "mit"},
            "repo_url": "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B",
        }
    )
    assert [(n.name, n.relation, n.license.id) for n in report.lineage] == [
        ("Qwen/Qwen2.5-Math-7B", "finetune", "apache-2.0"),
        ("deepseek-ai/DeepSeek-R1", "distilled", "mit"),
    ]
    assert report.effective.licenses == ["mit", "apache-2.0"]
    assert report.effective.commercial_use == "allowed"
    assert report.effective.osi_approved is True


def test_fine_tune_of_an_r1_distill_walks_up_to_qwen_math() -> None:
    eff = derive_terms([base("deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B")], "finetune")
    assert eff.licenses == ["mit", "apache-2.0"]


def test_r1_distill_on_llama_inherits_the_llama_license() -> None:
    eff = derive_terms([base("deepseek-ai/DeepSeek-R1-Distill-Llama-8B")], "adapter")
    assert "llama3.1" in eff.licenses
    assert eff.name_prefix == "Llama"


def test_hunyuan_derivative_keeps_the_territory_exclusion() -> None:
    eff = derive_terms([base("tencent/Hunyuan-7B-Instruct")], "finetune")
    assert eff.territory_excluded == ["EU", "GB", "KR"]
    quantized = derive_terms(
        [{"name": "hy", "license": {"id": "other", "name": "tencent-hunyuan-community"}}], "quantized"
    )
    assert quantized.territory_excluded == ["EU", "GB", "KR"]


def test_llama_32_vision_excludes_the_eu_but_text_models_do_not() -> None:
    assert derive_terms([base("meta-llama/Llama-3.2-11B-Vision-Instruct")], "adapter").territory_excluded == [
        "EU"
    ]
    assert derive_terms([base("meta-llama/Llama-3.2-3B-Instruct")], "adapter").territory_excluded == []


def test_unknown_base_stays_unknown_and_counts_in_the_effective_terms() -> None:
    report = evaluate(
        {
            "name": "mystery-tune",
            "license": {"id": "apache-2.0"},
            "lineage": {
                "relation": "finetune",
                "base_models": [{"name": "Secret Base 7B", "organization": "Nobody"}],
            },
        }
    )
    assert report.lineage[0].license.id == "unknown"
    assert report.lineage[0].source == "none"
    assert report.effective.unknown == ["Secret Base 7B"]
    assert report.effective.commercial_use == "unknown"
    assert report.effective.osi_approved is False


def test_declared_license_looser_than_the_base_is_flagged_and_does_not_lift_inherited_terms() -> None:
    report = evaluate(
        {
            "name": "cool-llama-tune",
            "license": {"id": "apache-2.0"},
            "lineage": {"relation": "finetune", "base_models": [base("meta-llama/Llama-3.1-8B")]},
        }
    )
    kinds = [c["kind"] for c in report.effective.conflicts]
    assert kinds == ["declared_license"]
    assert report.effective.name_prefix == "Llama"
    assert report.effective.commercial_use == "conditional"
    assert report.openness.osaid == "fail"


def test_merge_with_two_naming_rules_is_a_blocking_conflict() -> None:
    eff = derive_terms([base("meta-llama/Llama-3.1-8B"), base("THUDM/glm-4-9b")], "merge")
    blocking = [c for c in eff.conflicts if c["blocking"]]
    assert [c["kind"] for c in blocking] == ["name_prefix"]
    assert blocking[0]["licenses"] == ["glm-4", "llama3.1"]
    assert any(c["kind"] == "multiple_licenses" for c in eff.conflicts)


def test_nested_naming_rules_are_compatible() -> None:
    eff = derive_terms([base("meta-llama/Meta-Llama-3-8B"), base("meta-llama/Llama-3.1-8B")], "merge")
    assert eff.name_prefix == "Llama 3"  # "Llama 3 ..." begins with "Llama" too
    assert not any(c["kind"] == "name_prefix" for c in eff.conflicts)


def test_share_alike_next_to_a_binding_license_is_a_blocking_conflict() -> None:
    eff = derive_terms(
        [{"name": "wiki-model", "license": "cc-by-sa-4.0"}, base("google/gemma-2-2b")], "merge"
    )
    assert [c["kind"] for c in eff.conflicts if c["blocking"]] == ["share_alike"]
    permissive = derive_terms(
        [{"name": "a", "license": "cc-by-sa-4.0"}, {"name": "b", "license": "mit"}], "merge"
    )
    assert [c for c in permissive.conflicts if c["kind"] == "share_alike"] == []  # MIT may be relicensed


def test_teacher_license_reaches_a_student_only_when_it_flows_to_outputs() -> None:
    student = {
        "name": "student",
        "license": {"id": "apache-2.0"},
        "lineage": {
            "relation": "distilled",
            "base_models": [
                {"name": "gemma-teacher", "license": "gemma", "relation": "distilled"},
                {"name": "mit-teacher", "license": "mit", "relation": "distilled"},
            ],
        },
    }
    eff = evaluate(student).effective
    assert "gemma" in eff.licenses  # Gemma's terms reach models trained on its outputs
    assert "mit" not in eff.licenses
    assert eff.not_inherited and "mit-teacher" in eff.not_inherited[0]


def test_store_resolver_supplies_parents_the_table_does_not_know() -> None:
    stored = {
        "my-base:latest": {
            "name": "my-base:latest",
            "license": {"id": "cc-by-nc-4.0", "source": "gguf"},
            "lineage": {"relation": "finetune", "base_models": [base("Qwen/Qwen2.5-7B")]},
        }
    }
    report = evaluate(
        derivative("my-adapter", [{"name": "my-base:latest"}], "adapter"),
        resolver=lambda ref: stored.get(str(ref.get("name"))),
    )
    assert [(n.name, n.source, n.license.id) for n in report.lineage] == [
        ("my-base:latest", "store", "cc-by-nc-4.0"),
        ("Qwen/Qwen2.5-7B", "table", "apache-2.0"),
    ]
    assert report.license.id == "cc-by-nc-4.0" and report.license.source == "inherited"
    assert report.effective.commercial_use == "forbidden"


def test_license_summary_reports_effective_values() -> None:
    summary = license_summary(
        {
            "name": "x",
            "license": {"general.license": "apache-2.0"},
            "lineage": {"base_models": [base("Qwen/Qwen2.5-72B")]},
        }
    )
    assert summary["id"] == "apache-2.0"
    assert summary["spdx"] == "Apache-2.0"
    assert summary["commercial_use"] == "conditional"  # inherited from the Qwen license (100M MAU)
    assert summary["mau_limit"] == 100_000_000
    assert summary["inherited"] == ["qwen"]
    assert summary["openness"] == {"mof_class": None, "osaid": "fail"}


def test_report_json_has_the_documented_top_level_schema() -> None:
    data = evaluate(derivative("d", [base("meta-llama/Llama-3.1-8B")], "adapter")).to_json()
    assert data["schema"] == "kaiyuan.license.report/1"
    assert set(data["license"]) >= {"id", "spdx", "name", "url", "source", "confidence"}
    assert set(data["terms"]) >= {
        "commercial_use", "mau_limit", "attribution", "name_prefix", "notice_required", "use_policy",
        "territory_excluded", "research_only", "flows_to_derivatives", "flows_to_outputs", "osi_approved",
    }  # fmt: skip
    assert set(data["lineage"][0]) >= {"name", "relation", "license"}
    assert set(data["effective"]) >= set(data["terms"]) - {"notice"} | {"conflicts"}
    assert set(data["openness"]) >= {"mof_class", "osaid", "reasons"}
