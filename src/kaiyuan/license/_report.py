"""The license report of one model, and the entry points the rest of kaiyuan calls.

Owns ``evaluate`` (license + terms + lineage + effective terms + openness [+ policy decision] in the documented,
stable JSON schema), ``license_summary`` (the short form for /v1/models and ``kaiyuan list/show``),
``derive_terms`` and ``derivative`` (what a model kaiyuan creates inherits) and ``enforce_policy`` (raise
LicenseDenied, or log in warn mode). Models are manifest-shaped dicts, so the store, the server, tune and export
all speak to it the same way.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from kaiyuan.errors import LicenseDenied
from kaiyuan.license._catalog import Catalog, LicenseEntry, Terms, get_catalog
from kaiyuan.license._detect import license_record_of
from kaiyuan.license._effective import Contribution, EffectiveTerms, combine
from kaiyuan.license._lineage import LineageNode, Resolver, recognise_model, resolve_lineage
from kaiyuan.license._openness import Openness, grade_openness
from kaiyuan.license._policy import ACTIONS, PolicyDecision, decide, parse_policy
from kaiyuan.license._record import LicenseRecord, identify

__all__ = [
    "REPORT_SCHEMA",
    "LicenseReport",
    "derivative",
    "derive_terms",
    "enforce_policy",
    "evaluate",
    "governing_license",
    "license_entries",
    "license_summary",
]

log = logging.getLogger("kaiyuan.license")

REPORT_SCHEMA = "kaiyuan.license.report/1"
_COMMERCIAL_RANK = {"allowed": 0, "conditional": 1, "unknown": 2, "forbidden": 3}


@dataclass
class LicenseReport:
    """Everything kaiyuan knows about one model's license; ``to_json()`` is the stable, documented schema."""

    model: str
    license: LicenseRecord
    terms: Terms
    lineage: list[LineageNode]
    effective: EffectiveTerms
    openness: Openness
    relation: str | None = None
    datasets: list[str] = field(default_factory=list)
    policy: PolicyDecision | None = None
    catalog_version: str = ""
    known_model: str | None = None  # the repository of kaiyuan's well-known model table this model matched

    @property
    def allowed(self) -> bool:
        return self.policy is None or self.policy.allowed

    def to_json(self) -> dict[str, Any]:
        license_json = self.license.to_json()
        return {
            "schema": REPORT_SCHEMA,
            "catalog_version": self.catalog_version,
            "model": self.model,
            "known_model": self.known_model,
            "license": license_json,
            "terms": self.terms.to_json(),
            "lineage": [node.to_json() for node in self.lineage],
            "relation": self.relation,
            "datasets": list(self.datasets),
            "effective": self.effective.to_json(),
            "openness": self.openness.to_json(),
            "policy": self.policy.to_json() if self.policy else None,
        }


def license_entries(report: LicenseReport) -> list[LicenseEntry]:
    """The catalog entries of every license that takes part in the report's effective terms."""
    catalog = get_catalog()
    return [catalog.licenses[lid] for lid in report.effective.licenses if lid in catalog.licenses]


def _strictest(entries: list[LicenseEntry]) -> LicenseEntry | None:
    def strictness(e: LicenseEntry) -> tuple[int, bool, bool, bool]:
        t = e.terms
        return (
            _COMMERCIAL_RANK[t.commercial_use],
            t.research_only,
            t.flows_to_derivatives,
            bool(t.name_prefix),
        )

    return max(entries, key=strictness) if entries else None


def governing_license(report: LicenseReport) -> LicenseEntry | None:
    """The license a release should declare: the model's own when it has one, else the strictest inherited one.

    None when the model's license (or every inherited one) is unknown.
    """
    if report.license.known and report.license.source != "inherited":
        return report.license.entry
    return _strictest(license_entries(report))


def _inherits(model: dict[str, Any]) -> bool:
    """A model kaiyuan derived declares ``license = {"inherited": true}``: its terms are its parents'."""
    value = model.get("license")
    return isinstance(value, dict) and value.get("inherited") is True


