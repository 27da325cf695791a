"""``kaiyuan export NAME``: a store model out as a GGUF LoRA adapter, a merged (quantized) GGUF, or a release bundle.

Owns the choices (what is written where, which quantization by default), the license check before any byte is
written (``enforce_policy(..., "export")``), progress, and atomicity: every file is written to a hidden temporary
sibling and renamed into place when complete; a bundle is assembled in a hidden folder and renamed as a whole, so a
failure or Ctrl-C leaves nothing half-written behind.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)

from kaiyuan.config import Settings
from kaiyuan.errors import ExportError, ModelExists
from kaiyuan.export._atomic import atomic_output, temporary_sibling
from kaiyuan.export._merge import merge_adapter, read_gguf_adapter
from kaiyuan.export._quantize import QUANT_CHOICES, file_type_name, quantize

__all__ = ["ExportResult", "export_model"]


@dataclass
class ExportResult:
    files: list[Path] = field(default_factory=list)  # model files written
    bundle: Path | None = None  # the bundle folder, when asked for
    quantization: str | None = None  # of a merged / copied model


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name.replace(":latest", "")).strip("-.") or "model"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _base_file_type(path: Path) -> int | None:
    import gguf

    reader = gguf.GGUFReader(str(path), "r")
    field_ = reader.fields.get("general.file_type")
    value = field_.contents() if field_ is not None else None
    return int(value) if isinstance(value, int) else None


def _default_quant(base_path: Path, *, merged: bool) -> str:
    """The base's own type; but a merge into a base below 8 bits is written as Q8_0, because re-quantizing the
    merged weights to the same low-bit type adds a second round of quantization error (measured in the docs)."""
    name = file_type_name(_base_file_type(base_path))
    if name is None or (merged and name not in ("F32", "F16", "BF16", "Q8_0")):
        return "Q8_0"
    return name


def _model_record(manifest: Any) -> dict[str, Any]:
    """The manifest-shaped dict the license package reads, with the full name."""
    record = dict(manifest.to_dict())
    record["name"] = manifest.full_name
    return record


def _lineage_metadata(
    record: dict[str, Any], base_record: dict[str, Any] | None
) -> dict[str, str | int | float]:
    """general.* keys naming the exported model, its license and its base (GGUF lineage convention)."""
    meta: dict[str, str | int | float] = {"general.name": str(record.get("name", ""))}
    license_ = record.get("license") or {}
    license_id = license_.get("id") if isinstance(license_, dict) else None
    if not isinstance(license_id, str) or not license_id:
        base_license = (base_record or {}).get("license") or {}
        license_id = base_license.get("id") if isinstance(base_license, dict) else None
    if isinstance(license_id, str) and license_id:
        meta["general.license"] = license_id
    if base_record is not None:
        meta["general.base_model.count"] = 1
        meta["general.base_model.0.name"] = str(base_record.get("name", ""))
        for key in ("organization", "repo_url"):
            if isinstance(base_record.get(key), str) and base_record[key]:
                meta[f"general.base_model.0.{key}"] = base_record[key]
    return meta


def _progress(console: Console) -> Progress:
    return Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )


def export_model(
    settings: Settings,
    name: str,
    *,
    fmt: str | None = None,
    merge: bool = False,
    quant: str | None = None,
    output: Path | None = None,
    bundle: Path | None = None,
    force: bool = False,
    measure: bool = True,
    console: Console | None = None,
) -> ExportResult:
    """Export store model ``name``; see the module docstring. Returns what was written. ``measure``: a merged or
    re-quantized model file is measured against its source (``kaiyuan.eval.measure_cost``) and judged against the
    policy's quality thresholds; ``False`` (``--no-eval``) skips it."""
    from kaiyuan.license import enforce_policy, evaluate, get_catalog, parse_policy, quality_reasons
    from kaiyuan.store import ModelStore

    console = console or Console(stderr=True)
    if fmt not in (None, "gguf", "gguf-lora"):
        raise ExportError(f"unknown --format {fmt!r}; use gguf-lora (adapter) or gguf (model file)")
    if quant is not None and quant not in QUANT_CHOICES:
        raise ExportError(f"unknown --quant {quant!r}; choose one of {', '.join(QUANT_CHOICES)}")
    if merge and fmt == "gguf-lora":
        raise ExportError("--merge writes a full model; it cannot be combined with --format gguf-lora")
    store = ModelStore(settings.home)
    manifest = store.resolve(name)
    record = _model_record(manifest)
    is_adapter = bool(manifest.adapters)
    base_record: dict[str, Any] | None = None
    if is_adapter and manifest.base:
        base_record = _model_record(store.resolve(manifest.base))
    if (fmt == "gguf-lora" or merge) and not is_adapter:
        raise ExportError(
            f"{manifest.full_name} is not an adapter model; --format gguf-lora and --merge need one"
        )
    if is_adapter and len(manifest.adapters) != 1 and (merge or fmt == "gguf-lora"):
        raise ExportError(
            f"{manifest.full_name} stacks {len(manifest.adapters)} adapters; export supports one"
        )
    resolver = _store_resolver(store)
    enforce_policy(
        record, settings.policy, "export", resolver=resolver
    )  # LicenseDenied before any byte is written
    policy = parse_policy(settings.policy, get_catalog())
    changes_weights = (is_adapter and merge) or (
        not is_adapter and quant is not None and quant != file_type_name(_base_file_type(manifest.model_path))
    )
    if changes_weights and policy.thresholds and not measure and policy.mode == "enforce":
        raise ExportError(
            "--no-eval cannot skip the measurement: the policy in kaiyuan.toml sets a quality threshold "
            "(max_kl, max_ppl_ratio or min_top1) that this export must be measured against"
        )
    if not changes_weights and not (is_adapter and not merge):  # a copy: judged by what is on record
        _gate(quality_reasons(policy, record), policy.mode, console, written=None)

    lora_out = is_adapter and not merge
    if lora_out:
        quant_name = None
        filename = f"{_slug(manifest.full_name)}.lora.gguf"
    else:
        quant_name = quant or _default_quant(manifest.model_path, merged=is_adapter)
        filename = f"{_slug(manifest.full_name)}.{quant_name}.gguf"

    bundle_tmp: Path | None = None
    if bundle is not None:
        bundle = Path(bundle)
        if bundle.exists() and any(bundle.iterdir()) and not force:
            raise ModelExists(f"bundle folder {bundle} exists and is not empty; remove it or pass --force")
        bundle_tmp = temporary_sibling(bundle, "partial")
        shutil.rmtree(bundle_tmp, ignore_errors=True)
        bundle_tmp.mkdir(parents=True)
        dest = bundle_tmp / (output.name if output else filename)
    else:
        dest = Path(output) if output else Path.cwd() / filename
        if dest.exists() and not force:
            raise ModelExists(f"{dest} exists; choose another --output or pass --force")

    result = ExportResult(quantization=quant_name)
    try:
        with _progress(console) as progress:
            if lora_out:
                task = progress.add_task(f"writing {dest.name}", total=1)
                with atomic_output(dest) as tmp:
                    shutil.copyfile(manifest.adapter_paths[0], tmp)
                progress.update(task, completed=1)
            elif is_adapter:
                _merge_to(manifest, record, base_record, dest, quant_name or "Q8_0", settings, progress)
            else:
                _copy_or_quantize(manifest.model_path, dest, quant, settings, progress)
            cost = None
            if changes_weights and measure:
                cost = _measure(store, manifest, dest, quant_name, settings, progress)
        if cost is not None:
            console.print(_cost_text(cost, manifest.full_name), highlight=False, soft_wrap=True)
            what = f"{dest.name} against {manifest.full_name}"
            _gate(
                _record_reasons(policy, cost, what),
                policy.mode,
                console,
                written=dest if bundle is None else None,
            )
        result.files.append(dest)
        if bundle is not None and bundle_tmp is not None:
            texts = _license_texts(record, resolver)
            rows = _evaluation_rows(store.resolve(manifest.full_name).evals, cost)
            _write_bundle(bundle_tmp, evaluate(record, resolver=resolver), dest, texts, rows)
            if bundle.exists():
                shutil.rmtree(bundle)
            bundle_tmp.rename(bundle)
            result.bundle = bundle
            result.files = [bundle / dest.name]
    except BaseException:
        if bundle_tmp is not None:
            shutil.rmtree(bundle_tmp, ignore_errors=True)
        raise
    for path in result.files:
        console.print(f"wrote {path} ({path.stat().st_size / 1e6:,.1f} MB)", highlight=False)
    if result.bundle:
        console.print(f"bundle {result.bundle}: LICENSE, NOTICE, README.md, bom.cdx.json", highlight=False)
    return result


