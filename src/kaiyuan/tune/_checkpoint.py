"""Resumable checkpoints: LoRA weights, optimizer and RNG state after N optimizer steps.

Owns the checkpoint folder format and its atomicity: a checkpoint is written into a hidden temporary folder and
renamed to ``step-NNNNNN`` only when complete (its ``meta.json`` is the last file written), so a run killed while
saving still resumes from the previous one. Older checkpoints beyond ``keep`` are removed.
Knows nothing of data or the training loop's arithmetic.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any

from kaiyuan.errors import TuneError
from kaiyuan.tune._model import foreign_warnings_quiet, import_torch
from kaiyuan.tune._runs import RunDir, write_json_atomic

__all__ = ["load_checkpoint", "save_adapter", "save_checkpoint"]


def save_adapter(peft_model: Any, folder: Path) -> None:
    """PEFT's own format (adapter_config.json + adapter_model.safetensors), readable by any PEFT tool."""
    with foreign_warnings_quiet():
        peft_model.save_pretrained(str(folder), safe_serialization=True)


def save_checkpoint(
    run: RunDir, step: int, peft_model: Any, optimizer: Any, info: dict[str, Any], keep: int
) -> Path:
    """Write checkpoint ``step`` (steps completed) atomically and prune old ones; returns its folder."""
    torch = import_torch()
    final = run.checkpoints_dir / f"step-{step:06d}"
    tmp = run.checkpoints_dir / f".step-{step:06d}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_adapter(peft_model, tmp)
    state = {
        "optimizer": optimizer.state_dict(),
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    torch.save(state, tmp / "state.pt")
    write_json_atomic(tmp / "meta.json", {"step": step, "time": time.time(), **info})
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    for old in run.checkpoints()[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def load_checkpoint(folder: Path, peft_model: Any, optimizer: Any) -> None:
    """Restore LoRA weights, optimizer moments and RNG state from ``folder`` into a freshly built model."""
    torch = import_torch()
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    try:
        weights = load_file(str(folder / "adapter_model.safetensors"))
        state = torch.load(folder / "state.pt", map_location="cpu", weights_only=True)
    except (OSError, RuntimeError) as exc:
        raise TuneError(
            f"checkpoint {folder} cannot be read ({exc}); remove it to resume from an older one"
        ) from exc
    with foreign_warnings_quiet():
        result = set_peft_model_state_dict(peft_model, weights)
    unexpected = getattr(result, "unexpected_keys", [])
    if unexpected:
        raise TuneError(f"checkpoint {folder} does not fit this model (unexpected {unexpected[:3]})")
    optimizer.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["torch_rng"])
    if state.get("cuda_rng") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng"])
