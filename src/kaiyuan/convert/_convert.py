"""``kaiyuan convert MODEL --to hf|gguf``: a store model in the other format, added to the store as a new model.

Owns the order of a conversion: resolve the source, check that the direction and architecture are possible, name
the result, judge the new model's license (it inherits everything from its source; relation ``converted``) against
the policy for ``export`` before any work, convert in a hidden folder inside the store (GGUF → HF with
``gguf_to_hf``; HF → GGUF with ``hf_to_gguf``, then ``export.quantize`` for ``quant``), and add the result with
its lineage. A failure or Ctrl-C leaves no model and no files behind. Then, unless told not to, measure the result
against its source (``kaiyuan.eval.measure_cost``: KL divergence, top-1 agreement, PPL ratio on a short slice of
the shipped corpus) and record it on the new model, so ``kaiyuan show`` and ``license check`` see what the
conversion cost. Must not know: the CLI (progress goes to a callback).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kaiyuan.convert._gguf_to_hf import HF_DTYPES, gguf_to_hf
from kaiyuan.convert._hf_to_gguf import hf_architecture, hf_to_gguf
from kaiyuan.errors import ExportError, ModelExists
from kaiyuan.store import Manifest, ModelStore, parse_name

if TYPE_CHECKING:
    from kaiyuan.config import Settings

__all__ = ["FORMATS", "RELATION", "convert_model", "default_name"]

FORMATS = ("hf", "gguf")
RELATION = "converted"
Progress = Callable[[str, int, int], None]  # (step, done, total)


def default_name(source: Manifest, to: str, quant: str | None) -> str:
    """``smollm2:135m`` → ``smollm2:135m-hf`` / ``smollm2:135m-q4_k_m`` (``…-gguf`` without a quantization)."""
    suffix = "hf" if to == "hf" else (quant or "gguf").lower()
    tag = suffix if source.tag == "latest" else f"{source.tag}-{suffix}"
    return f"{source.name}:{tag}"


def _check_direction(source: Manifest, to: str, quant: str | None) -> None:
    if to not in FORMATS:
        raise ExportError(f"unknown format {to!r}; convert --to one of {', '.join(FORMATS)}")
    if source.adapters:
        raise ExportError(
            f"{source.full_name} is an adapter model; merge it first "
            f"(kaiyuan export {source.full_name} --merge), then convert the merged model"
        )
    have = "hf" if source.is_folder else "gguf"
    if have == to:
        raise ExportError(f"{source.full_name} is already a {'Hugging Face' if to == 'hf' else 'GGUF'} model")
    if to == "hf" and quant is not None:
        raise ExportError(
            "--quant applies to --to gguf; a Hugging Face model is written unquantized (--dtype)"
        )
    if to == "gguf":
        config = json.loads((source.model_path / "config.json").read_text(encoding="utf-8"))
        hf_architecture(config, source.full_name)  # ExportError naming it and the supported ones


def _gguf_metadata(name: str, record: dict[str, Any], source: Manifest) -> dict[str, str | int]:
    """``general.*`` keys of a converted GGUF: its name, inherited license, and the source as its base model."""
    metadata: dict[str, str | int] = {"general.name": name}
    license_record = record.get("license") or {}
    for key, field in (
        ("general.license", "id"),
        ("general.license.name", "name"),
        ("general.license.link", "link"),
    ):
        value = license_record.get(field)
        if isinstance(value, str) and value and value != "unknown":
            metadata[key] = value
    metadata["general.base_model.count"] = 1
    metadata["general.base_model.0.name"] = source.full_name
    for key, value in (("organization", source.organization), ("repo_url", source.repo_url)):
        if value:
            metadata[f"general.base_model.0.{key}"] = value
    return metadata


def convert_model(
    store: ModelStore,
    settings: Settings,
    model: str,
    to: str,
    *,
    quant: str | None = None,
    name: str | None = None,
    dtype: str = "bfloat16",
    overwrite: bool = False,
    measure: bool = True,
    progress: Progress | None = None,
) -> Manifest:
    """Convert store model ``model`` to format ``to`` ("hf" or "gguf") and add it as ``name`` (default:
    ``default_name``); returns the new manifest. ``quant`` (``Q4_K_M``, ``Q8_0`` ...) quantizes a GGUF result;
    ``dtype`` is the Hugging Face result's float type. Raises ExportError for an impossible conversion,
    LicenseDenied when the policy forbids the derivative, ModelExists for a taken name without ``overwrite``.
    ``measure``: record the quick cost against the source on the new model (``--no-eval`` skips it)."""
    manifest = _convert(store, settings, model, to, quant, name, dtype, overwrite, progress)
    if measure:
        manifest = _measure(store, manifest, store.resolve(model), settings, progress)
    return manifest


def _measure(
    store: ModelStore, manifest: Manifest, source: Manifest, settings: Settings, progress: Progress | None
) -> Manifest:
    """The converted model against its source, quickly, recorded on the converted model."""
    from kaiyuan.eval import QUICK_CTX, QUICK_WINDOWS, measure_cost, side_of
    from kaiyuan.eval._record import add_record

    step = f"measuring the cost against {source.full_name} ({QUICK_WINDOWS} windows of {QUICK_CTX} tokens)"

    def on_window(done: int, total: int) -> None:
        if progress is not None:
            progress(step, done, total)

    cost = measure_cost(
        side_of(manifest),
        side_of(source),
        n_threads=settings.threads,
        trained=(manifest.context_length, source.context_length),
        progress=on_window,
    )
    current = store.resolve(manifest.full_name)
    current.evals = add_record(current.evals, cost.record)
    store.write_manifest(current)
    return current


def _convert(
    store: ModelStore,
    settings: Settings,
    model: str,
    to: str,
    quant: str | None,
    name: str | None,
    dtype: str,
    overwrite: bool,
    progress: Progress | None,
) -> Manifest:
    from kaiyuan.export import QUANT_CHOICES, quantize
    from kaiyuan.license import derivative, enforce_policy

    source = store.resolve(model)
    quant = quant.upper() if quant else None
    if quant is not None and quant not in QUANT_CHOICES:
        raise ExportError(f"unknown quantization {quant!r}; choose one of {', '.join(QUANT_CHOICES)}")
    if dtype not in HF_DTYPES:
        raise ExportError(f"unknown dtype {dtype!r}; choose one of {', '.join(HF_DTYPES)}")
    _check_direction(source, to, quant)
    target = parse_name(name or default_name(source, to, quant))
    if store.exists(str(target)) and not overwrite:
        raise ModelExists(
            f"model {target} already exists; choose another name with --name or replace it with --force"
        )
    record = derivative(str(target), [source.parent_ref()], RELATION)
    enforce_policy(record, store.policy, "export")  # LicenseDenied: nothing is done
    added: dict[str, Any] = {  # how the result is added, either format
        "license": record["license"],
        "lineage": record["lineage"],
        "source": f"convert:{source.full_name}@{source.blob.digest}",
        "overwrite": overwrite,
    }
    store.root.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".convert-", dir=store.root))  # same filesystem as the blobs
    try:
        if to == "hf":
            folder = gguf_to_hf(source.model_path, work / "model", dtype=dtype, progress=progress)
            if progress is not None:
                progress("adding to the store", 0, 1)
            defaults = {
                "organization": source.organization,
                "repo_url": source.repo_url,
                "system": source.system,
                "parameters_defaults": dict(source.parameters_defaults),
            }
            return store.import_hf_folder(folder, str(target), extra=defaults, **added)

        def on_tensor(done: int, total: int, _name: str) -> None:
            if progress is not None:
                progress("writing GGUF tensors", done, total)

        out = hf_to_gguf(
            source.model_path,
            work / "model.gguf",
            outtype="F32" if quant else "auto",
            metadata=_gguf_metadata(str(target), record, source),
            on_tensor=on_tensor,
        )
        if quant is not None:
            if progress is not None:
                progress(f"quantizing to {quant}", 0, 1)
            quantized = work / f"model-{quant}.gguf"
            quantize(out, quantized, quant, threads=settings.threads)
            out.unlink()
            out = quantized
        if progress is not None:
            progress("adding to the store", 0, 1)
        manifest = store.import_gguf(out, str(target), link=True, **added)
        if source.system or source.parameters_defaults:  # the source's Modelfile-style defaults carry over
            manifest = dataclasses.replace(
                manifest, system=source.system, parameters_defaults=dict(source.parameters_defaults)
            )
            store.write_manifest(manifest)
        return manifest
    finally:
        shutil.rmtree(work, ignore_errors=True)
