"""``kaiyuan list | show | import | rm | copy``: the model store from the command line, with Ollama's habits.

Owns: presenting the store (tables, ``--json``, the import progress bar). Must not know: how the store keeps its
files (``kaiyuan.store``) or what licenses mean (``kaiyuan.license``). Errors are raised as KaiyuanError and
mapped to one line and an exit code by ``cli/_errors.py``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from kaiyuan.config import load_settings
from kaiyuan.store import Manifest, ModelStore, parameter_size_label, read_chat_template, read_folder_config

__all__ = ["copy_command", "import_command", "list_command", "rm_command", "show_command"]

_PROGRESS_MIN_BYTES = 32 * 1024 * 1024  # smaller files import in well under a second: no bar
_TEMPLATE_PREVIEW_LINES = 8


def _store() -> ModelStore:
    return ModelStore.from_settings(load_settings())


def human_size(n: int) -> str:
    """Decimal units like Ollama: ``98 MB``, ``4.7 GB``."""
    value = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" or value >= 10 else f"{value:.1f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")  # pragma: no cover


def human_age(timestamp: float, now: float | None = None) -> str:
    """``"3 minutes ago"``: how long ago ``timestamp`` (unix seconds) was."""
    if timestamp <= 0:
        return "unknown"
    seconds = max(0.0, (time.time() if now is None else now) - timestamp)
    units = (
        (31_536_000, "year"),
        (2_592_000, "month"),
        (604_800, "week"),
        (86_400, "day"),
        (3600, "hour"),
        (60, "minute"),
    )
    for size, unit in units:
        if seconds >= size:
            count = int(seconds // size)
            return f"{count} {unit}{'s' if count > 1 else ''} ago"
    return "Less than a minute ago"


def _short_id(digest: str) -> str:
    return digest.removeprefix("sha256-")[:12]


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "    ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def _summary(manifest: Manifest) -> dict[str, Any]:
    return {
        "name": manifest.full_name,
        "format": manifest.format,
        "digest": manifest.blob.digest,
        "size": manifest.size,
        "created": manifest.created,
        "architecture": manifest.architecture,
        "parameters": manifest.parameters,
        "parameter_size": parameter_size_label(manifest.parameters),
        "quantization": manifest.quantization,
        "context_length": manifest.context_length,
        "license": manifest.license_id,
        "source": manifest.source,
    }


# -- list -----------------------------------------------------------------------------------------------------


@click.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array instead of a table.")
def list_command(as_json: bool) -> None:
    """List models in the store (the bundled smollm2:135m included)."""
    manifests = _store().list()
    if as_json:
        click.echo(json.dumps([_summary(m) for m in manifests], indent=2, ensure_ascii=False))
        return
    rows = [["NAME", "ID", "SIZE", "MODIFIED", "LICENSE"]]
    now = time.time()
    for m in manifests:
        rows.append(
            [
                m.full_name,
                _short_id(m.blob.digest),
                human_size(m.size),
                human_age(m.created_timestamp(), now),
                m.license_id,
            ]
        )
    click.echo(_table(rows))


# -- show -----------------------------------------------------------------------------------------------------


def _show_data(manifest: Manifest, template: str | None) -> dict[str, Any]:
    return {
        "name": manifest.full_name,
        "format": manifest.format,
        "architecture": manifest.architecture,
        "parameters": manifest.parameters,
        "parameter_size": parameter_size_label(manifest.parameters),
        "quantization": manifest.quantization,
        "context_length": manifest.context_length,
        "template": template,
        "system": manifest.system,
        "license": manifest.license,
        "license_summary": _license_summary(manifest),
        "lineage": manifest.lineage,
        "base": manifest.base,
        "adapters": [ref.to_dict() for ref in manifest.adapters],
        "size": manifest.size,
        "digest": manifest.blob.digest,
        "source": manifest.source,
        "created": manifest.created,
        "path": str(manifest.model_path),
        "evals": manifest.evals,
    }


def _section(title: str, rows: list[tuple[str, str]]) -> list[str]:
    width = max((len(key) for key, _ in rows), default=0) + 4
    return [f"  {title}", *(f"    {key.ljust(width)}{value}" for key, value in rows), ""]


def _lineage_rows(lineage: dict[str, Any], base: str | None) -> list[tuple[str, str]]:
    relation = lineage.get("relation")
    rows = [("relation", str(relation) if relation else "original (no base model declared)")]
    if base:
        rows.append(("base in store", base))
    for ref in lineage.get("base_models") or []:
        if isinstance(ref, dict):
            label = " ".join(
                str(part)
                for part in (
                    ref.get("name"),
                    f"({ref['organization']})" if ref.get("organization") else None,
                    ref.get("version"),
                    ref.get("repo_url"),
                )
                if part
            )
            rows.append(("base model", label or "(unnamed)"))
        else:
            rows.append(("base model", str(ref)))
    rows.extend(("dataset", str(item)) for item in lineage.get("datasets") or [])
    return rows


def _license_summary(manifest: Manifest) -> dict[str, Any]:
    from kaiyuan.license import license_summary

    return license_summary(manifest.to_dict())


def _license_rows(manifest: Manifest) -> list[tuple[str, str]]:
    record = manifest.license
    summary = _license_summary(manifest)
    rows = [("license", str(record.get("id") or "unknown"))]
    rows.extend((key, str(record[key])) for key in ("name", "link") if record.get(key))
    rows.append(("declared in", str(record.get("source") or "unknown")))
    rows.append(("commercial use", str(summary.get("commercial_use") or "unknown")))
    if summary.get("mau_limit"):
        rows.append(("user cap (MAU)", f"{summary['mau_limit']:,}"))
    if summary.get("territory_excluded"):
        rows.append(("not licensed in", ", ".join(summary["territory_excluded"])))
    if summary.get("research_only"):
        rows.append(("research only", "yes"))
    rows.extend(("attribution", str(phrase)) for phrase in summary.get("attribution") or [])
    if summary.get("name_prefix"):
        rows.append(("derivative names", f"must start with {summary['name_prefix']!r}"))
    rows.append(("details", f"kaiyuan license show {manifest.full_name}"))
    return rows


def _metadata_rows(manifest: Manifest) -> list[tuple[str, str]]:
    from kaiyuan.gguf import ArrayInfo, read_gguf

    if manifest.is_folder:  # a Hugging Face folder: its config.json, and the files it is made of
        config = read_folder_config(manifest.model_path)
        rows = [(f"config.{key}", repr(value)[:100]) for key, value in config.items()]
        return rows + [(f"file {path}", human_size(ref.size)) for path, ref in manifest.files.items()]
    rows = []
    for key, value in read_gguf(manifest.model_path).metadata.items():
        if isinstance(value, ArrayInfo):
            shown = f"[{value.length} {value.item_type.name.lower()} items]"
        elif isinstance(value, str):
            first = value.splitlines()[0] if value else ""
            shown = repr(first[:80] + ("…" if len(value) > len(first[:80]) else ""))
        else:
            shown = repr(value)
        rows.append((key, shown))
    return rows


@click.command("show")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--template", "template_only", is_flag=True, help="Print only the full chat template.")
@click.option(
    "--metadata",
    is_flag=True,
    help="Also list every GGUF metadata key (a Hugging Face model: config.json and files).",
)
def show_command(name: str, as_json: bool, template_only: bool, metadata: bool) -> None:
    """Show a model's metadata, parameters, template, license and lineage."""
    manifest = _store().resolve(name)
    template = read_chat_template(manifest)
    if template_only:
        if template is None:
            click.echo(
                f"{manifest.full_name} has no chat template (kaiyuan uses a ChatML fallback)", err=True
            )
            return
        click.echo(template)
        return
    if as_json:
        data = _show_data(manifest, template)
        if metadata:
            data["metadata"] = dict(_metadata_rows(manifest))
        click.echo(json.dumps(data, indent=2, ensure_ascii=False))
        return

    lines = _section(
        "Model",
        [
            ("name", manifest.full_name),
            ("format", "Hugging Face folder (safetensors)" if manifest.is_folder else "GGUF"),
            ("architecture", manifest.architecture or "unknown"),
            ("parameters", parameter_size_label(manifest.parameters)),
            ("context length", str(manifest.context_length or "unknown")),
            ("quantization", manifest.quantization or "unknown"),
            ("size", human_size(manifest.size)),
            ("digest", manifest.blob.digest),
            ("source", manifest.source or "unknown"),
            *[("adapter", ref.digest) for ref in manifest.adapters],
        ],
    )
    if manifest.system:
        lines += _section("System message (default)", [("system", manifest.system)])
    lines += _section("License", _license_rows(manifest))
    lines += _section("Lineage", _lineage_rows(manifest.lineage, manifest.base))
    if manifest.evals:
        from kaiyuan.eval import describe_record

        lines += _section("Evaluations (kaiyuan eval)", [describe_record(r) for r in manifest.evals])
    if template is None:
        lines += ["  Template", "    (none in the file: kaiyuan uses a ChatML fallback)", ""]
    else:
        preview = template.splitlines()
        shown = [line if len(line) <= 100 else line[:99] + "…" for line in preview[:_TEMPLATE_PREVIEW_LINES]]
        lines += ["  Template", *(f"    {line}" for line in shown)]
        if len(preview) > _TEMPLATE_PREVIEW_LINES or any(len(line) > 100 for line in preview):
            lines.append(f"    … (kaiyuan show {name} --template prints all of it)")
        lines.append("")
    if metadata:
        lines += _section("Metadata", _metadata_rows(manifest))
    click.echo("\n".join(lines).rstrip("\n"))


