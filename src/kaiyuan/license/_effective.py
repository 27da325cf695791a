"""Effective terms: a model's own license combined with everything that flows down from its ancestors.

Owns the combination rule (the strictest value of each term wins; phrases, notices and policies accumulate) and
the detection of conflicts: requirements that cannot all be met (two naming rules, a share-alike license next to
another license that binds derivatives) and disagreements between merged parents. It sees license records and
relations, not files, manifests or policies.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kaiyuan.license._catalog import CommercialUse, Terms
from kaiyuan.license._record import LicenseRecord

__all__ = ["Contribution", "EffectiveTerms", "combine"]

_COMMERCIAL_RANK: dict[str, int] = {"allowed": 0, "conditional": 1, "unknown": 2, "forbidden": 3}


@dataclass
class Contribution:
    """One license that takes part in the effective terms: the model's own, an ancestor's, or a LICENSE text's."""

    label: str  # model name / repo, or "LICENSE file"
    record: LicenseRecord
    relation: str = "self"  # self | finetune | adapter | merge | quantized | distilled | declared
    depth: int = 0  # 0 = the model itself
    territory_extra: tuple[str, ...] = ()  # exclusions recorded for this model only


@dataclass
class EffectiveTerms:
    """The terms a model is effectively under, with the conflicts found while combining them."""

    commercial_use: CommercialUse = "allowed"
    mau_limit: int | None = None
    attribution: list[str] = field(default_factory=list)
    name_prefix: str | None = None
    notice_required: bool = False
    notices: list[str] = field(default_factory=list)
    use_policy: list[str] = field(default_factory=list)
    territory_excluded: list[str] = field(default_factory=list)
    research_only: bool = False
    flows_to_derivatives: bool = False
    flows_to_outputs: bool = False
    osi_approved: bool = True
    share_alike: bool = False
    conditions: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # uncertainty notes of every license that takes part
    licenses: list[str] = field(default_factory=list)  # ids of every license that takes part
    unknown: list[str] = field(default_factory=list)  # labels of the models whose license is unknown
    conflicts: list[dict[str, Any]] = field(default_factory=list)
    not_inherited: list[str] = field(
        default_factory=list
    )  # ancestors whose license does not reach this model

    @property
    def has_blocking_conflict(self) -> bool:
        return any(c.get("blocking") for c in self.conflicts)

    def to_json(self) -> dict[str, Any]:
        return {
            "commercial_use": self.commercial_use,
            "mau_limit": self.mau_limit,
            "attribution": list(self.attribution),
            "name_prefix": self.name_prefix,
            "notice_required": self.notice_required,
            "notices": list(self.notices),
            "use_policy": list(self.use_policy),
            "territory_excluded": list(self.territory_excluded),
            "research_only": self.research_only,
            "flows_to_derivatives": self.flows_to_derivatives,
            "flows_to_outputs": self.flows_to_outputs,
            "osi_approved": self.osi_approved,
            "share_alike": self.share_alike,
            "conditions": list(self.conditions),
            "notes": list(self.notes),
            "licenses": list(self.licenses),
            "unknown": list(self.unknown),
            "not_inherited": list(self.not_inherited),
            "conflicts": [dict(c) for c in self.conflicts],
        }


def _add(items: list[str], value: str | None) -> None:
    if value and value not in items:
        items.append(value)


def _applies(c: Contribution) -> bool:
    """Whether a contribution's terms reach the model: a teacher reaches a student only if its license says so."""
    if c.relation == "distilled":
        return c.record.terms.flows_to_outputs
    return True


