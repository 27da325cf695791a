"""The training loop, nanoGPT order: learning rate, eval/checkpoint, micro-steps, clip, step, zero_grad, log.

Owns the arithmetic of one run: the warm-up + cosine schedule, the token-weighted loss on assistant positions only,
gradient accumulation, evaluation (loss and perplexity). It reads top to bottom in :func:`train`. Files, runs and the
store are handled by the caller through the ``checkpoint`` callback and the ``reporter``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from kaiyuan.tune._batching import Batch, Row, Schedule, pad_batch
from kaiyuan.tune._config import TuneConfig
from kaiyuan.tune._distributed import Distributed
from kaiyuan.tune._model import import_torch
from kaiyuan.tune._render import IGNORE_INDEX

__all__ = ["EvalResult", "Reporter", "StepLog", "batch_loss", "evaluate", "lr_at", "train"]


@dataclass
class EvalResult:
    loss: float  # mean cross-entropy per trained token (nats)
    perplexity: float  # exp(loss)
    tokens: int  # trained tokens evaluated


@dataclass
class StepLog:
    step: int  # optimizer steps completed
    total_steps: int
    loss: float  # mean training loss per trained token over this step
    lr: float
    grad_norm: float
    dt: float  # seconds this step took
    tokens_per_s: float  # real (non-padding) tokens through forward+backward per second, this step
    tokens: int  # real tokens seen since the run (re)started


class Reporter(Protocol):
    def step(self, log: StepLog, *, print_line: bool) -> None: ...

    def note(self, text: str) -> None: ...


def lr_at(step: int, total_steps: int, config: TuneConfig) -> float:
    """Linear warm-up to ``lr``, then cosine decay to ``lr * min_lr_ratio`` at the last step."""
    warmup = int(config.warmup * total_steps)
    if step < warmup:
        return config.lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, total_steps - warmup)
    floor = config.lr * config.min_lr_ratio
    return floor + 0.5 * (config.lr - floor) * (1 + math.cos(math.pi * min(1.0, progress)))


def _tensors(batch: Batch, device: Any) -> dict[str, Any]:
    torch = import_torch()
    ids = torch.tensor(batch.input_ids, device=device)
    docs = torch.tensor(batch.doc_ids, device=device)
    inputs: dict[str, Any] = {
        "input_ids": ids,
        "position_ids": torch.tensor(batch.position_ids, device=device),
        "labels": torch.tensor(batch.labels, device=device),
        "docs": docs,
    }
    if any(doc > 0 for row in batch.doc_ids for doc in row):
        # Rows holding several examples need a block-diagonal causal mask (a token sees earlier tokens of its own
        # example only). It costs SDPA its fast causal path, so rows of one example each never get it.
        n = ids.shape[1]
        causal = torch.ones(n, n, dtype=torch.bool, device=device).tril()
        inputs["attention_mask"] = ((docs[:, :, None] == docs[:, None, :]) & causal)[:, None]
    else:
        inputs["attention_mask"] = (docs >= 0).long() if batch.padded else None
    return inputs


def batch_loss(model: Any, inputs: dict[str, Any]) -> tuple[Any, int]:
    """(sum of token cross-entropies, trained tokens) for one micro-batch.

    The LM head runs only on positions whose next token is trained: prompts are masked anyway, and the head over
    the whole vocabulary is a large part of a small model's compute.
    """
    torch = import_torch()
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    hidden = base.get_decoder()(
        input_ids=inputs["input_ids"],
        attention_mask=inputs["attention_mask"],
        position_ids=inputs["position_ids"],
        use_cache=False,
    ).last_hidden_state
    targets = inputs["labels"][:, 1:]
    # never predict across a packing boundary (the first token of an example is a prompt token anyway)
    same_doc = inputs["docs"][:, 1:] == inputs["docs"][:, :-1]
    keep = (targets != IGNORE_INDEX) & same_doc
    n = int(keep.sum())
    if n == 0:
        return hidden.sum() * 0.0, 0
    logits = base.get_output_embeddings()(hidden[:, :-1][keep]).float()
    return torch.nn.functional.cross_entropy(logits, targets[keep], reduction="sum"), n


def evaluate(
    model: Any,
    rows: Sequence[Row],
    *,
    batch_size: int,
    pad_id: int,
    device: Any,
    autocast: Any,
) -> EvalResult:
    """Mean loss and perplexity over ``rows`` (dropout off, no gradients)."""
    torch = import_torch()
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad(), autocast():
        for start in range(0, len(rows), batch_size):
            inputs = _tensors(pad_batch(rows[start : start + batch_size], pad_id), device)
            loss_sum, n = batch_loss(model, inputs)
            total += float(loss_sum)
            count += n
    if was_training:
        model.train()
    loss = total / max(1, count)
    return EvalResult(loss=loss, perplexity=math.exp(min(loss, 50.0)), tokens=count)


def train(
    model: Any,
    optimizer: Any,
    rows: Sequence[Row],
    schedule: Schedule,
    config: TuneConfig,
    *,
    start_step: int,
    total_steps: int,
    pad_id: int,
    device: Any,
    autocast: Callable[[], Any],
    reporter: Reporter,
    checkpoint: Callable[[int, float], None],
    periodic_eval: Callable[[int], None],
    dist: Distributed | None = None,
) -> float:
    """Run optimizer steps ``start_step .. total_steps - 1``; returns the last step's loss."""
    torch = import_torch()
    dist = dist or Distributed()
    params = [p for p in model.parameters() if p.requires_grad]
    model.train()
    tokens_seen, loss = 0, float("nan")
    for step in range(start_step, total_steps):
        t0 = time.perf_counter()

        # learning rate of this step (warm-up, then cosine)
        lr = lr_at(step, total_steps, config)
        for group in optimizer.param_groups:
            group["lr"] = lr

        # eval and checkpoint happen before the step, so that "step N" means N steps completed
        if step > start_step and config.eval_every and step % config.eval_every == 0:
            periodic_eval(step)
        if step > start_step and config.checkpoint_every and step % config.checkpoint_every == 0:
            checkpoint(step, loss)

        # micro-steps: gradients accumulate; each micro-batch's loss is divided by the trained tokens of the whole
        # step (over all ranks), so every token weighs the same however the tokens fall into micro-batches.
        # With N processes (torchrun), rank r takes every N-th micro-batch of the one seeded sequence.
        batches = [
            pad_batch(
                [
                    rows[i]
                    for i in schedule.micro_batch((step * config.grad_accum + m) * dist.world + dist.rank)
                ],
                pad_id,
            )
            for m in range(config.grad_accum)
        ]
        local_targets = sum(sum(1 for row in b.labels for t in row[1:] if t != IGNORE_INDEX) for b in batches)
        step_targets = dist.sum_int(local_targets)
        loss_total, step_tokens = 0.0, 0
        for batch in batches:
            inputs = _tensors(batch, device)
            with autocast():
                loss_sum, _n = batch_loss(model, inputs)
            (loss_sum / max(1, step_targets)).backward()
            loss_total += float(loss_sum.detach())  # a sync point on GPU; one per micro-batch is cheap
            step_tokens += batch.tokens

        # gradients of all ranks summed (LoRA matrices only), then clip, step, zero_grad
        dist.sum_gradients(params)
        grad_norm = float(torch.nn.utils.clip_grad_norm_(params, config.clip)) if config.clip else 0.0
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

        # one log line
        loss = dist.sum_float(loss_total) / max(1, step_targets)
        step_tokens = dist.sum_int(step_tokens)
        dt = time.perf_counter() - t0
        tokens_seen += step_tokens
        done = step + 1
        log = StepLog(
            done, total_steps, loss, lr, grad_norm, dt, step_tokens / dt if dt > 0 else 0.0, tokens_seen
        )
        reporter.step(log, print_line=done % config.log_every == 0 or done == total_steps)
    return loss