# -- import ---------------------------------------------------------------------------------------------------


def _default_name(path: Path) -> str:
    """``SmolLM2-135M-Instruct.Q4_1.gguf`` → ``smollm2-135m-instruct.q4_1``; a folder → its name, likewise."""
    stem = path.name.removesuffix(".gguf").lower()
    cleaned = "".join(ch if ch.isascii() and (ch.isalnum() or ch in "._-") else "-" for ch in stem)
    cleaned = cleaned.lstrip("._-")[:80]
    if not cleaned:
        raise click.UsageError(f"cannot make a model name from {path.name!r}; pass --name NAME[:TAG]")
    return cleaned


@contextmanager
def _progress_bar(label: str, total: int) -> Iterator[Any]:
    """A rich progress bar (bytes, speed, time left) on stderr; no bar for small files."""
    if total < _PROGRESS_MIN_BYTES:
        yield None
        return
    from rich.console import Console

    from kaiyuan.cli._progress import byte_progress

    progress = byte_progress(Console(stderr=True), transient=True)
    task = progress.add_task(label, total=total)
    with progress:

        def update(done: int, _total: int) -> None:
            progress.update(task, completed=done)

        yield update


def _folder_size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


@click.command("import")
@click.argument("file", type=click.Path(path_type=Path, dir_okay=True))
@click.option("--name", "-n", "name", help="NAME[:TAG] to store it under (default: from the file name).")
@click.option("--force", "-f", is_flag=True, help="Replace a model that already has this name.")
@click.option(
    "--link",
    is_flag=True,
    help="Hard-link the file into the store instead of copying it (same filesystem only; editing the original "
    "then changes the stored model).",
)
@click.option(
    "--base",
    metavar="BASE",
    help="FILE is a GGUF LoRA adapter: register it as a model that is BASE plus this adapter (served on BASE's "
    "engine; lineage and license terms inherited from BASE).",
)
def import_command(file: Path, name: str | None, force: bool, link: bool, base: str | None) -> None:
    """Add a local GGUF file or Hugging Face model folder to the model store.

    A GGUF file is checked (header, metadata, tensor table) before anything is stored; a folder must hold
    config.json, a tokenizer and *.safetensors weights (license and lineage are read from its model card and
    LICENSE file). Files are copied while their SHA-256 is computed, and the model is registered under
    NAME[:TAG] (tag "latest" when omitted).

    \b
    Examples:
      kaiyuan import ./qwen2.5-0.5b-instruct-q4_k_m.gguf --name qwen2.5:0.5b
      kaiyuan import ./Qwen2.5-0.5B-Instruct --name qwen2.5:0.5b-hf
      kaiyuan import ./support-lora.gguf --base smollm2 --name smollm2-support
    """
    store = _store()
    model = name or _default_name(file)
    if file.is_dir():
        if base is not None or link:
            raise click.UsageError("--base and --link take a GGUF file, not a folder")
        with _progress_bar(f"importing {file.name}", _folder_size(file)) as progress:
            manifest = store.import_hf_folder(file, model, progress=progress, overwrite=force)
        _imported(manifest)
        return
    size = file.stat().st_size if file.is_file() else 0
    with _progress_bar(f"importing {file.name}", size) as progress:
        if base is None:
            manifest = store.import_gguf(file, model, progress=progress, overwrite=force, link=link)
        else:
            manifest = _import_adapter(store, file, model, base, progress=progress, overwrite=force)
    _imported(manifest)


