"""CycloneDX 1.6 ML-BOM for a model: the model component with its modelCard, licenses and pedigree (ancestors).

Owns the JSON shape (CycloneDX 1.6, https://cyclonedx.org/docs/1.6/json/): a ``machine-learning-model``
component per model and ancestor, ``data`` components for the training datasets referenced from the model card,
licenses as SPDX ids where they exist and as name + URL otherwise, and kaiyuan's effective terms as
``kaiyuan:license:*`` properties. Plain dicts and the standard library; the test-only cyclonedx-python-lib
validates the output against the official schema.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import uuid
from pathlib import Path
from typing import Any

from kaiyuan.license._catalog import get_catalog
from kaiyuan.license._lineage import LineageNode
from kaiyuan.license._record import LicenseRecord
from kaiyuan.license._report import LicenseReport, evaluate, governing_license

__all__ = ["cyclonedx_bom", "write_cyclonedx_bom"]

# SPDX ids CycloneDX's schema enumerates (spdx.schema.json) among those kaiyuan's catalog uses.
_SPDX_IN_SCHEMA = frozenset(
    {"MIT", "Apache-2.0", "BSD-2-Clause", "BSD-3-Clause", "CC0-1.0", "CC-BY-4.0", "CC-BY-SA-4.0", "CC-BY-NC-4.0",
     "CC-BY-NC-SA-4.0"}
)  # fmt: skip


def _licenses(record: LicenseRecord) -> list[dict[str, Any]]:
    if record.known and record.spdx in _SPDX_IN_SCHEMA:
        return [{"license": {"id": record.spdx, "acknowledgement": "declared"}}]
    if record.known:
        lic: dict[str, Any] = {"name": record.name, "acknowledgement": "declared"}
        if record.url and record.url.startswith(("http://", "https://")):
            lic["url"] = record.url
        return [{"license": lic}]
    raw = record.declared.get("name") or record.declared.get("id") or "unknown"
    return [{"license": {"name": f"unknown ({raw})" if raw != "unknown" else "unknown"}}]


def _hub_url(repo: str | None) -> str | None:
    return f"https://huggingface.co/{repo}" if repo else None


class _Refs:
    """bom-ref values must be unique in a BOM: an ancestor reached twice gets its ref only the first time."""

    def __init__(self) -> None:
        self.used: set[str] = set()

    def take(self, kind: str, name: str) -> str | None:
        ref = f"{kind}:{name}"
        if ref in self.used:
            return None
        self.used.add(ref)
        return ref


def _ancestor(
    node: LineageNode, children: dict[str, list[LineageNode]], refs: _Refs, depth: int
) -> dict[str, Any]:
    name = node.repo or node.name
    component: dict[str, Any] = {"type": "machine-learning-model", "name": name}
    ref = refs.take("model", name)
    if ref:
        component["bom-ref"] = ref
    component["licenses"] = _licenses(node.license)
    url = _hub_url(node.repo)
    if url:
        component["externalReferences"] = [{"type": "distribution", "url": url}]
    component["properties"] = [
        {"name": "kaiyuan:lineage:relation", "value": node.relation},
        {"name": "kaiyuan:lineage:license_source", "value": node.source},
    ]
    grand = children.get(node.name, [])
    if grand and depth < 16:
        component["pedigree"] = {"ancestors": [_ancestor(g, children, refs, depth + 1) for g in grand]}
    return component


def _properties(report: LicenseReport) -> list[dict[str, str]]:
    eff = report.effective
    props = [
        ("kaiyuan:license:id", report.license.id),
        ("kaiyuan:license:source", report.license.source),
        ("kaiyuan:license:confidence", report.license.confidence),
        ("kaiyuan:license:commercial_use", eff.commercial_use),
        ("kaiyuan:license:research_only", str(eff.research_only).lower()),
        ("kaiyuan:license:osi_approved", str(eff.osi_approved).lower()),
        ("kaiyuan:openness:mof_class", report.openness.mof_class or "none"),
        ("kaiyuan:openness:osaid", report.openness.osaid),
        ("kaiyuan:catalog_version", report.catalog_version),
    ]
    if eff.mau_limit is not None:
        props.append(("kaiyuan:license:mau_limit", str(eff.mau_limit)))
    if eff.name_prefix:
        props.append(("kaiyuan:license:name_prefix", eff.name_prefix))
    props += [("kaiyuan:license:attribution", phrase) for phrase in eff.attribution]
    props += [("kaiyuan:license:use_policy", url) for url in eff.use_policy]
    props += [("kaiyuan:license:territory_excluded", t) for t in eff.territory_excluded]
    props += [("kaiyuan:license:inherited", lid) for lid in eff.licenses if lid != report.license.id]
    props += [("kaiyuan:license:conflict", c["message"]) for c in eff.conflicts]
    return [{"name": k, "value": v} for k, v in props if v]


def cyclonedx_bom(
    model: dict[str, Any] | LicenseReport,
    *,
    version: str | None = None,
    sha256: str | None = None,
    description: str = "",
    serial: uuid.UUID | None = None,
    timestamp: _dt.datetime | None = None,
) -> dict[str, Any]:
    """The CycloneDX 1.6 BOM (a JSON-ready dict) of a model and its lineage."""
    from kaiyuan import __version__

    report = model if isinstance(model, LicenseReport) else evaluate(model)
    refs = _Refs()
    model_ref = refs.take("model", report.model) or f"model:{report.model}"
    components: list[dict[str, Any]] = []
    dataset_refs = []
    for dataset in report.datasets:
        ref = refs.take("dataset", dataset)
        if ref is None:
            continue
        dataset_refs.append({"ref": ref})
        component: dict[str, Any] = {
            "type": "data",
            "bom-ref": ref,
            "name": dataset,
            "data": [{"type": "dataset", "name": dataset}],
        }
        if "/" in dataset and "://" not in dataset:
            component["externalReferences"] = [
                {"type": "distribution", "url": f"https://huggingface.co/datasets/{dataset}"}
            ]
        components.append(component)

    license_record = report.license
    governing = governing_license(report) if license_record.source == "inherited" else None
    main: dict[str, Any] = {"type": "machine-learning-model", "bom-ref": model_ref, "name": report.model}
    if version:
        main["version"] = version
    if description:
        main["description"] = description
    if governing is not None:
        main["licenses"] = _licenses(
            LicenseRecord(
                governing.id, governing.name, governing.spdx, governing.url, "inherited", "high", governing
            )
        )
    else:
        main["licenses"] = _licenses(license_record)
    if sha256:
        main["hashes"] = [
            {"alg": "SHA-256", "content": sha256.lower().removeprefix("sha256-").removeprefix("sha256:")}
        ]
    model_card: dict[str, Any] = {"bom-ref": f"{model_ref}#modelCard"}
    parameters: dict[str, Any] = {}
    if dataset_refs:
        parameters["datasets"] = dataset_refs
    if parameters:
        model_card["modelParameters"] = parameters
    model_card["considerations"] = (
        {"ethicalConsiderations": [{"name": f"use policy: {url}"} for url in report.effective.use_policy]}
        if report.effective.use_policy
        else {}
    )
    if not model_card["considerations"]:
        del model_card["considerations"]
    model_card["properties"] = [
        {"name": "kaiyuan:openness:reason", "value": reason} for reason in report.openness.reasons
    ]
    main["modelCard"] = model_card
    children: dict[str, list[LineageNode]] = {}
    for node in report.lineage:
        children.setdefault(node.child, []).append(node)
    direct = [n for n in report.lineage if n.depth == 1]
    if direct:
        main["pedigree"] = {"ancestors": [_ancestor(n, children, refs, 1) for n in direct]}
    main["properties"] = _properties(report)

    stamp = (timestamp or _dt.datetime.now(_dt.UTC)).replace(microsecond=0)
    bom: dict[str, Any] = {
        "bomFormat": "CycloneDX",
        "specVersion": "1.6",
        "serialNumber": f"urn:uuid:{serial or uuid.uuid4()}",
        "version": 1,
        "metadata": {
            "timestamp": stamp.isoformat().replace("+00:00", "Z"),
            "tools": {"components": [{"type": "application", "name": "kaiyuan", "version": __version__}]},
            "component": main,
            "properties": [{"name": "kaiyuan:license_catalog", "value": get_catalog().version}],
        },
        "components": components,
    }
    return bom


def write_cyclonedx_bom(
    path: str | os.PathLike[str],
    model: dict[str, Any] | LicenseReport,
    *,
    version: str | None = None,
    sha256: str | None = None,
    description: str = "",
) -> Path:
    """Write the CycloneDX 1.6 ML-BOM JSON (into a folder as ``bom.cdx.json``, or to the given file)."""
    target = Path(path)
    if target.is_dir():
        target = target / "bom.cdx.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    bom = cyclonedx_bom(model, version=version, sha256=sha256, description=description)
    target.write_text(json.dumps(bom, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return target
