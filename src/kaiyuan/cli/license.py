"""``kaiyuan license``: show, check and explain model licenses against the policy in kaiyuan.toml.

Owns the command group and its output (text for people, ``--json`` for pipelines). The meaning of licenses and
policies is ``kaiyuan.license``'s; models are found through ``kaiyuan.store`` (imported only when a store name is
given), paths through ``kaiyuan.license.detect_from_path``.

Exit codes of ``check``: 0 every model allowed, 1 at least one denied (reasons printed), 2 usage error (unknown
model, unreadable file, malformed policy).
"""

from __future__ import annotations

import difflib
import json
import sys
import tomllib
from pathlib import Path
from typing import Any

import click

from kaiyuan.errors import ConfigError, InvalidModelFile, InvalidRequest, ModelNotFound

__all__ = ["license_group"]


# ------------------------------------------------------------------------------------------------ loading


def _store_manifest(name: str) -> tuple[dict[str, Any], Any]:
    """The manifest dict of a store model and a lineage resolver over the store."""
    from kaiyuan.config import load_settings

    try:
        from kaiyuan.store import ModelStore
    except ImportError as exc:
        raise ModelNotFound(f"{name!r} is not a file or folder, and this kaiyuan has no model store") from exc
    store = ModelStore.from_settings(load_settings())
    manifest = store.resolve(name)
    model = _as_dict(manifest)
    full = getattr(manifest, "full_name", None)
    if isinstance(full, str):
        model["name"] = full

    def resolver(ref: dict[str, Any]) -> dict[str, Any] | None:
        for key in ("store_name", "name"):
            value = ref.get(key)
            if isinstance(value, str) and value:
                try:
                    return _as_dict(store.resolve(value))
                except (ModelNotFound, InvalidRequest):
                    continue
        return None

    return model, resolver


def _as_dict(manifest: Any) -> dict[str, Any]:
    if isinstance(manifest, dict):
        return dict(manifest)
    to_dict = getattr(manifest, "to_dict", None)
    if callable(to_dict):
        result = to_dict()
        if isinstance(result, dict):
            return result
    raise ModelNotFound(f"the store returned {type(manifest).__name__}, not a manifest")


def _load_model(target: str) -> tuple[dict[str, Any], Any]:
    """A manifest-shaped dict for a path (GGUF, card, folder) or a store name."""
    from kaiyuan.license import detect_from_path

    path = Path(target).expanduser()
    if path.exists():
        return detect_from_path(path), None
    if target.endswith((".gguf", ".md")) or ("/" in target and Path(target).suffix):
        raise InvalidModelFile(f"{target}: no such file")
    return _store_manifest(target)


