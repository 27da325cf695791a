"""The license catalog: license families and their terms, and the table of well-known base models.

Owns loading ``data/licenses.toml`` and ``data/base_models.toml`` and answering "which license is this?" for an
identifier, a name, a link or a LICENSE text, and "which license does this base model have?" for a repository id.
It knows nothing of GGUF files, model cards, policies or reports; it never guesses: no match is ``None``.
"""

from __future__ import annotations

import functools
import re
import tomllib
import urllib.parse
from dataclasses import dataclass, field, fields
from importlib import resources
from typing import Any, Literal

from kaiyuan.errors import ConfigError

__all__ = [
    "BaseModelEntry",
    "Catalog",
    "CommercialUse",
    "LicenseEntry",
    "Terms",
    "get_catalog",
    "normalise_repo",
]

CommercialUse = Literal["allowed", "conditional", "forbidden", "unknown"]
_COMMERCIAL_VALUES = ("allowed", "conditional", "forbidden", "unknown")

# Hosts whose model URLs look like https://host/<org>/<name> (Hugging Face) or https://host/models/<org>/<name>.
_GENERIC_FAMILIES = frozenset({"permissive", "creative-commons", "public-domain"})
_HUB_HOSTS = ("huggingface.co", "hf.co", "modelscope.cn", "www.modelscope.cn", "hf-mirror.com")


@dataclass(frozen=True)
class Terms:
    """What a license lets you do, machine-readable. ``unknown()`` is the record of a license nobody could identify."""

    commercial_use: CommercialUse = "unknown"
    mau_limit: int | None = None  # monthly active users above which a separate license is needed
    attribution: tuple[str, ...] = ()  # exact phrases that must be displayed
    name_prefix: str | None = None  # a distributed derivative's name must begin with this
    notice_required: bool = False  # a notice / copy of the license must accompany redistribution
    notice: str | None = None  # the notice text to reproduce, where the license gives one
    use_policy: str | None = None  # URL of the acceptable-use policy the license incorporates
    territory_excluded: tuple[str, ...] = ()  # ISO 3166 alpha-2 codes, or "EU", where nothing is granted
    research_only: bool = False  # only research / non-commercial / non-production use is granted
    flows_to_derivatives: bool = False  # restrictions bind fine-tunes, adapters, merges, quantizations
    flows_to_outputs: bool = False  # restrictions reach models trained on the outputs
    osi_approved: bool = False  # an OSI-approved open-source license
    share_alike: bool = False  # derivatives must carry the same license
    conditions: tuple[str, ...] = ()  # other conditions, in words
    notes: tuple[str, ...] = ()  # uncertainty notes: where the conservative value was chosen

    @classmethod
    def unknown(cls) -> Terms:
        """Terms of an unidentified license: nothing is assumed granted, every flag is the cautious one."""
        return cls(
            commercial_use="unknown",
            flows_to_derivatives=True,
            flows_to_outputs=True,
            notes=("License not identified: nothing is assumed to be granted.",),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "commercial_use": self.commercial_use,
            "mau_limit": self.mau_limit,
            "attribution": list(self.attribution),
            "name_prefix": self.name_prefix,
            "notice_required": self.notice_required,
            "notice": self.notice,
            "use_policy": self.use_policy,
            "territory_excluded": list(self.territory_excluded),
            "research_only": self.research_only,
            "flows_to_derivatives": self.flows_to_derivatives,
            "flows_to_outputs": self.flows_to_outputs,
            "osi_approved": self.osi_approved,
            "share_alike": self.share_alike,
            "conditions": list(self.conditions),
            "notes": list(self.notes),
        }


@dataclass(frozen=True)
class LicenseEntry:
    """One license family of the catalog."""

    id: str  # the identifier cards and GGUF files carry, lower case (e.g. "llama3.1")
    spdx: str  # SPDX id, or LicenseRef-<id> where SPDX has none
    name: str  # full name
    family: str  # e.g. "llama", "qwen", "permissive"
    url: str  # where the text the terms were read from is published
    terms: Terms
    aliases: tuple[str, ...] = ()
    links: tuple[str, ...] = ()
    fingerprints: tuple[str, ...] = ()


@dataclass(frozen=True)
class BaseParent:
    """A parent of a base-model table entry."""

    repo: str
    relation: str = "finetune"


@dataclass(frozen=True)
class BaseModelEntry:
    """One repository of the well-known base model table."""

    repo: str  # canonical spelling, e.g. "meta-llama/Llama-3.1-8B"
    license: str  # catalog license id
    base_models: tuple[BaseParent, ...] = ()
    territory_excluded: tuple[str, ...] = ()  # extra exclusions for these models only
    open_components: tuple[str, ...] = ()  # Model Openness Framework components released openly
    note: str | None = None
    source: str | None = None