def _declared_conflicts(record: LicenseRecord, nodes: list[LineageNode], eff: EffectiveTerms) -> None:
    """Flag a model whose declared license is looser than what its ancestors impose (e.g. a Llama fine-tune
    labelled apache-2.0): the declaration does not lift inherited terms."""
    if not record.known:
        return
    own = record.terms
    stricter = []
    for node in nodes:
        if node.relation == "distilled" and not node.license.terms.flows_to_outputs:
            continue
        theirs = node.license.terms
        if node.license.id == record.id or not node.license.known:
            continue
        if theirs.flows_to_derivatives and (
            _COMMERCIAL_RANK[theirs.commercial_use] > _COMMERCIAL_RANK[own.commercial_use]
            or (theirs.research_only and not own.research_only)
            or (theirs.name_prefix and theirs.name_prefix != own.name_prefix)
            or (theirs.use_policy and not own.use_policy)
            or set(theirs.territory_excluded) - set(own.territory_excluded)
        ):
            stricter.append(f"{node.name} ({node.license.id})")
    if stricter:
        eff.conflicts.append(
            {
                "kind": "declared_license",
                "blocking": False,
                "licenses": sorted({record.id, *(s.rsplit("(", 1)[1].rstrip(")") for s in stricter)}),
                "message": f"the model declares {record.id}, but its ancestors' terms flow down and still apply: "
                + ", ".join(stricter),
            }
        )


def _sources(contributions: list[Contribution]) -> dict[str, list[str]]:
    result: dict[str, list[str]] = {}
    for c in contributions:
        names = result.setdefault(c.record.id, [])
        if c.label not in names:
            names.append(c.label)
    return result


def evaluate(
    model: dict[str, Any],
    policy: dict[str, Any] | None = None,
    *,
    action: str = "check",
    resolver: Resolver | None = None,
    catalog: Catalog | None = None,
) -> LicenseReport:
    """The full license report of a manifest-shaped model dict, judged against ``policy`` when one is given.

    ``resolver`` (optional) maps a parent reference {name, organization, repo_url, version} to the manifest of a
    model in the store; parents it does not know are looked up in the catalog's table of well-known base models.
    Raises ConfigError for a malformed policy; never raises for an unknown license (that is a result).
    """
    if action not in ACTIONS:
        raise ValueError(f"action must be one of {ACTIONS}, got {action!r}")
    catalog = catalog or get_catalog()
    name = str(model.get("name") or "model")
    known = recognise_model(model, catalog)
    own_table = known.entry if known else None
    nodes = resolve_lineage(model, catalog=catalog, resolver=resolver)
    raw_lineage = model.get("lineage")
    lineage: dict[str, Any] = raw_lineage if isinstance(raw_lineage, dict) else {}
    relation = lineage.get("relation") if isinstance(lineage.get("relation"), str) else None
    if relation is None and nodes:
        relation = nodes[0].relation
    datasets = [d for d in lineage.get("datasets") or [] if isinstance(d, str)]

    contributions: list[Contribution] = []
    if _inherits(model):
        record = LicenseRecord.unknown("inherited")  # replaced below by the strictest inherited license
    else:
        record = license_record_of(model)
        if not record.known and known is not None:
            record = identify(known.entry.license, source="table", catalog=catalog)
            record.confidence = known.confidence
            record.notes.append(
                f"no license declared; recognised as {known.entry.repo} by {known.reason} "
                f"(kaiyuan's table of well-known models, confidence {known.confidence})"
            )
        contributions.append(
            Contribution(name, record, "self", 0, own_table.territory_excluded if own_table else ())
        )
        text = model.get("license_text")
        if (
            isinstance(text, dict)
            and text.get("id")
            and text["id"] != record.id
            and record.source != "license_file"
        ):
            text_record = identify(text["id"], source="license_file", catalog=catalog)
            if text_record.known:
                contributions.append(Contribution("LICENSE file", text_record, "declared", 0))
    contributions += [
        Contribution(n.name, n.license, n.relation, n.depth, n.territory_excluded) for n in nodes
    ]
    merge = relation == "merge" or sum(1 for n in nodes if n.depth == 1 and n.relation == "merge") > 1
    eff = combine(contributions, merge=merge)
    if _inherits(model):
        strictest = _strictest([catalog.licenses[lid] for lid in eff.licenses if lid in catalog.licenses])
        if strictest is not None:
            record = identify(strictest.id, source="inherited", catalog=catalog)
            record.confidence = "low" if eff.unknown else "high"
        record.source = "inherited"
        record.notes.append(
            "kaiyuan created this model: it carries the strictest license inherited from its parents"
        )
    else:
        _declared_conflicts(record, nodes, eff)

    components = own_table.open_components if own_table else ()
    openness = grade_openness(record, eff, components=components, has_card=bool(model.get("card")))
    report = LicenseReport(
        model=name,
        license=record,
        terms=record.terms,
        lineage=nodes,
        effective=eff,
        openness=openness,
        relation=relation,
        datasets=datasets,
        catalog_version=catalog.version,
        known_model=own_table.repo if own_table else None,
    )
    if policy is not None:
        parsed = parse_policy(policy, catalog)
        report.policy = decide(parsed, eff, action=action, model_name=name, sources=_sources(contributions))
    return report


