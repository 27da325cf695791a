"""Run folders under ``$KAIYUAN_HOME/runs``: layout, ``meta.json``, listing, and finding the run to resume.

A run folder holds::

    meta.json                 resolved config, base and data digests, lineage, status, progress, eval results
    log.jsonl                 one JSON object per logged step (step, loss, lr, tokens/s, ...)
    checkpoints/step-NNNNNN/  resumable checkpoints (adapter weights, optimizer and RNG state, meta.json)
    adapter/                  the final PEFT adapter (safetensors + adapter_config.json)
    adapter.gguf              the final adapter as a GGUF LoRA (what the store model points at)

Owns the layout and the status rules (a "running" run whose process is gone is "interrupted"). Knows nothing of
torch or training.
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kaiyuan.errors import TuneError

__all__ = ["RunDir", "RunSummary", "find_resumable", "list_runs", "new_run_dir", "write_json_atomic"]

META = "meta.json"


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    """Write JSON via a temporary sibling and a rename: a killed process never leaves half a meta.json."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.") or "run"


@dataclass
class RunDir:
    path: Path

    @property
    def run_id(self) -> str:
        return self.path.name

    @property
    def meta_path(self) -> Path:
        return self.path / META

    @property
    def log_path(self) -> Path:
        return self.path / "log.jsonl"

    @property
    def checkpoints_dir(self) -> Path:
        return self.path / "checkpoints"

    @property
    def adapter_dir(self) -> Path:
        return self.path / "adapter"

    @property
    def adapter_gguf(self) -> Path:
        return self.path / "adapter.gguf"

    def read_meta(self) -> dict[str, Any]:
        try:
            data = json.loads(self.meta_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise TuneError(f"run {self.run_id}: cannot read {self.meta_path}: {exc}") from exc
        if not isinstance(data, dict):
            raise TuneError(f"run {self.run_id}: {self.meta_path} is not a JSON object")
        return data

    def write_meta(self, meta: dict[str, Any]) -> None:
        meta["updated"] = time.time()
        write_json_atomic(self.meta_path, meta)

    def update_meta(self, **changes: Any) -> dict[str, Any]:
        meta = self.read_meta()
        meta.update(changes)
        self.write_meta(meta)
        return meta

    def append_log(self, record: dict[str, Any]) -> None:
        with self.log_path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")

    def checkpoints(self) -> list[Path]:
        """Complete checkpoints, oldest first (a checkpoint is complete once its meta.json exists)."""
        if not self.checkpoints_dir.is_dir():
            return []
        found = [p for p in self.checkpoints_dir.glob("step-*") if (p / META).is_file()]
        return sorted(found, key=lambda p: int(p.name.split("-")[1]))


def new_run_dir(runs_dir: Path, name: str) -> RunDir:
    """A fresh folder for a run of adapter ``name``; the id is the name plus a timestamp."""
    runs_dir.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = f"{_slug(name)}-{stamp}"
    for n in range(100):
        path = runs_dir / (base if n == 0 else f"{base}-{n}")
        try:
            path.mkdir()
        except FileExistsError:
            continue
        return RunDir(path)
    raise TuneError(f"cannot create a run folder under {runs_dir}")


def _pid_alive(pid: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass
class RunSummary:
    """One line of ``kaiyuan tune list``."""

    run_id: str
    name: str
    base: str
    status: str  # running | interrupted | failed | finished
    step: int
    total_steps: int
    eval_before: float | None
    eval_after: float | None
    created: float
    path: Path


def _status(meta: dict[str, Any]) -> str:
    status = str(meta.get("status", "unknown"))
    if status == "running" and not _pid_alive(meta.get("pid")):
        return "interrupted"
    return status


def _eval_loss(meta: dict[str, Any], key: str) -> float | None:
    value = (meta.get("eval") or {}).get(key) or {}
    loss = value.get("loss") if isinstance(value, dict) else None
    return float(loss) if isinstance(loss, int | float) else None


def list_runs(runs_dir: Path) -> list[RunSummary]:
    """Every run with a readable meta.json, newest first."""
    if not runs_dir.is_dir():
        return []
    summaries = []
    for path in runs_dir.iterdir():
        run = RunDir(path)
        if not run.meta_path.is_file():
            continue
        try:
            meta = run.read_meta()
        except TuneError:
            continue
        config = meta.get("config") or {}
        progress = meta.get("progress") or {}
        summaries.append(
            RunSummary(
                run_id=run.run_id,
                name=str(config.get("name", "")),
                base=str((meta.get("base") or {}).get("name", config.get("base", ""))),
                status=_status(meta),
                step=int(progress.get("step", 0)),
                total_steps=int(progress.get("total_steps", 0)),
                eval_before=_eval_loss(meta, "before"),
                eval_after=_eval_loss(meta, "after"),
                created=float(meta.get("created", 0.0)),
                path=path,
            )
        )
    return sorted(summaries, key=lambda s: s.created, reverse=True)


def find_resumable(runs_dir: Path, which: str | None = None) -> RunDir:
    """The run ``which`` (run id or adapter name) to resume, or the newest unfinished run when ``which`` is None."""
    runs = list_runs(runs_dir)
    if which:
        matches = [r for r in runs if which in (r.run_id, r.name) or r.name == f"{which}:latest"]
        if not matches:
            raise TuneError(f"no run named {which!r}; see `kaiyuan tune list`")
        candidates = matches
    else:
        candidates = [r for r in runs if r.status in ("interrupted", "failed")]
        if not candidates:
            raise TuneError("no interrupted run to resume; see `kaiyuan tune list`")
    run = candidates[0]
    if run.status == "finished":
        raise TuneError(f"run {run.run_id} already finished; its adapter is the store model {run.name}")
    if run.status == "running":
        raise TuneError(f"run {run.run_id} is still running (pid alive); stop it before resuming")
    return RunDir(run.path)
