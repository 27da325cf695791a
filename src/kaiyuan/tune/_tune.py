"""A fine-tuning run from start to finish: check, prepare, train, evaluate, export, register.

Owns the order of a run, which is what makes it safe: everything that can fail cheaply (BASE exists, NEW is free,
every data line is valid, the license policy allows the derivative) is checked before the model is loaded, and
the store model is registered only after the adapter has been trained, evaluated and written as GGUF. It also owns
``--resume``: the run's meta.json holds the resolved config, so resuming needs no flags, and it refuses to go on
when the base model or the data changed since the run started (their digests are recorded).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from kaiyuan.config import Settings
from kaiyuan.errors import KaiyuanError, TuneError
from kaiyuan.tune._batching import Schedule, rows_from_examples
from kaiyuan.tune._config import TuneConfig
from kaiyuan.tune._data import Conversation, DataFile, message_from_dict, read_data_file
from kaiyuan.tune._distributed import Distributed
from kaiyuan.tune._lineage import (
    BaseRef,
    check_policy,
    derivative_record,
    ensure_name_free,
    register_adapter,
    resolve_base,
)
from kaiyuan.tune._loop import EvalResult, evaluate, train
from kaiyuan.tune._render import THINK_CLOSE, THINK_OPEN, PreparedData, prepare_examples
from kaiyuan.tune._runs import RunDir, find_resumable, new_run_dir

__all__ = ["TuneResult", "resume_tune", "run_tune"]

log = logging.getLogger(__name__)


@dataclass
class TuneResult:
    run_id: str
    run_dir: Path
    model: str  # the registered store model (name:tag)
    adapter_gguf: Path  # GGUF LoRA adapter in the run folder
    steps: int  # optimizer steps completed
    eval_before: EvalResult | None
    eval_after: EvalResult | None
    truncated: int  # training examples cut to seq_len
    tokens_per_s: float  # mean training throughput of this process (real tokens per second)


def _eval_json(result: EvalResult | None) -> dict[str, Any] | None:
    if result is None:
        return None
    return {"loss": result.loss, "perplexity": result.perplexity, "tokens": result.tokens}


def _eval_from_json(data: Any) -> EvalResult | None:
    if not isinstance(data, dict) or "loss" not in data:
        return None
    return EvalResult(float(data["loss"]), float(data["perplexity"]), int(data.get("tokens", 0)))


def _split(data: DataFile, config: TuneConfig) -> tuple[list[Conversation], list[Conversation]]:
    """(train, eval) conversations: the eval file if given, else a seeded ``eval_split`` of the data."""
    conversations = list(data.conversations)
    if config.eval_data:
        eval_file = read_data_file(Path(config.eval_data), expected_format=config.data_format)
        return conversations, eval_file.conversations[: config.eval_max_examples]
    if config.eval_split <= 0 or len(conversations) < 2:
        return conversations, []
    order = list(range(len(conversations)))
    random.Random(config.seed).shuffle(order)
    n_eval = min(config.eval_max_examples, max(1, round(len(conversations) * config.eval_split)))
    held = set(order[:n_eval])
    return [c for i, c in enumerate(conversations) if i not in held], [conversations[i] for i in sorted(held)]


def _data_facts(config: TuneConfig) -> tuple[DataFile, list[dict[str, str]]]:
    train_file = read_data_file(Path(config.data), expected_format=config.data_format)
    datasets = [{"path": str(Path(config.data).resolve()), "digest": train_file.digest}]
    if config.eval_data:
        eval_file = read_data_file(Path(config.eval_data), expected_format=config.data_format)
        datasets.append({"path": str(Path(config.eval_data).resolve()), "digest": eval_file.digest})
    return train_file, datasets


def run_tune(config: TuneConfig, *, settings: Settings, console: Console | None = None) -> TuneResult:
    """Start a new run: validate everything cheap first, then train, export and register NEW."""
    dist = Distributed.from_env()
    console = _console(console, dist)
    # data paths are recorded absolute, so that --resume works from any directory
    config.data = str(Path(config.data).expanduser().resolve())
    if config.eval_data:
        config.eval_data = str(Path(config.eval_data).expanduser().resolve())
    base = resolve_base(settings, config.base)
    ensure_name_free(settings, config.name)
    train_file, datasets = _data_facts(config)  # every line validated before anything heavy happens
    derivative = derivative_record(base, config.name, datasets)
    terms = check_policy(settings, derivative)  # LicenseDenied stops the run here, before training
    if not dist.is_main:  # rank 0 of a torchrun launch creates the run; the others follow it
        follower = _Follower(settings.runs_dir / dist.share(None))
        return _execute(follower, config, base, train_file, settings, console, resume=False, dist=dist)
    run = new_run_dir(settings.runs_dir, config.name)
    meta: dict[str, Any] = {
        "run_id": run.run_id,
        "status": "preparing",
        "created": time.time(),
        "pid": os.getpid(),
        "config": config.to_dict(),
        "base": {"name": base.name, "digest": base.digest, "path": str(base.path)},
        "data": {"format": train_file.format, "examples": len(train_file.conversations), "files": datasets},
        "lineage": derivative["lineage"],
        "license": derivative["license"],
        "license_terms": terms,
        "progress": {"step": 0, "total_steps": 0},
        "eval": {},
    }
    run.write_meta(meta)
    dist.share(run.run_id)
    console.print(f"run [bold]{run.run_id}[/] in {run.path}", highlight=False)
    return _execute(run, config, base, train_file, settings, console, resume=False, dist=dist)


def resume_tune(which: str | None, *, settings: Settings, console: Console | None = None) -> TuneResult:
    """Resume run ``which`` (run id or adapter name; None: the newest interrupted run) from its last checkpoint."""
    dist = Distributed.from_env()
    console = _console(console, dist)
    found = find_resumable(settings.runs_dir, which) if dist.is_main else None
    run_id = dist.share(found.run_id if found else None)
    run: RunDir = found if found is not None else _Follower(settings.runs_dir / run_id)
    meta = run.read_meta()
    config = TuneConfig.from_dict(meta["config"])
    base = resolve_base(settings, config.base)
    recorded = meta.get("base", {}).get("digest")
    if recorded and base.digest and recorded != base.digest:
        raise TuneError(
            f"base model {base.name} changed since run {run.run_id} started; start a new run instead"
        )
    train_file, datasets = _data_facts(config)
    recorded_files = {d["path"]: d["digest"] for d in meta.get("data", {}).get("files", [])}
    for d in datasets:
        if recorded_files.get(d["path"], d["digest"]) != d["digest"]:
            raise TuneError(
                f"data file {d['path']} changed since run {run.run_id} started; start a new run instead"
            )
    ensure_name_free(settings, config.name)
    check_policy(settings, derivative_record(base, config.name, datasets))
    console.print(f"resuming run [bold]{run.run_id}[/]", highlight=False)
    return _execute(run, config, base, train_file, settings, console, resume=True, dist=dist)


class _Follower(RunDir):
    """The run as seen by ranks other than 0 of a torchrun launch: readable, never written."""

    def write_meta(self, meta: dict[str, Any]) -> None:
        pass

    def append_log(self, record: dict[str, Any]) -> None:
        pass


def _console(console: Console | None, dist: Distributed) -> Console:
    if not dist.is_main:
        return Console(stderr=True, quiet=True)
    return console or Console(stderr=True)


def _prepare(
    conversations: list[Conversation], loaded: Any, template: Any, config: TuneConfig
) -> PreparedData:
    from kaiyuan.tune._model import tokenize_with_offsets

    def render(messages: list[dict[str, Any]], generation_prompt: bool, thinking: bool) -> str:
        extra = {"enable_thinking": True} if thinking else {}
        return str(
            template.render(
                [message_from_dict(m) for m in messages], add_generation_prompt=generation_prompt, **extra
            )
        )

    dialect = template.dialect
    think = (
        (dialect.reasoning_start, dialect.reasoning_end)
        if dialect.has_reasoning
        else (THINK_OPEN, THINK_CLOSE)
    )
    return prepare_examples(
        conversations,
        render,
        lambda text: tokenize_with_offsets(loaded.tokenizer, text),
        config.seq_len,
        think,
    )


def _adapter_metadata(name: str, base: BaseRef) -> dict[str, str | int | float]:
    """general.* keys of the adapter GGUF: its name, the base it needs, and the base's license."""
    meta: dict[str, str | int | float] = {
        "general.name": name,
        "general.base_model.count": 1,
        "general.base_model.0.name": base.name,
    }
    license_id = (base.record.get("license") or {}).get("id")
    if isinstance(license_id, str) and license_id:
        meta["general.license"] = license_id
    return meta