def license_summary(model: dict[str, Any], *, resolver: Resolver | None = None) -> dict[str, Any]:
    """The short license facts for a model listing (/v1/models ``license`` object, ``kaiyuan list/show``).

    ``commercial_use``, ``mau_limit``, ``territory_excluded`` and ``research_only`` are the *effective* values
    (own license plus everything inherited).
    """
    report = evaluate(model, resolver=resolver)
    eff = report.effective
    return {
        "id": report.license.id,
        "spdx": report.license.spdx,
        "name": report.license.name,
        "url": report.license.url,
        "source": report.license.source,
        "confidence": report.license.confidence,
        "commercial_use": eff.commercial_use,
        "mau_limit": eff.mau_limit,
        "research_only": eff.research_only,
        "territory_excluded": list(eff.territory_excluded),
        "attribution": list(eff.attribution),
        "name_prefix": eff.name_prefix,
        "inherited": [lid for lid in eff.licenses if lid != report.license.id],
        "unknown": bool(eff.unknown),
        "conflicts": len(eff.conflicts),
        "openness": {"mof_class": report.openness.mof_class, "osaid": report.openness.osaid},
    }


def derivative(
    name: str,
    parents: list[dict[str, Any]],
    relation: str,
    *,
    datasets: list[str] | None = None,
) -> dict[str, Any]:
    """The manifest-shaped dict of a model kaiyuan is about to create (adapter, merge, quantization ...).

    Its license is ``{"inherited": true, "id": <governing license>, ...}``: it adds no terms of its own and carries
    everything that flows down from ``parents`` (store manifests or references {name, repo_url, license}); ``id``
    names the license a release declares (the strictest inherited one), for listings. Pass it to ``enforce_policy``
    before the work starts and to the release-bundle writers afterwards.
    """
    bases = []
    for parent in parents:
        ref = dict(parent)
        ref.setdefault("relation", relation)
        if ref.get("license") is None:
            ref.pop("license", None)
        bases.append(ref)
    model: dict[str, Any] = {
        "name": name,
        "license": {"inherited": True, "source": "inherited"},
        "lineage": {"relation": relation, "base_models": bases, "datasets": list(datasets or [])},
    }
    governing = governing_license(evaluate(model))
    model["license"].update(
        {"id": governing.id, "name": governing.name, "link": governing.url}
        if governing
        else {"id": "unknown"}
    )
    return model


def derive_terms(
    parents: list[dict[str, Any]],
    relation: str,
    *,
    resolver: Resolver | None = None,
) -> EffectiveTerms:
    """The effective terms of a model made from ``parents`` by ``relation``: the strictest of everything that flows
    down wins; for a merge, the parents' disagreements and incompatibilities are in ``conflicts``."""
    return evaluate(derivative("derivative", parents, relation), resolver=resolver).effective


def enforce_policy(
    model: dict[str, Any],
    policy: dict[str, Any] | None,
    action: str,
    *,
    resolver: Resolver | None = None,
) -> PolicyDecision:
    """Judge ``model`` for ``action`` (import | pull | serve | tune | export) against the raw ``[policy]`` table.

    Raises LicenseDenied(message, reasons=[...]) when the policy forbids it; in ``mode = "warn"`` logs the reasons
    as warnings instead and returns the decision. Raises ConfigError for a malformed policy.
    """
    report = evaluate(model, policy or {}, action=action, resolver=resolver)
    decision = report.policy
    assert decision is not None
    if decision.allowed:
        return decision
    if decision.mode == "warn":
        for reason in decision.reasons:
            log.warning("license policy (warn mode) for %s %s: %s", action, report.model, reason)
        return decision
    raise LicenseDenied(
        f"license policy forbids {action} of {report.model} "
        f"(license {report.license.id}); change [policy] in kaiyuan.toml or choose another model",
        reasons=list(decision.reasons),
    )
