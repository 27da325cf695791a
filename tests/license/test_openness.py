"""Openness grades: MOF class from components known to be open, OSAID verdict, each with reasons."""

from __future__ import annotations

from kaiyuan.license import evaluate
from kaiyuan.license._catalog import get_catalog
from kaiyuan.license._effective import Contribution, combine
from kaiyuan.license._openness import grade_openness
from kaiyuan.license._record import identify

CLASS_III = ["model_architecture", "technical_report", "evaluation_results", "model_card", "data_card"]
CLASS_II_EXTRA = [
    "training_code",
    "inference_code",
    "evaluation_code",
    "evaluation_data",
    "supporting_libraries",
]
CLASS_I_EXTRA = ["data_preprocessing_code", "model_parameters_intermediate", "datasets", "sample_model_outputs",
                 "research_paper"]  # fmt: skip


def grade(license_id: str, components: list[str]):  # type: ignore[no-untyped-def]
    record = identify(license_id, source="manifest")
    return grade_openness(record, combine([Contribution("m", record)]), components=components)


def test_component_sets_give_each_class() -> None:
    assert grade("apache-2.0", CLASS_III).mof_class == "III"
    assert grade("apache-2.0", CLASS_III + CLASS_II_EXTRA).mof_class == "II"
    assert grade("apache-2.0", CLASS_III + CLASS_II_EXTRA + CLASS_I_EXTRA).mof_class == "I"
    partial = grade("apache-2.0", CLASS_III[:-1])
    assert partial.mof_class is None
    assert any("Data card" in r for r in partial.reasons)


def test_class_iii_accepts_a_research_paper_instead_of_a_technical_report() -> None:
    components = [c if c != "technical_report" else "research_paper" for c in CLASS_III]
    assert grade("mit", components).mof_class == "III"


def test_restrictive_weights_get_no_class_and_fail_osaid() -> None:
    result = grade("llama3.1", CLASS_III + CLASS_II_EXTRA + CLASS_I_EXTRA)
    assert result.mof_class is None
    assert result.osaid == "fail"
    assert any("llama3.1" in r for r in result.reasons)


def test_osaid_needs_training_code_and_data_information() -> None:
    assert grade("apache-2.0", []).osaid == "unknown"
    assert grade("apache-2.0", ["training_code", "data_preprocessing_code", "datasets"]).osaid == "pass"
    assert grade("cc-by-4.0", ["training_code", "data_preprocessing_code", "datasets"]).osaid == "fail"


def test_smollm2_from_the_table_is_class_ii_and_passes_osaid() -> None:
    report = evaluate(
        {
            "name": "smollm2",
            "license": {"id": "apache-2.0"},
            "repo_url": "HuggingFaceTB/SmolLM2-135M-Instruct",
        }
    )
    assert report.known_model == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert report.openness.mof_class == "II"
    assert report.openness.osaid == "pass"


def test_open_license_on_a_closed_base_is_not_open() -> None:
    report = evaluate(
        {
            "name": "tune",
            "license": {"id": "apache-2.0"},
            "lineage": {"base_models": [{"repo_url": "google/gemma-2-2b"}]},
        }
    )
    assert report.openness.mof_class is None
    assert report.openness.osaid == "fail"
    assert "gemma" in " ".join(report.openness.reasons)


def test_every_table_component_name_is_a_mof_component() -> None:
    from kaiyuan.license._openness import MOF_COMPONENTS

    for entry in get_catalog().base_models.values():
        assert set(entry.open_components) <= set(MOF_COMPONENTS), entry.repo