def _execute(
    run: RunDir,
    config: TuneConfig,
    base: BaseRef,
    train_file: DataFile,
    settings: Settings,
    console: Console,
    *,
    resume: bool,
    dist: Distributed,
) -> TuneResult:
    meta = run.read_meta()
    meta.update(status="running", pid=os.getpid(), world_size=dist.world)
    run.write_meta(meta)
    try:
        return _train_and_register(
            run, meta, config, base, train_file, settings, console, resume=resume, dist=dist
        )
    except KeyboardInterrupt:
        run.update_meta(status="interrupted")
        console.print(f"interrupted; resume with: kaiyuan tune --resume {run.run_id}", highlight=False)
        raise
    except KaiyuanError as exc:
        run.update_meta(status="failed", error=exc.message)
        raise
    except Exception as exc:
        run.update_meta(status="failed", error=f"{type(exc).__name__}: {exc}")
        raise TuneError(f"run {run.run_id} failed: {type(exc).__name__}: {exc}") from exc
    finally:
        dist.close()


@dataclass
class _Session:
    """What the steps of one run share once the base is loaded: torch, the device, the base (with LoRA attached
    after ``_attach_lora``) and its optimizer."""

    torch: Any
    device: Any
    dtype: Any
    loaded: Any  # kaiyuan.tune._model.LoadedBase
    model: Any = None  # the base with LoRA layers
    optimizer: Any = None

    def autocast(self) -> Any:
        if self.device.type == "cuda":
            return self.torch.autocast("cuda", dtype=self.dtype)
        return contextlib.nullcontext()