def _merge_to(
    manifest: Any,
    record: dict[str, Any],
    base_record: dict[str, Any] | None,
    dest: Path,
    quant: str,
    settings: Settings,
    progress: Progress,
) -> None:
    adapter = read_gguf_adapter(manifest.adapter_paths[0])
    metadata = _lineage_metadata(record, base_record)
    half = quant != "F32"
    with tempfile.TemporaryDirectory(
        prefix=".kaiyuan-merge-", dir=dest.parent if dest.parent.exists() else None
    ) as work:
        merged = Path(work) / "merged.gguf"
        task = progress.add_task("merging LoRA into base", total=None)

        def on_tensor(done: int, total: int, _name: str) -> None:
            progress.update(task, completed=done, total=total)

        merge_adapter(manifest.model_path, adapter, merged, metadata=metadata, half=half, on_tensor=on_tensor)
        with atomic_output(dest) as tmp:
            if quant in ("F32", "F16"):
                shutil.move(str(merged), tmp)
            else:
                qtask = progress.add_task(f"quantizing to {quant} (llama.cpp)", total=1)
                quantize(merged, tmp, quant, threads=settings.threads)
                progress.update(qtask, completed=1)


def _copy_or_quantize(
    source: Path, dest: Path, quant: str | None, settings: Settings, progress: Progress
) -> None:
    with atomic_output(dest) as tmp:
        if quant is None or quant == file_type_name(_base_file_type(source)):
            task = progress.add_task(f"copying {dest.name}", total=1)
            shutil.copyfile(source, tmp)
        else:
            if file_type_name(_base_file_type(source)) not in ("F32", "F16", "BF16"):
                raise ExportError(
                    f"{source.name} is already quantized; re-quantizing loses quality. Export the F16/F32 original"
                )
            task = progress.add_task(f"quantizing to {quant} (llama.cpp)", total=1)
            quantize(source, tmp, quant, threads=settings.threads)
        progress.update(task, completed=1)