def _squash(text: str) -> str:
    """Lower case with runs of whitespace collapsed: how fingerprints and names are compared."""
    return " ".join(text.lower().split())


def _key(text: str) -> str:
    """Lower case, letters and digits only: "Qwen2.5 Math 7B" and "Qwen2.5-Math-7B" give the same key."""
    return re.sub(r"[^0-9a-z]+", "", text.lower())


def normalise_repo(value: str) -> str | None:
    """``org/name`` from a repository id or a hub URL (Hugging Face, ModelScope); None when it is neither."""
    text = value.strip()
    if not text:
        return None
    if "://" in text:
        parsed = urllib.parse.urlparse(text)
        host = parsed.netloc.lower()
        if host not in _HUB_HOSTS:
            return None
        parts = [p for p in parsed.path.split("/") if p]
        if parts and parts[0] == "models":
            parts = parts[1:]
        if len(parts) < 2:
            return None
        return f"{parts[0]}/{parts[1]}"
    text = text.removeprefix("hf.co/").removeprefix("huggingface.co/")
    parts = [p for p in text.split("/") if p]
    if len(parts) != 2:
        return None
    return f"{parts[0]}/{parts[1]}"


def _tuple(value: Any, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise ConfigError(f"license catalog {where}: expected a list of strings, got {value!r}")


def _parse_terms(raw: dict[str, Any], where: str) -> Terms:
    commercial = raw.get("commercial_use", "unknown")
    if commercial not in _COMMERCIAL_VALUES:
        raise ConfigError(f"license catalog {where}: commercial_use must be one of {_COMMERCIAL_VALUES}")
    mau = raw.get("mau_limit")
    if mau is not None and (not isinstance(mau, int) or mau <= 0):
        raise ConfigError(f"license catalog {where}: mau_limit must be a positive integer")
    return Terms(
        commercial_use=commercial,
        mau_limit=mau,
        attribution=_tuple(raw.get("attribution"), where),
        name_prefix=raw.get("name_prefix"),
        notice_required=bool(raw.get("notice_required", False)),
        notice=raw.get("notice"),
        use_policy=raw.get("use_policy"),
        territory_excluded=tuple(t.upper() for t in _tuple(raw.get("territory_excluded"), where)),
        research_only=bool(raw.get("research_only", False)),
        flows_to_derivatives=bool(raw.get("flows_to_derivatives", False)),
        flows_to_outputs=bool(raw.get("flows_to_outputs", False)),
        osi_approved=bool(raw.get("osi_approved", False)),
        share_alike=bool(raw.get("share_alike", False)),
        conditions=_tuple(raw.get("conditions"), where),
        notes=_tuple(raw.get("notes"), where),
    )


_TERM_FIELDS = {f.name for f in fields(Terms)}
_ENTRY_FIELDS = {"id", "spdx", "name", "family", "url", "aliases", "links", "fingerprints"}


@dataclass
class Catalog:
    """The loaded catalog with lookup indexes. Use ``get_catalog()`` for the packaged one."""

    version: str
    licenses: dict[str, LicenseEntry]
    base_models: dict[str, BaseModelEntry]  # key: _key(repo)
    base_models_version: str = ""
    _by_alias: dict[str, str] = field(default_factory=dict, repr=False)
    _by_name_key: dict[str, list[BaseModelEntry]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        for entry in self.licenses.values():
            for alias in (entry.id, entry.spdx, entry.name, *entry.aliases):
                self._by_alias.setdefault(_squash(alias), entry.id)
        for base in self.base_models.values():
            self._by_name_key.setdefault(_key(base.repo.split("/", 1)[1]), []).append(base)

    # -- licenses ---------------------------------------------------------------------------------------------

    def get(self, license_id: str) -> LicenseEntry | None:
        """The entry for an exact id, SPDX id, name or alias (case-insensitive)."""
        found = self._by_alias.get(_squash(license_id))
        return self.licenses[found] if found else None

    def by_link(self, link: str) -> LicenseEntry | None:
        """The entry whose known link pattern occurs in ``link`` (the longest pattern wins)."""
        text = urllib.parse.unquote(link).lower()
        best: tuple[int, LicenseEntry] | None = None
        for entry in self.licenses.values():
            for pattern in entry.links:
                needle = urllib.parse.unquote(pattern).lower()
                if needle and needle in text and (best is None or len(needle) > best[0]):
                    best = (len(needle), entry)
        return best[1] if best else None

    def fingerprint(self, text: str) -> list[tuple[LicenseEntry, int]]:
        """Entries whose fingerprint phrases occur in ``text``, best first, with the number of phrases matched.

        Custom licenses rank before the generic permissive ones they often quote (TII's Falcon license cites the
        Apache License); then the longest matched phrase wins.
        """
        haystack = _squash(text)
        scored: list[tuple[bool, int, int, LicenseEntry]] = []
        for entry in self.licenses.values():
            hits = [p for p in entry.fingerprints if _squash(p) in haystack]
            if hits:
                scored.append(
                    (entry.family in _GENERIC_FAMILIES, len(hits), max(len(h) for h in hits), entry)
                )
        scored.sort(key=lambda s: (s[0], -s[2], -s[1], s[3].id))
        return [(entry, count) for _, count, _, entry in scored]

    # -- base models ------------------------------------------------------------------------------------------

    def base_model(self, repo: str) -> BaseModelEntry | None:
        """The table entry for a repository id or hub URL (case-insensitive)."""
        norm = normalise_repo(repo)
        if norm is None:
            return None
        return self.base_models.get(_key(norm))

    def base_model_by_name(self, name: str, organization: str | None = None) -> BaseModelEntry | None:
        """The entry for a display name as GGUF writes it ("Qwen2.5 Math 7B", org "Qwen"), when unambiguous."""
        candidates = self._by_name_key.get(_key(name), [])
        if organization:
            org = _key(organization)
            narrowed = [c for c in candidates if _key(c.repo.split("/", 1)[0]) == org]
            if narrowed:
                candidates = narrowed
        return candidates[0] if len(candidates) == 1 else None


def _load_licenses(raw: dict[str, Any]) -> dict[str, LicenseEntry]:
    result: dict[str, LicenseEntry] = {}
    for item in raw.get("license", []):
        lid = str(item.get("id", "")).lower()
        where = f"license {lid or '?'}"
        unknown_keys = set(item) - _TERM_FIELDS - _ENTRY_FIELDS
        if unknown_keys:
            raise ConfigError(f"license catalog {where}: unknown fields {sorted(unknown_keys)}")
        for required in ("id", "spdx", "name", "url"):
            if not item.get(required):
                raise ConfigError(f"license catalog {where}: missing {required}")
        if lid in result:
            raise ConfigError(f"license catalog: duplicate id {lid}")
        result[lid] = LicenseEntry(
            id=lid,
            spdx=item["spdx"],
            name=item["name"],
            family=item.get("family", lid),
            url=item["url"],
            terms=_parse_terms(item, where),
            aliases=_tuple(item.get("aliases"), where),
            links=_tuple(item.get("links"), where),
            fingerprints=_tuple(item.get("fingerprints"), where),
        )
    return result


def _load_base_models(raw: dict[str, Any], licenses: dict[str, LicenseEntry]) -> dict[str, BaseModelEntry]:
    result: dict[str, BaseModelEntry] = {}
    for item in raw.get("model", []):
        lid = item.get("license", "")
        if lid not in licenses:
            raise ConfigError(f"base model table: {item.get('repos')} names unknown license {lid!r}")
        parents = tuple(
            BaseParent(repo=p["repo"], relation=p.get("relation", "finetune"))
            for p in item.get("base_models", [])
        )
        for repo in item.get("repos", []):
            key = _key(repo)
            if key in result:
                raise ConfigError(f"base model table: duplicate repo {repo}")
            result[key] = BaseModelEntry(
                repo=repo,
                license=lid,
                base_models=parents,
                territory_excluded=tuple(t.upper() for t in item.get("territory_excluded", [])),
                open_components=tuple(item.get("open_components", [])),
                note=item.get("note"),
                source=item.get("source"),
            )
    return result


def _read_data(name: str) -> dict[str, Any]:
    text = resources.files("kaiyuan.license").joinpath("data", name).read_text(encoding="utf-8")
    return tomllib.loads(text)


@functools.cache
def get_catalog() -> Catalog:
    """The catalog shipped with kaiyuan (loaded once)."""
    licenses_raw = _read_data("licenses.toml")
    bases_raw = _read_data("base_models.toml")
    licenses = _load_licenses(licenses_raw)
    return Catalog(
        version=str(licenses_raw.get("version", "")),
        licenses=licenses,
        base_models=_load_base_models(bases_raw, licenses),
        base_models_version=str(bases_raw.get("version", "")),
    )
