"""Identifying a license from what a model declares: an id, a name and a link, or a LICENSE text.

Owns ``LicenseRecord`` (which license, where it was found, how sure we are) and the rules that turn raw values
(``general.license`` / ``license``, ``general.license.name`` / ``license_name``, ``general.license.link`` /
``license_link``) into a catalog entry. Unknown stays unknown: a value no rule recognises gives ``id="unknown"``
with the raw values kept for the user to read, never a guess.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from kaiyuan.license._catalog import Catalog, LicenseEntry, Terms, get_catalog

__all__ = ["Confidence", "LicenseRecord", "identify", "identify_text", "record_from_value"]

Confidence = Literal["high", "medium", "low", "none"]

# Identifiers that say "look elsewhere" rather than naming a license.
_PLACEHOLDERS = {
    "",
    "other",
    "unknown",
    "custom",
    "proprietary",
    "see license",
    "license",
    "noassertion",
    "none",
}


@dataclass
class LicenseRecord:
    """One model's license as identified: the catalog entry (or None), where it came from and how sure we are."""

    id: str  # catalog id, or "unknown"
    name: str  # catalog name, or the raw name/id declared
    spdx: str | None
    url: str | None  # the declared link, else the catalog's text URL
    source: str  # gguf | card | license_file | manifest | table | store | none
    confidence: Confidence
    entry: LicenseEntry | None = None
    declared: dict[str, str] = field(default_factory=dict)  # raw {id, name, link} as found
    notes: list[str] = field(default_factory=list)

    @property
    def known(self) -> bool:
        return self.entry is not None

    @property
    def terms(self) -> Terms:
        return self.entry.terms if self.entry else Terms.unknown()

    @classmethod
    def unknown(
        cls, source: str = "none", declared: dict[str, str] | None = None, note: str = ""
    ) -> LicenseRecord:
        declared = {k: v for k, v in (declared or {}).items() if v}
        raw_name = declared.get("name") or declared.get("id") or ""
        return cls(
            id="unknown",
            name=raw_name,
            spdx=None,
            url=declared.get("link"),
            source=source if declared else "none",
            confidence="none",
            declared=declared,
            notes=[note] if note else [],
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "spdx": self.spdx,
            "name": self.name,
            "url": self.url,
            "source": self.source,
            "confidence": self.confidence,
            "declared": dict(self.declared),
            "notes": list(self.notes),
        }


def _from_entry(
    entry: LicenseEntry, source: str, confidence: Confidence, declared: dict[str, str], link: str | None
) -> LicenseRecord:
    return LicenseRecord(
        id=entry.id,
        name=entry.name,
        spdx=entry.spdx,
        url=link or entry.url,
        source=source,
        confidence=confidence,
        entry=entry,
        declared=declared,
    )


def identify(
    license_id: str | None,
    name: str | None = None,
    link: str | None = None,
    *,
    source: str,
    catalog: Catalog | None = None,
) -> LicenseRecord:
    """The license named by an id / name / link triple as model cards and GGUF files write it.

    An exact catalog id gives confidence "high"; a name or alias "high" too when the id was a placeholder
    ("other"); a link pattern alone "medium". Values that disagree (id says Apache, link points at the Llama
    license) lower the confidence to "low" and are reported in ``notes``.
    """
    catalog = catalog or get_catalog()
    declared = {
        k: v.strip()
        for k, v in (("id", license_id), ("name", name), ("link", link))
        if isinstance(v, str) and v.strip()
    }
    raw_id = declared.get("id", "")
    by_id = None if raw_id.lower() in _PLACEHOLDERS else catalog.get(raw_id)
    by_name = catalog.get(declared["name"]) if "name" in declared else None
    by_link = catalog.by_link(declared["link"]) if "link" in declared else None

    chosen = by_id or by_name or by_link
    if chosen is None:
        note = ""
        if declared:
            note = f"declared license {declared} is not in kaiyuan's catalog: treated as unknown"
        return LicenseRecord.unknown(source, declared, note)
    confidence: Confidence = "high" if (by_id or by_name) else "medium"
    record = _from_entry(chosen, source, confidence, declared, declared.get("link"))
    others = {e.id for e in (by_id, by_name, by_link) if e is not None}
    if len(others) > 1:
        record.confidence = "low"
        record.notes.append(
            f"declared values disagree ({', '.join(sorted(others))}); using {chosen.id} - check the model's license text"
        )
    return record


def identify_text(
    text: str, *, source: str = "license_file", catalog: Catalog | None = None
) -> LicenseRecord:
    """The license whose fingerprint phrases occur in a LICENSE text (two or more phrases: "high")."""
    catalog = catalog or get_catalog()
    matches = catalog.fingerprint(text)
    if not matches:
        return LicenseRecord.unknown(source, None, "license text matches no fingerprint in kaiyuan's catalog")
    entry, count = matches[0]
    record = _from_entry(entry, source, "high" if count >= 2 else "medium", {}, None)
    return record


def record_from_value(value: Any, *, source: str, catalog: Catalog | None = None) -> LicenseRecord:
    """A record from a manifest's ``license`` value: a string id, or a dict in GGUF or normalised key style."""
    if isinstance(value, LicenseRecord):
        return value
    if isinstance(value, str):
        return identify(value, source=source, catalog=catalog)
    if isinstance(value, dict):
        lid = value.get("id", value.get("general.license", value.get("license")))
        name = value.get("name", value.get("general.license.name", value.get("license_name")))
        link = value.get(
            "link", value.get("url", value.get("general.license.link", value.get("license_link")))
        )
        where = value.get("source") if isinstance(value.get("source"), str) else source
        return identify(
            lid if isinstance(lid, str) else None,
            name if isinstance(name, str) else None,
            link if isinstance(link, str) else None,
            source=where or source,
            catalog=catalog,
        )
    return LicenseRecord.unknown(source)