def _store_resolver(store: Any) -> Any:
    """Lets the license guard find a parent (lineage base model) in the store by name."""
    from kaiyuan.errors import InvalidRequest, ModelNotFound

    def resolve(ref: dict[str, Any]) -> dict[str, Any] | None:
        for key in ("store_name", "name"):
            value = ref.get(key)
            if isinstance(value, str) and value:
                try:
                    return _model_record(store.resolve(value))
                except (ModelNotFound, InvalidRequest):
                    continue
        return None

    return resolve


def _license_texts(record: dict[str, Any], resolve: Any, *, depth: int = 8) -> dict[str, str]:
    """The license texts the store holds for a model and its ancestors in the store (a pulled model keeps the
    text of its registry's license layer), keyed by license id; the nearest model's text wins for an id."""
    texts: dict[str, str] = {}
    seen: set[str] = set()
    todo = [record]
    while todo and depth > 0:
        depth -= 1
        next_level = []
        for model in todo:
            name = str(model.get("name", ""))
            if name in seen:
                continue
            seen.add(name)
            license_: dict[str, Any] = model.get("license") or {}
            text = license_.get("text")
            if isinstance(text, str) and text.strip():
                texts.setdefault(str(license_.get("id") or f"license of {name}"), text)
            lineage: dict[str, Any] = model.get("lineage") or {}
            for ref in lineage.get("base_models") or []:
                parent = resolve(ref) if isinstance(ref, dict) else None
                if parent is not None:
                    next_level.append(parent)
        todo = next_level
    return texts