def _imported(manifest: Manifest) -> None:
    click.echo(
        f"imported {manifest.full_name} ({_short_id(manifest.blob.digest)}, {human_size(manifest.size)}, "
        f"{manifest.architecture}, {parameter_size_label(manifest.parameters)} parameters, "
        f"{manifest.quantization or 'unknown quantization'}, license {manifest.license_id})"
    )


def _import_adapter(
    store: ModelStore, file: Path, name: str, base: str, *, progress: Any, overwrite: bool
) -> Manifest:
    """A LoRA file registered as BASE + adapter: an adapter derivative of BASE in the license guard's terms."""
    from kaiyuan.license import derivative, enforce_policy

    if not file.is_file():
        raise click.UsageError(f"{file}: no such file")
    parent = store.resolve(base)
    record = derivative(name, [parent.parent_ref()], "adapter")
    enforce_policy(record, store.policy, "import")  # LicenseDenied: nothing is added
    return store.add_adapter_model(
        name,
        parent.full_name,
        file,
        lineage=record["lineage"],
        license=record["license"],
        overwrite=overwrite,
        progress=progress,
    )


# -- rm / copy ------------------------------------------------------------------------------------------------


@click.command("rm")
@click.argument("names", nargs=-1, required=True)
def rm_command(names: tuple[str, ...]) -> None:
    """Remove models from the store; files no other model uses are deleted."""
    store = _store()
    for name in names:
        manifest = store.remove(name)
        click.echo(f"deleted '{manifest.full_name}'")


@click.command("copy")
@click.argument("source")
@click.argument("destination")
@click.option("--force", "-f", is_flag=True, help="Replace DESTINATION if it exists.")
def copy_command(source: str, destination: str, force: bool) -> None:
    """Copy a model to a new name (no data is duplicated)."""
    manifest = _store().copy(source, destination, overwrite=force)
    click.echo(f"copied '{source}' to '{manifest.full_name}'")
