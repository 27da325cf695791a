"""The license policy of ``[policy]`` in kaiyuan.toml: parsing it and judging effective terms against it.

Owns the meaning of the policy keys (``allow``, ``deny``, ``commercial``, ``territory``, ``mau``, ``allow_unknown``,
``mode``, and the release-quality thresholds ``max_kl``, ``max_ppl_ratio``, ``min_top1`` that ``_quality`` judges
measured figures against) and the decision for one action (import, pull, serve, tune, export). It reads effective terms and
lineage that ``_report`` computed; it never reads files, and it raises nothing itself: ``enforce_policy`` in
``_report`` turns a denial into ``LicenseDenied``.

Unknown is never read as permission: a check the policy asks for that depends on an unknown license fails,
unless ``allow_unknown = true``. An empty policy asks nothing and allows everything.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from kaiyuan.errors import ConfigError
from kaiyuan.license._catalog import Catalog
from kaiyuan.license._effective import EffectiveTerms

__all__ = ["ACTIONS", "EU_MEMBERS", "Policy", "PolicyDecision", "decide", "parse_policy"]

ACTIONS = ("import", "pull", "serve", "tune", "export", "check")
_DERIVING = ("tune", "export")

EU_MEMBERS = frozenset(
    [
        "AT",
        "BE",
        "BG",
        "HR",
        "CY",
        "CZ",
        "DK",
        "EE",
        "FI",
        "FR",
        "DE",
        "GR",
        "HU",
        "IE",
        "IT",
        "LV",
        "LT",
        "LU",
        "MT",
        "NL",
        "PL",
        "PT",
        "RO",
        "SK",
        "SI",
        "ES",
        "SE",
    ]
)
_TERRITORY_ALIASES = {"UK": "GB", "EL": "GR"}
_KEYS = (
    "allow",
    "deny",
    "commercial",
    "territory",
    "mau",
    "allow_unknown",
    "mode",
    "max_kl",
    "max_ppl_ratio",
    "min_top1",
)


@dataclass(frozen=True)
class Policy:
    """A parsed ``[policy]`` table. ``allow_unknown`` is None when the table does not set it."""

    allow: tuple[str, ...] = ()
    deny: tuple[str, ...] = ()
    commercial: bool = False
    territory: tuple[str, ...] = ()
    mau: int | None = None
    allow_unknown: bool | None = None
    mode: Literal["enforce", "warn"] = "enforce"
    max_kl: float | None = None  # highest mean KL divergence (nats) of a release against its source
    max_ppl_ratio: float | None = None  # highest perplexity ratio (release / source)
    min_top1: float | None = None  # lowest top-1 agreement with the source (0..1)

    @property
    def thresholds(self) -> bool:
        """Whether the policy sets any release-quality threshold."""
        return self.max_kl is not None or self.max_ppl_ratio is not None or self.min_top1 is not None

    @property
    def empty(self) -> bool:
        return self == Policy(mode=self.mode)

    @property
    def asks_anything(self) -> bool:
        return bool(self.allow or self.commercial or self.territory or self.mau is not None)

    def to_json(self) -> dict[str, Any]:
        return {
            "allow": list(self.allow),
            "deny": list(self.deny),
            "commercial": self.commercial,
            "territory": list(self.territory),
            "mau": self.mau,
            "allow_unknown": self.allow_unknown,
            "mode": self.mode,
            "max_kl": self.max_kl,
            "max_ppl_ratio": self.max_ppl_ratio,
            "min_top1": self.min_top1,
        }


@dataclass
class PolicyDecision:
    """The verdict for one model and action: allowed or not, why, and what the user must do if they go ahead."""

    allowed: bool
    action: str
    mode: str = "enforce"
    reasons: list[str] = field(default_factory=list)  # why it is denied (empty when allowed)
    obligations: list[str] = field(default_factory=list)  # what using / shipping the model requires

    def to_json(self) -> dict[str, Any]:
        return {
            "allowed": self.allowed,
            "action": self.action,
            "mode": self.mode,
            "reasons": list(self.reasons),
            "obligations": list(self.obligations),
        }


def _strings(value: Any, key: str) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise ConfigError(f"[policy] {key} must be a string or a list of strings, got {value!r}")


def _license_ids(values: tuple[str, ...], key: str, catalog: Catalog) -> tuple[str, ...]:
    result = []
    for value in values:
        if value.strip().lower() == "unknown":
            raise ConfigError(f"[policy] {key}: use allow_unknown = true/false instead of listing 'unknown'")
        entry = catalog.get(value)
        if entry is None:
            raise ConfigError(
                f"[policy] {key}: unknown license id {value!r}; `kaiyuan license list` shows the known ids"
            )
        result.append(entry.id)
    return tuple(dict.fromkeys(result))


def _territories(values: tuple[str, ...]) -> tuple[str, ...]:
    result = []
    for value in values:
        code = _TERRITORY_ALIASES.get(value.strip().upper(), value.strip().upper())
        if code != "EU" and (len(code) != 2 or not code.isalpha()):
            raise ConfigError(
                f"[policy] territory: {value!r} is not an ISO 3166 two-letter country code (or EU)"
            )
        result.append(code)
    return tuple(dict.fromkeys(result))


def _threshold(raw: dict[str, Any], key: str, low: float, high: float | None) -> float | None:
    value = raw.get(key)
    if value is None:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or value < low
        or (high and value > high)
    ):
        span = f"between {low} and {high}" if high else f"at least {low}"
        raise ConfigError(f"[policy] {key} must be a number {span}, got {value!r}")
    return float(value)


def parse_policy(raw: dict[str, Any] | Policy | None, catalog: Catalog) -> Policy:
    """A Policy from the raw ``[policy]`` table; ConfigError names the bad key and what to write instead."""
    if isinstance(raw, Policy):
        return raw
    if not raw:
        return Policy()
    if not isinstance(raw, dict):
        raise ConfigError("[policy] must be a table")
    unknown_keys = sorted(set(raw) - set(_KEYS))
    if unknown_keys:
        raise ConfigError(
            f"[policy]: unknown key(s) {', '.join(unknown_keys)}; known keys: {', '.join(_KEYS)}"
        )
    commercial = raw.get("commercial", False)
    allow_unknown = raw.get("allow_unknown")
    if not isinstance(commercial, bool) or (
        allow_unknown is not None and not isinstance(allow_unknown, bool)
    ):
        raise ConfigError("[policy] commercial and allow_unknown must be true or false")
    mau = raw.get("mau")
    if mau is not None and (isinstance(mau, bool) or not isinstance(mau, int) or mau < 0):
        raise ConfigError(f"[policy] mau must be a whole number of monthly active users, got {mau!r}")
    mode = raw.get("mode", "enforce")
    if mode not in ("enforce", "warn"):
        raise ConfigError(f"[policy] mode must be 'enforce' or 'warn', got {mode!r}")
    return Policy(
        allow=_license_ids(_strings(raw.get("allow", []), "allow"), "allow", catalog),
        deny=_license_ids(_strings(raw.get("deny", []), "deny"), "deny", catalog),
        commercial=commercial,
        territory=_territories(_strings(raw.get("territory", []), "territory")),
        mau=mau,
        allow_unknown=allow_unknown,
        mode=mode,
        max_kl=_threshold(raw, "max_kl", 0.0, None),
        max_ppl_ratio=_threshold(raw, "max_ppl_ratio", 1.0, None),
        min_top1=_threshold(raw, "min_top1", 0.0, 1.0),
    )


def _excluded(territory: str, excluded: list[str]) -> bool:
    if territory in excluded:
        return True
    if territory in EU_MEMBERS and "EU" in excluded:
        return True
    return territory == "EU" and any(t in EU_MEMBERS for t in excluded)


def obligations_of(eff: EffectiveTerms) -> list[str]:
    """What using or shipping a model under ``eff`` requires, in words."""
    items = [f'display "{phrase}"' for phrase in eff.attribution]
    if eff.name_prefix:
        items.append(f'a distributed derivative\'s name must begin with "{eff.name_prefix}"')
    items += [f"follow the acceptable use policy {url}" for url in eff.use_policy]
    items += [f'keep the notice: "{notice}"' for notice in eff.notices]
    if eff.mau_limit:
        items.append(f"above {eff.mau_limit:,} monthly active users a separate license is needed")
    if eff.territory_excluded:
        items.append("not licensed in: " + ", ".join(eff.territory_excluded))
    return items


def decide(
    policy: Policy,
    eff: EffectiveTerms,
    *,
    action: str,
    model_name: str,
    sources: dict[str, list[str]],
) -> PolicyDecision:
    """Judge effective terms against a policy. ``sources`` maps each license id to the models it comes from."""
    decision = PolicyDecision(allowed=True, action=action, mode=policy.mode, obligations=obligations_of(eff))
    if policy.empty:
        return decision
    reasons = decision.reasons

    def where(lid: str) -> str:
        names = sources.get(lid, [])
        return f" (from {', '.join(names)})" if names and names != [model_name] else ""

    unknown_ok = policy.allow_unknown is True
    if eff.unknown and not unknown_ok and (policy.allow_unknown is False or policy.asks_anything):
        reasons.append(
            "license unknown for "
            + ", ".join(eff.unknown)
            + ": kaiyuan cannot confirm what it allows (set allow_unknown = true in [policy] to accept unknown licenses)"
        )
    for lid in eff.licenses:
        if lid == "unknown":
            continue
        if lid in policy.deny:
            reasons.append(f"license {lid}{where(lid)} is denied by the policy")
        elif policy.allow and lid not in policy.allow:
            reasons.append(
                f"license {lid}{where(lid)} is not in the policy's allow list ({', '.join(policy.allow)})"
            )
    known_facts = unknown_ok or not eff.unknown  # unknown-licensed parts were reported above
    if policy.commercial and known_facts and (eff.commercial_use == "forbidden" or eff.research_only):
        culprits = [lid for lid in eff.licenses if lid in sources and _is_noncommercial(lid)]
        reasons.append(
            "commercial use is not permitted"
            + (f" by {', '.join(culprits)}" if culprits else "")
            + " (the policy sets commercial = true)"
        )
    if policy.territory and known_facts:
        for territory in policy.territory:
            if _excluded(territory, eff.territory_excluded):
                reasons.append(
                    f"the license does not apply in {territory} (excluded: {', '.join(eff.territory_excluded)})"
                )
    if policy.mau is not None and eff.mau_limit is not None and policy.mau > eff.mau_limit:
        reasons.append(
            f"your {policy.mau:,} monthly active users exceed the license's limit of {eff.mau_limit:,}; "
            "a separate license from the licensor is needed"
        )
    if action in _DERIVING:
        for conflict in eff.conflicts:
            if conflict.get("blocking"):
                reasons.append(f"derivative would be in conflict: {conflict['message']}")
    if action == "export" and eff.name_prefix and not _name_ok(model_name, eff.name_prefix):
        reasons.append(
            f'the license requires a distributed derivative\'s name to begin with "{eff.name_prefix}"; '
            f"rename {model_name!r} (e.g. {eff.name_prefix}-{_base_name(model_name)})"
        )
    decision.allowed = not reasons
    return decision


def _is_noncommercial(lid: str) -> bool:
    from kaiyuan.license._catalog import get_catalog

    entry = get_catalog().get(lid)
    return entry is not None and (entry.terms.commercial_use == "forbidden" or entry.terms.research_only)


def _base_name(name: str) -> str:
    return name.split("/")[-1].split(":")[0]


def _name_ok(name: str, prefix: str) -> bool:
    base = _base_name(name).lower()
    want = prefix.lower()
    return (
        base.startswith(want)
        or base.replace("-", " ").startswith(want)
        or base.startswith(want.replace(" ", "-"))
    )