def _measure(
    store: Any, manifest: Any, dest: Path, quant: str | None, settings: Settings, progress: Progress
) -> Any:
    """The written file against its source (base + adapter for a merge), quickly; recorded on the source."""
    from kaiyuan.eval import QUICK_CTX, QUICK_WINDOWS, Side, measure_cost, side_of
    from kaiyuan.eval._record import add_record

    task = progress.add_task(
        f"measuring the cost against {manifest.full_name} ({QUICK_WINDOWS} windows of {QUICK_CTX} tokens)",
        total=QUICK_WINDOWS,
    )

    def on_window(done: int, total: int) -> None:
        progress.update(task, completed=done, total=total)

    output = {"file": dest.name, "quantization": quant, "digest": "sha256-" + _sha256(dest)}
    cost = measure_cost(
        Side(dest.name, dest),
        side_of(manifest),
        n_threads=settings.threads,
        trained=(manifest.context_length,),
        output=output,
        progress=on_window,
    )
    current = store.resolve(manifest.full_name)  # read again: the manifest may have changed meanwhile
    current.evals = add_record(current.evals, cost.record)
    store.write_manifest(current)
    return cost


def _cost_text(cost: Any, source: str) -> str:
    c = cost.comparison
    return (
        f"cost against {source}: mean KL {c.kl_mean:.4f}, top-1 agreement {c.top1_agreement * 100:.1f}%, "
        f"PPL ratio {c.ppl_ratio:.4f} (quick: {c.model.windows} windows of {c.model.n_ctx} tokens of kaiyuan's "
        f"corpus; kaiyuan eval gives full figures)"
    )


def _record_reasons(policy: Any, cost: Any, what: str) -> list[str]:
    from kaiyuan.license import record_reasons

    return record_reasons(policy, cost.record, what=what)


def _gate(reasons: list[str], mode: str, console: Console, *, written: Path | None) -> None:
    """Fail the export on the first quality reason (``mode = "warn"``: print them and go on); the file just
    written is removed, so a failed release leaves nothing behind (a bundle's folder goes with its exception)."""
    if not reasons:
        return
    if mode == "warn":
        for reason in reasons:
            console.print(f"warning: {reason}", highlight=False)
        return
    if written is not None:
        written.unlink(missing_ok=True)
    raise ExportError(
        f"{reasons[0]}; the release fails and nothing was written (use a wider quantization such as Q8_0, or change [policy] in kaiyuan.toml)"
    )


def _evaluation_rows(evals: list[dict[str, Any]], cost: Any) -> list[tuple[str, str]]:
    """The model card's Evaluation rows: this export's cost (as "quantization cost"), then the source's other
    records (earlier exports' costs left out: they describe other files)."""
    from kaiyuan.eval import describe_record

    rows = []
    if cost is not None:
        rows.append(("quantization cost vs the source", describe_record(cost.record)[1]))
    rows += [describe_record(r) for r in evals if r.get("kind") != "export"]
    return rows


def _write_bundle(
    folder: Path, report: Any, model_file: Path, texts: dict[str, str], evaluations: list[tuple[str, str]]
) -> None:
    """LICENSE (with the license texts the store holds), NOTICE, README.md (model card) and the CycloneDX AI-BOM
    next to the model file."""
    from kaiyuan.license import write_cyclonedx_bom, write_license_file, write_model_card, write_notice

    write_license_file(folder, report, texts=texts)
    write_notice(folder, report)
    description = f"Exported by kaiyuan as `{model_file.name}`."
    write_model_card(folder, report, description=description, evaluations=evaluations)
    write_cyclonedx_bom(folder, report, sha256=_sha256(model_file), description=description)