@dataclass
class _TrainingData:
    """The examples rendered, tokenized and packed into rows, and the step schedule over them."""

    prepared: PreparedData
    eval_examples: int
    rows: list[Any]
    eval_rows: list[Any]
    schedule: Schedule
    total_steps: int


def _load_base(
    config: TuneConfig, base: BaseRef, settings: Settings, console: Console, dist: Distributed
) -> _Session:
    """Step 1: torch on the chosen device (one GPU per process under torchrun), the base model and tokenizer."""
    from kaiyuan.tune._model import import_torch, load_base, pick_device

    torch = import_torch()
    torch.set_num_threads(config.threads or settings.threads)
    device, dtype = pick_device(config.device)
    if dist.world > 1 and device.type == "cuda":
        device = torch.device("cuda", dist.local_rank)  # one GPU per process
    console.print(f"loading {base.name} on {device} ({str(dtype).removeprefix('torch.')})", highlight=False)
    return _Session(torch, device, dtype, load_base(base.path, device, dtype))


def _training_data(
    train_file: DataFile, session: _Session, config: TuneConfig, console: Console, dist: Distributed
) -> _TrainingData:
    """Step 2: render with the base's own chat template, tokenize, pack into rows, and count the steps."""
    from kaiyuan.chat import ChatTemplate

    loaded = session.loaded
    template = ChatTemplate(loaded.chat_template, bos_token=loaded.bos_token, eos_token=loaded.eos_token)
    train_convs, eval_convs = _split(train_file, config)
    prepared = _prepare(train_convs, loaded, template, config)
    eval_prepared = _prepare(eval_convs, loaded, template, config) if eval_convs else None
    if not prepared.examples:
        raise TuneError("no training example has an assistant token left to train on; raise --seq-len")
    if prepared.truncated or prepared.dropped:
        console.print(
            f"[yellow]{prepared.truncated} example(s) longer than --seq-len {config.seq_len} were truncated"
            + (f", {prepared.dropped} dropped (nothing trainable left)" if prepared.dropped else "")
            + "[/]",
            highlight=False,
        )
    rows = rows_from_examples(prepared.examples, config.seq_len, packing=config.packing, seed=config.seed)
    eval_rows = (
        rows_from_examples(eval_prepared.examples, config.seq_len, packing=config.packing, seed=config.seed)
        if eval_prepared
        else []
    )
    lengths = [len(row.input_ids) for row in rows] if config.group_by_length else None
    schedule = Schedule(n_rows=len(rows), batch_size=config.batch, seed=config.seed, lengths=lengths)
    per_step = config.grad_accum * dist.world  # micro-batches one optimizer step consumes, all ranks together
    total_steps = config.max_steps or max(1, math.ceil(schedule.batches_per_epoch * config.epochs / per_step))
    console.print(
        f"{len(prepared.examples)} training examples ({prepared.trained_tokens:,} trained of {prepared.tokens:,} "
        f"tokens) in {len(rows)} rows, {len(eval_rows)} eval rows, {total_steps} steps",
        highlight=False,
    )
    eval_examples = len(eval_prepared.examples) if eval_prepared else 0
    return _TrainingData(prepared, eval_examples, rows, eval_rows, schedule, total_steps)