def combine(contributions: list[Contribution], *, merge: bool = False) -> EffectiveTerms:
    """The strictest-wins combination of ``contributions``; ``merge`` compares the direct parents' terms too."""
    eff = EffectiveTerms()
    applied: list[Contribution] = []
    for c in contributions:
        if not _applies(c):
            eff.not_inherited.append(
                f"{c.label} ({c.record.id}): its license does not reach models trained on its outputs"
            )
            continue
        applied.append(c)
        terms: Terms = c.record.terms
        if not c.record.known:
            _add(eff.unknown, c.label)
        _add(eff.licenses, c.record.id)
        if _COMMERCIAL_RANK[terms.commercial_use] > _COMMERCIAL_RANK[eff.commercial_use]:
            eff.commercial_use = terms.commercial_use
        if terms.mau_limit is not None:
            eff.mau_limit = terms.mau_limit if eff.mau_limit is None else min(eff.mau_limit, terms.mau_limit)
        for phrase in terms.attribution:
            _add(eff.attribution, phrase)
        eff.notice_required = eff.notice_required or terms.notice_required
        _add(eff.notices, terms.notice)
        _add(eff.use_policy, terms.use_policy)
        for territory in (*terms.territory_excluded, *c.territory_extra):
            _add(eff.territory_excluded, territory)
        eff.research_only = eff.research_only or terms.research_only
        eff.flows_to_derivatives = eff.flows_to_derivatives or terms.flows_to_derivatives
        eff.flows_to_outputs = eff.flows_to_outputs or terms.flows_to_outputs
        eff.osi_approved = eff.osi_approved and terms.osi_approved and c.record.known
        eff.share_alike = eff.share_alike or terms.share_alike
        for condition in terms.conditions:
            _add(eff.conditions, f"[{c.record.id}] {condition}")
        for note in terms.notes:
            _add(eff.notes, f"[{c.record.id}] {note}")
    eff.territory_excluded.sort()
    if not applied:
        eff.osi_approved = False
    eff.name_prefix = _name_prefix(applied, eff)
    _share_alike_conflicts(applied, eff)
    if merge:
        _merge_disagreements([c for c in applied if c.depth == 1], eff)
    return eff


def _name_prefix(applied: list[Contribution], eff: EffectiveTerms) -> str | None:
    """The naming rule to follow: the longest prefix when they nest ("Llama 3" satisfies "Llama"), else a conflict."""
    prefixes: dict[str, str] = {}
    for c in applied:
        prefix = c.record.terms.name_prefix
        if prefix:
            prefixes.setdefault(prefix, c.record.id)
    if not prefixes:
        return None
    ordered = sorted(prefixes, key=len, reverse=True)
    longest = ordered[0]
    clashing = [p for p in ordered[1:] if not longest.lower().startswith(p.lower())]
    if clashing:
        eff.conflicts.append(
            {
                "kind": "name_prefix",
                "blocking": True,
                "licenses": sorted({prefixes[p] for p in (longest, *clashing)}),
                "message": "naming rules cannot all be met: a distributed derivative's name must begin with each of "
                + ", ".join(f'"{p}" ({prefixes[p]})' for p in (longest, *clashing)),
            }
        )
    return longest


def _share_alike_conflicts(applied: list[Contribution], eff: EffectiveTerms) -> None:
    share_alike = {c.record.id for c in applied if c.record.terms.share_alike}
    if not share_alike:
        return
    others = sorted(
        {
            c.record.id
            for c in applied
            if c.record.id not in share_alike and (c.record.terms.flows_to_derivatives or not c.record.known)
        }
    )
    if len(share_alike) > 1 or others:
        eff.conflicts.append(
            {
                "kind": "share_alike",
                "blocking": True,
                "licenses": sorted(share_alike | set(others)),
                "message": f"{', '.join(sorted(share_alike))} requires derivatives under the same license, but "
                f"{', '.join(sorted((share_alike - {min(share_alike)}) | set(others)))} imposes its own terms on them",
            }
        )


def _merge_disagreements(parents: list[Contribution], eff: EffectiveTerms) -> None:
    """Report where merged parents disagree; the strictest value was taken, the user should know why."""
    if len(parents) < 2:
        return
    checks: list[tuple[str, Any]] = [
        ("commercial_use", lambda t: t.commercial_use),
        ("research_only", lambda t: t.research_only),
        ("mau_limit", lambda t: t.mau_limit),
        ("territory_excluded", lambda t: tuple(sorted(t.territory_excluded))),
        ("flows_to_outputs", lambda t: t.flows_to_outputs),
    ]
    for term, get in checks:
        values = {c.label: get(c.record.terms) for c in parents}
        if len({repr(v) for v in values.values()}) > 1:
            chosen = getattr(eff, term)
            eff.conflicts.append(
                {
                    "kind": "merge_disagreement",
                    "blocking": False,
                    "term": term,
                    "values": {label: list(v) if isinstance(v, tuple) else v for label, v in values.items()},
                    "resolution": list(chosen) if isinstance(chosen, list) else chosen,
                    "message": f"merged parents disagree on {term}; the strictest value applies to the merge",
                }
            )
    binding = sorted({c.record.id for c in parents if c.record.terms.flows_to_derivatives and c.record.known})
    if len(binding) > 1:
        eff.conflicts.append(
            {
                "kind": "multiple_licenses",
                "blocking": False,
                "licenses": binding,
                "message": "the merge is bound by every one of "
                + ", ".join(binding)
                + "; each must be honoured (copies of each agreement, each use policy, each notice)",
            }
        )
