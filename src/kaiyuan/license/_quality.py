"""Release quality against the policy: a quantization or conversion whose measured cost passes ``[policy]``'s
``max_kl``, ``max_ppl_ratio`` or ``min_top1`` fails the release.

Owns judging figures recorded by ``kaiyuan eval`` (records of kind ``against`` on a store model: the model
measured against its source; an ``export`` record describes another file and is judged when that file is
exported) and
the one-line reason naming the measured figure and the threshold. A model kaiyuan made by converting or
quantizing, with no measurement on record, fails when a threshold is set: unmeasured is not read as good enough.
It reads records; it never measures (that is ``kaiyuan.eval``'s) and raises nothing.
"""

from __future__ import annotations

from typing import Any

from kaiyuan.license._policy import Policy

__all__ = ["MEASURED_RELATIONS", "quality_reasons", "record_reasons"]

MEASURED_RELATIONS = (
    "converted",
    "quantized",
)  # lineage relations whose cost a threshold asks to see measured


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _table(record: dict[str, Any], key: str) -> dict[str, Any]:
    value = record.get(key)
    return value if isinstance(value, dict) else {}


def record_reasons(policy: Policy, record: dict[str, Any], *, what: str) -> list[str]:
    """Why one measurement fails the policy's thresholds (empty when it passes). ``what`` names what was
    measured against what, e.g. "smollm2:q4_0 against smollm2:f32"."""
    kl = _number((record.get("kl") or {}).get("mean")) if isinstance(record.get("kl"), dict) else None
    ratio = _number(record.get("ppl_ratio"))
    top1 = _number(record.get("top1_agreement"))
    reasons = []
    if policy.max_kl is not None and kl is not None and kl > policy.max_kl:
        reasons.append(f"{what}: mean KL {kl:.4f} is above the policy's max_kl = {policy.max_kl:g}")
    if policy.max_ppl_ratio is not None and ratio is not None and ratio > policy.max_ppl_ratio:
        reasons.append(
            f"{what}: PPL ratio {ratio:.4f} is above the policy's max_ppl_ratio = {policy.max_ppl_ratio:g}"
        )
    if policy.min_top1 is not None and top1 is not None and top1 < policy.min_top1:
        reasons.append(
            f"{what}: top-1 agreement {top1:.4f} is below the policy's min_top1 = {policy.min_top1:g}"
        )
    return reasons


def quality_reasons(policy: Policy, model: dict[str, Any]) -> list[str]:
    """Why a store model (manifest dict) fails the policy's quality thresholds: each recorded measurement
    against a reference that passes a threshold, or no measurement at all for a model kaiyuan converted or
    quantized."""
    if not policy.thresholds:
        return []
    name = str(model.get("name", "the model"))
    evals = [r for r in model.get("evals") or [] if isinstance(r, dict)]
    reasons: list[str] = []
    measured = False
    for record in evals:
        against = _table(record, "against")
        if record.get("kind") == "against":
            measured = True
            reasons += record_reasons(policy, record, what=f"{name} against {against.get('name', '?')}")
    lineage = _table(model, "lineage")
    if not measured and lineage.get("relation") in MEASURED_RELATIONS:
        sources = [b.get("name") for b in lineage.get("base_models") or [] if isinstance(b, dict)]
        source = next((s for s in sources if isinstance(s, str) and s), "SOURCE")
        reasons.append(
            f"{name} was {lineage['relation']} from {source} but its cost was never measured, and the policy sets "
            f"a quality threshold: run kaiyuan eval {name} --against {source}"
        )
    return reasons