def _attach_lora(
    session: _Session, config: TuneConfig, run: RunDir, console: Console, *, resume: bool
) -> int:
    """Step 3: LoRA layers and the optimizer; on ``--resume`` both come back from the last checkpoint. Returns the
    step training starts at."""
    from kaiyuan.tune._checkpoint import load_checkpoint
    from kaiyuan.tune._model import attach_lora

    session.model = attach_lora(
        session.loaded.model,
        rank=config.rank,
        alpha=config.alpha,
        dropout=config.dropout,
        target_modules=config.target_modules,
        seed=config.seed,
    )
    trainable = [p for p in session.model.parameters() if p.requires_grad]
    session.optimizer = session.torch.optim.AdamW(trainable, lr=config.lr, weight_decay=config.weight_decay)
    if not (resume and run.checkpoints()):
        return 0
    last = run.checkpoints()[-1]
    load_checkpoint(last, session.model, session.optimizer)
    console.print(f"resumed from {last.name}", highlight=False)
    return int(last.name.split("-")[1])


def _evaluate(session: _Session, data: _TrainingData, config: TuneConfig) -> EvalResult | None:
    """Loss and perplexity on the held-out rows (None without eval data)."""
    if not data.eval_rows:
        return None
    return evaluate(
        session.model,
        data.eval_rows,
        batch_size=config.batch,
        pad_id=session.loaded.pad_id,
        device=session.device,
        autocast=session.autocast,
    )


def _record_start(
    run: RunDir,
    meta: dict[str, Any],
    session: _Session,
    data: _TrainingData,
    config: TuneConfig,
    start_step: int,
    console: Console,
) -> EvalResult | None:
    """Step 4: meta.json gets the device, the example counts and the eval before training (measured once: a
    resumed run keeps the first measurement). Returns that eval."""
    prepared = data.prepared
    meta["progress"] = {"step": start_step, "total_steps": data.total_steps}
    meta["device"] = str(session.device)
    meta["examples"] = {
        "train": len(prepared.examples),
        "eval": data.eval_examples,
        "truncated": prepared.truncated,
        "dropped": prepared.dropped,
        "trained_tokens": prepared.trained_tokens,
    }
    eval_before = _eval_from_json(meta.get("eval", {}).get("before"))
    if eval_before is None and start_step == 0:
        eval_before = _evaluate(session, data, config)
        meta.setdefault("eval", {})["before"] = _eval_json(eval_before)
        if eval_before:
            console.print(
                f"eval before: loss {eval_before.loss:.4f}, perplexity {eval_before.perplexity:.2f}"
            )
    run.write_meta(meta)
    return eval_before


