"""Openness grading: the LF AI & Data Model Openness Framework (MOF) class and the OSI OSAID verdict.

Owns the component sets of MOF classes III / II / I (MOF 1.0, the Model Openness Tool's class definitions) and the
rules kaiyuan applies with what it can know offline: the weights' license, the effective terms inherited from
ancestors, a model card, and the components the base-model table records as openly released. A component that
is not known to be released openly counts as missing: the grade is a floor, never a guess.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from kaiyuan.license._catalog import get_catalog
from kaiyuan.license._effective import EffectiveTerms
from kaiyuan.license._record import LicenseRecord

__all__ = ["MOF_COMPONENTS", "Openness", "grade_openness"]

# MOF 1.0 components (names as in the Model Openness Tool), keyed by kaiyuan's snake_case ids.
MOF_COMPONENTS: dict[str, str] = {
    "model_architecture": "Model architecture",
    "data_preprocessing_code": "Data preprocessing code",
    "training_code": "Training code",
    "inference_code": "Inference code",
    "evaluation_code": "Evaluation code",
    "supporting_libraries": "Supporting libraries and tools",
    "model_parameters_final": "Model parameters (Final)",
    "model_parameters_intermediate": "Model parameters (Intermediate)",
    "datasets": "Datasets",
    "evaluation_data": "Evaluation data",
    "model_metadata": "Model metadata",
    "sample_model_outputs": "Sample model outputs",
    "model_card": "Model card",
    "data_card": "Data card",
    "technical_report": "Technical report",
    "research_paper": "Research paper",
    "evaluation_results": "Evaluation results",
}

# Class III needs a technical report OR a research paper; the tuples below list alternatives.
_CLASS_III: tuple[tuple[str, ...], ...] = (
    ("model_architecture",),
    ("model_parameters_final",),
    ("technical_report", "research_paper"),
    ("evaluation_results",),
    ("model_card",),
    ("data_card",),
)
_CLASS_II = (
    *_CLASS_III,
    ("training_code",),
    ("inference_code",),
    ("evaluation_code",),
    ("evaluation_data",),
    ("supporting_libraries",),
)
_CLASS_I = (
    ("model_architecture",),
    ("data_preprocessing_code",),
    ("training_code",),
    ("inference_code",),
    ("evaluation_code",),
    ("supporting_libraries",),
    ("model_parameters_final",),
    ("model_parameters_intermediate",),
    ("datasets",),
    ("evaluation_data",),
    ("sample_model_outputs",),
    ("model_card",),
    ("data_card",),
    ("research_paper",),
    ("evaluation_results",),
)
# Licenses the MOF accepts for model parameters besides OSI-approved ones (open data / content licenses).
_OPEN_NON_OSI = frozenset({"cc-by-4.0", "cc0-1.0", "cc-by-sa-4.0"})

Verdict = Literal["pass", "fail", "unknown"]


@dataclass
class Openness:
    """How open a model is: MOF class (None when not even Class III is met) and OSAID verdict, with reasons."""

    mof_class: str | None
    osaid: Verdict
    reasons: list[str] = field(default_factory=list)
    components: list[str] = field(default_factory=list)  # components known to be released openly

    def to_json(self) -> dict[str, Any]:
        return {
            "mof_class": self.mof_class,
            "osaid": self.osaid,
            "reasons": list(self.reasons),
            "components": list(self.components),
        }


def _missing(requirements: Iterable[tuple[str, ...]], have: set[str]) -> list[str]:
    return [" or ".join(MOF_COMPONENTS[c] for c in alts) for alts in requirements if not set(alts) & have]


def _osi_ids(licenses: Iterable[str]) -> set[str]:
    """The ids among ``licenses`` that are OSI-approved (looked up in the catalog)."""
    catalog = get_catalog()
    return {lid for lid in licenses if (e := catalog.get(lid)) is not None and e.terms.osi_approved}


def _weights_open(record: LicenseRecord) -> bool:
    return record.known and (record.terms.osi_approved or record.id in _OPEN_NON_OSI)


def grade_openness(
    record: LicenseRecord,
    effective: EffectiveTerms,
    *,
    components: Iterable[str] = (),
    has_card: bool = False,
) -> Openness:
    """Grade a model from its own license, its effective terms and the components known to be open."""
    if not record.known:
        return Openness(
            None, "unknown", ["the weights' license is unknown, so no openness class can be given"]
        )
    reasons: list[str] = []
    have: set[str] = set()
    closed = sorted(set(effective.licenses) - {"unknown"} - _osi_ids(effective.licenses) - _OPEN_NON_OSI)
    if not _weights_open(record):
        reasons.append(f"the weights' license ({record.id}) is not an open license in the MOF's sense")
    elif closed or effective.unknown:
        reasons.append(
            "the model inherits terms that are not open ("
            + ", ".join(closed + [f"unknown: {u}" for u in effective.unknown])
            + "), so its weights cannot be released under an open license"
        )
    else:
        have.add("model_parameters_final")
        have.update(c for c in components if c in MOF_COMPONENTS)
        if has_card:
            have.add("model_card")

    mof_class: str | None = None
    for label, requirements in (("I", _CLASS_I), ("II", _CLASS_II), ("III", _CLASS_III)):
        if not _missing(requirements, have):
            mof_class = label
            break
    if mof_class is None:
        reasons.append(
            "MOF Class III needs, not known to be openly released: " + ", ".join(_missing(_CLASS_III, have))
        )
    elif mof_class == "I":
        reasons.append("MOF Class I: every component is known to be openly released")
    else:
        target = _CLASS_II if mof_class == "III" else _CLASS_I
        reasons.append(
            f"MOF Class {mof_class}; the next class needs, not known to be openly released: "
            + ", ".join(_missing(target, have))
        )

    osaid: Verdict
    closed_osi = sorted(set(effective.licenses) - {"unknown"} - _osi_ids(effective.licenses))
    if not record.terms.osi_approved:
        osaid = "fail"
        reasons.append(f"OSAID: the weights' license ({record.id}) is not OSI-approved")
    elif closed_osi:
        osaid = "fail"
        reasons.append(
            "OSAID: the model inherits terms that are not OSI-approved (" + ", ".join(closed_osi) + ")"
        )
    elif effective.unknown:
        osaid = "unknown"
        reasons.append("OSAID: an ancestor's license is unknown (" + ", ".join(effective.unknown) + ")")
    elif {"training_code", "data_preprocessing_code"} <= have and ({"datasets", "data_card"} & have):
        osaid = "pass"
        reasons.append("OSAID: weights under OSI-approved terms; training code and data information released")
    else:
        osaid = "unknown"
        reasons.append(
            "OSAID: weights are under OSI-approved terms, but the training code and data information are not known "
            "to be released"
        )
    return Openness(mof_class, osaid, reasons, sorted(have))