def _load_policy(policy_file: Path | None) -> dict[str, Any]:
    if policy_file is None:
        from kaiyuan.config import load_settings

        return dict(load_settings().policy)
    try:
        data = tomllib.loads(policy_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{policy_file}: cannot read policy file: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{policy_file}: not valid TOML: {exc}") from exc
    table = data.get("policy", data)
    if not isinstance(table, dict):
        raise ConfigError(f"{policy_file}: [policy] must be a table")
    return table


# ------------------------------------------------------------------------------------------------ printing


def _yes(value: bool) -> str:
    return "yes" if value else "no"


def _print_report(report: Any) -> None:
    lic = report.license
    echo = click.echo
    echo(f"Model:        {report.model}")
    if lic.known:
        echo(f"License:      {lic.name} [{lic.id}] ({lic.spdx})")
    else:
        declared = ", ".join(f"{k}={v}" for k, v in lic.declared.items()) or "nothing declared"
        echo(f"License:      unknown ({declared})")
    echo(f"              source: {lic.source}, confidence: {lic.confidence}")
    if lic.url:
        echo(f"              {lic.url}")
    for note in lic.notes:
        echo(f"              note: {note}")
    if report.lineage:
        echo("Lineage:")
        for node in report.lineage:
            echo(f"  {'  ' * (node.depth - 1)}{node.repo or node.name} [{node.license.id}] --{node.relation}--> "
                 f"{node.child}  ({node.source})")  # fmt: skip
    eff = report.effective
    echo("Effective terms (own license plus everything inherited):")
    rows = [
        ("commercial use", eff.commercial_use),
        ("MAU limit", f"{eff.mau_limit:,}" if eff.mau_limit else "none"),
        ("attribution", ", ".join(f'"{p}"' for p in eff.attribution) or "none"),
        ("name prefix", f'"{eff.name_prefix}"' if eff.name_prefix else "none"),
        ("use policy", ", ".join(eff.use_policy) or "none"),
        (
            "territory",
            "excluded: " + ", ".join(eff.territory_excluded) if eff.territory_excluded else "no exclusion",
        ),
        ("research only", _yes(eff.research_only)),
        ("notice required", _yes(eff.notice_required)),
        ("flows to derivatives", _yes(eff.flows_to_derivatives)),
        ("flows to outputs", _yes(eff.flows_to_outputs)),
        ("OSI approved", _yes(eff.osi_approved)),
        ("licenses", ", ".join(eff.licenses)),
    ]
    for label, value in rows:
        echo(f"  {label:<21} {value}")
    if eff.unknown:
        echo("  unknown license:      " + ", ".join(eff.unknown))
    for conflict in eff.conflicts:
        tag = "CONFLICT" if conflict.get("blocking") else "conflict"
        echo(f"  {tag}: {conflict['message']}")
    openness = report.openness
    echo(f"Openness:     MOF class {openness.mof_class or 'none'}, OSAID {openness.osaid}")
    for reason in openness.reasons:
        echo(f"  - {reason}")
    if report.policy is not None and report.policy.reasons:
        verdict = "allowed" if report.policy.allowed else "DENIED"
        echo(f"Policy:       {verdict} ({report.policy.mode} mode)")
        for reason in report.policy.reasons:
            echo(f"  - {reason}")
    elif report.policy is not None:
        echo("Policy:       allowed")
    echo("This is kaiyuan's reading of the license catalog, not legal advice.")


# ------------------------------------------------------------------------------------------------ commands


@click.group("license")
def license_group() -> None:
    """Show, check and explain model licenses against your policy ([policy] in kaiyuan.toml)."""


@license_group.command("show")
@click.argument("target", metavar="MODEL|PATH")
@click.option("--json", "as_json", is_flag=True, help="Print the report in the stable JSON schema.")
@click.option(
    "--policy",
    "policy_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Judge against this policy file instead of kaiyuan.toml.",
)
def show_command(target: str, as_json: bool, policy_file: Path | None) -> None:
    """Show a model's license, lineage, effective terms and openness.

    MODEL is a name in the store; PATH a GGUF file, a model card README.md or a model folder, so a model can be
    judged before it is imported.
    """
    from kaiyuan.license import evaluate

    model, resolver = _load_model(target)
    policy = _load_policy(policy_file)
    report = evaluate(model, policy or None, resolver=resolver)
    if as_json:
        click.echo(json.dumps(report.to_json(), indent=2, ensure_ascii=False))
    else:
        _print_report(report)


@license_group.command("check")
@click.argument("targets", nargs=-1, required=True, metavar="MODEL|PATH...")
@click.option(
    "--policy",
    "policy_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Policy file (TOML with a [policy] table); default: [policy] of kaiyuan.toml.",
)
@click.option(
    "--action",
    type=click.Choice(["import", "pull", "serve", "tune", "export"]),
    default="serve",
    show_default=True,
    help="What you mean to do with the models (tune/export also refuse conflicting derivatives).",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per model.")
def check_command(targets: tuple[str, ...], policy_file: Path | None, action: str, as_json: bool) -> None:
    """Check models against the license policy: exit 0 if all are allowed, 1 if any is denied, 2 on usage errors.

    A policy with release-quality thresholds (max_kl, max_ppl_ratio, min_top1) also fails a store model whose
    recorded quantization cost (kaiyuan eval MODEL --against SOURCE) passes them.
    """
    from kaiyuan.license import evaluate, get_catalog, parse_policy, quality_reasons

    try:
        policy = _load_policy(policy_file)
        parsed = parse_policy(policy, get_catalog())
        loaded = [(target, *_load_model(target)) for target in targets]
        reports = [evaluate(model, policy, action=action, resolver=resolver) for _, model, resolver in loaded]
    except (ModelNotFound, InvalidModelFile, InvalidRequest, ConfigError) as exc:
        raise click.UsageError(exc.message) from exc
    denied = False
    for (target, model, _), report in zip(loaded, reports, strict=True):
        decision = report.policy
        assert decision is not None
        quality = quality_reasons(parsed, {"name": target, **model})
        allowed = decision.allowed and not quality
        blocked = not allowed and decision.mode == "enforce"
        denied = denied or blocked
        if as_json:
            fields = {**decision.to_json(), "allowed": allowed, "reasons": [*decision.reasons, *quality]}
            click.echo(json.dumps({"target": target, "license": report.license.id, **fields}))
            continue
        if allowed:
            click.echo(f"allowed  {target}  [{report.license.id}]")
        else:
            click.echo(f"{'DENIED' if blocked else 'warning'}  {target}  [{report.license.id}]")
            for reason in [*decision.reasons, *quality]:
                click.echo(f"  - {reason}")
    if denied:
        sys.exit(1)


@license_group.command("explain")
@click.argument("license_id", metavar="ID")
def explain_command(license_id: str) -> None:
    """Explain a license of the catalog: its terms, where they were read, and notes."""
    from kaiyuan.license import get_catalog

    catalog = get_catalog()
    entry = catalog.get(license_id)
    if entry is None:
        names = list(catalog.licenses)
        close = difflib.get_close_matches(license_id.lower(), names, n=3, cutoff=0.5)
        hint = f" (did you mean: {', '.join(close)}?)" if close else "; `kaiyuan license list` shows them all"
        raise click.UsageError(f"no license {license_id!r} in kaiyuan's catalog{hint}")
    terms = entry.terms
    echo = click.echo
    echo(f"{entry.name} [{entry.id}] ({entry.spdx})")
    echo(f"Text: {entry.url}")
    rows = [
        ("commercial use", terms.commercial_use),
        ("MAU limit", f"{terms.mau_limit:,}" if terms.mau_limit else "none"),
        ("attribution", ", ".join(f'"{p}"' for p in terms.attribution) or "none"),
        ("name prefix", f'"{terms.name_prefix}"' if terms.name_prefix else "none"),
        ("notice required", _yes(terms.notice_required)),
        ("use policy", terms.use_policy or "none"),
        ("territory excluded", ", ".join(terms.territory_excluded) or "none"),
        ("research only", _yes(terms.research_only)),
        ("flows to derivatives", _yes(terms.flows_to_derivatives)),
        ("flows to outputs", _yes(terms.flows_to_outputs)),
        ("OSI approved", _yes(terms.osi_approved)),
        ("share alike", _yes(terms.share_alike)),
    ]
    for label, value in rows:
        echo(f"  {label:<21} {value}")
    if terms.notice:
        echo(f"Notice: {terms.notice}")
    if terms.conditions:
        echo("Conditions:")
        for condition in terms.conditions:
            echo(f"  - {condition}")
    if terms.notes:
        echo("Notes:")
        for note in terms.notes:
            echo(f"  - {note}")
    models = sorted(b.repo for b in catalog.base_models.values() if b.license == entry.id)
    if models:
        shown = ", ".join(models[:6]) + (f" and {len(models) - 6} more" if len(models) > 6 else "")
        echo(f"Known models under it: {shown}")
    echo(f"Catalog version {catalog.version}. Not legal advice: read the text.")


@license_group.command("list")
def list_command() -> None:
    """List the license ids kaiyuan's catalog knows, with their commercial-use term."""
    from kaiyuan.license import get_catalog

    catalog = get_catalog()
    for entry in catalog.licenses.values():
        click.echo(f"{entry.id:<28} {entry.terms.commercial_use:<12} {entry.name}")