def _train_steps(
    run: RunDir,
    session: _Session,
    data: _TrainingData,
    config: TuneConfig,
    start_step: int,
    console: Console,
    dist: Distributed,
) -> tuple[float, float]:
    """Step 5: the training loop with checkpoints (rank 0) and periodic evals. Returns (last loss, tokens/s)."""
    from kaiyuan.tune._checkpoint import save_checkpoint
    from kaiyuan.tune._progress import RunReporter

    total_steps = data.total_steps

    def checkpoint(step: int, loss: float) -> None:
        if not dist.is_main:
            return
        state = {"loss": loss, "total_steps": total_steps}
        save_checkpoint(run, step, session.model, session.optimizer, state, config.keep_checkpoints)
        run.update_meta(progress={"step": step, "total_steps": total_steps, "loss": loss})

    t_start = time.perf_counter()
    with RunReporter(run, console, total_steps=total_steps, start_step=start_step) as reporter:

        def periodic_eval(step: int) -> None:
            result = _evaluate(session, data, config)
            if result:
                run.append_log({"event": "eval", "step": step, **(_eval_json(result) or {})})
                reporter.note(
                    f"eval at step {step}: loss {result.loss:.4f}, perplexity {result.perplexity:.2f}"
                )

        last_loss = train(
            session.model,
            session.optimizer,
            data.rows,
            data.schedule,
            config,
            start_step=start_step,
            total_steps=total_steps,
            pad_id=session.loaded.pad_id,
            device=session.device,
            autocast=session.autocast,
            reporter=reporter,
            checkpoint=checkpoint,
            periodic_eval=periodic_eval,
            dist=dist,
        )
    elapsed = time.perf_counter() - t_start
    return last_loss, (reporter.tokens / elapsed if elapsed > 0 else 0.0)


def _export_and_register(
    run: RunDir,
    session: _Session,
    config: TuneConfig,
    base: BaseRef,
    settings: Settings,
    total_steps: int,
    last_loss: float,
    datasets: list[dict[str, str]],
) -> str:
    """Step 6 (rank 0): the final checkpoint, the PEFT adapter, its GGUF, and the store model. Returns its name."""
    from kaiyuan.export import convert_peft_adapter
    from kaiyuan.tune._checkpoint import save_adapter, save_checkpoint

    save_checkpoint(
        run,
        total_steps,
        session.model,
        session.optimizer,
        {"loss": last_loss, "total_steps": total_steps},
        config.keep_checkpoints,
    )
    save_adapter(session.model, run.adapter_dir)
    convert_peft_adapter(
        run.adapter_dir,
        base.path,
        run.adapter_gguf,
        metadata=_adapter_metadata(config.name, base),
        architecture=session.loaded.architecture,
        hf_config=session.loaded.model.config.to_dict() if base.path.is_dir() else None,
    )
    derivative = derivative_record(base, config.name, datasets)
    return register_adapter(settings, config.name, base, run.adapter_gguf, derivative)


def _train_and_register(
    run: RunDir,
    meta: dict[str, Any],
    config: TuneConfig,
    base: BaseRef,
    train_file: DataFile,
    settings: Settings,
    console: Console,
    *,
    resume: bool,
    dist: Distributed,
) -> TuneResult:
    """The heavy part of a run, one named step after another (see each step's docstring)."""
    session = _load_base(config, base, settings, console, dist)
    data = _training_data(train_file, session, config, console, dist)
    start_step = _attach_lora(session, config, run, console, resume=resume)
    eval_before = _record_start(run, meta, session, data, config, start_step, console)
    last_loss, tokens_per_s = _train_steps(run, session, data, config, start_step, console, dist)
    eval_after = _evaluate(session, data, config)
    if eval_after:
        console.print(f"eval after: loss {eval_after.loss:.4f}, perplexity {eval_after.perplexity:.2f}")
    total_steps = data.total_steps
    registered = ""
    if dist.is_main:  # rank 0 writes the adapter and registers it
        files = meta["data"]["files"]
        registered = _export_and_register(run, session, config, base, settings, total_steps, last_loss, files)
        meta = run.read_meta()
        meta["eval"]["after"] = _eval_json(eval_after)
        meta.update(
            status="finished",
            progress={"step": total_steps, "total_steps": total_steps, "loss": last_loss},
            registered=registered,
            adapter={"peft": str(run.adapter_dir), "gguf": str(run.adapter_gguf)},
            tokens_per_s=tokens_per_s,
        )
        run.write_meta(meta)
        console.print(f"registered [bold]{registered}[/] (adapter {run.adapter_gguf})", highlight=False)
    return TuneResult(
        run_id=run.run_id,
        run_dir=run.path,
        model=registered,
        adapter_gguf=run.adapter_gguf,
        steps=total_steps,
        eval_before=eval_before,
        eval_after=eval_after,
        truncated=data.prepared.truncated,
        tokens_per_s=tokens_per_s,
    )
