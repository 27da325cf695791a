"""The training loop's arithmetic on a tiny random llama (no files): the lr schedule, packed rows giving exactly the
loss of the same examples unpacked (positions restart, attention never crosses examples), and a few steps of
train() lowering the loss."""

from __future__ import annotations

import contextlib
import itertools
from typing import Any

import pytest

from kaiyuan.tune import IGNORE_INDEX, TokenizedExample, TuneConfig
from kaiyuan.tune._batching import Schedule, pad_batch, rows_from_examples
from kaiyuan.tune._loop import StepLog, _tensors, batch_loss, lr_at, train
from tests.tune.models import needs_tune


def _config(**changes: Any) -> TuneConfig:
    return TuneConfig(base="b", data="d", name="n", **changes)


def test_lr_schedule_warms_up_then_decays_to_the_floor() -> None:
    config = _config(lr=1e-3, warmup=0.1, min_lr_ratio=0.1)
    lrs = [lr_at(step, 100, config) for step in range(100)]
    assert lrs[0] == pytest.approx(1e-4) and lrs[9] == pytest.approx(1e-3)
    assert all(a >= b for a, b in itertools.pairwise(lrs[10:]))
    assert lrs[-1] == pytest.approx(1e-4, rel=0.01)


def _tiny_model() -> Any:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=128,
    )  # fmt: skip
    return LlamaForCausalLM(config).eval()


def _examples() -> list[TokenizedExample]:
    out = []
    for i, n in enumerate([9, 14, 6, 11]):
        ids = [(7 * i + 3 * j) % 60 + 2 for j in range(n)]
        labels = [IGNORE_INDEX] * 3 + ids[3:]  # a 3-token "prompt", then trained tokens
        out.append(TokenizedExample(input_ids=ids, labels=labels, line=i + 1))
    return out


def test_packed_rows_give_the_unpacked_loss() -> None:
    needs_tune()
    import torch

    model = _tiny_model()
    examples = _examples()
    with torch.no_grad():
        total, count = 0.0, 0
        for row in rows_from_examples(examples, 64, packing=False):
            loss, n = batch_loss(model, _tensors(pad_batch([row], 0), "cpu"))
            total, count = total + float(loss), count + n
        packed_rows = rows_from_examples(examples, 64, packing=True, seed=3)
        assert len(packed_rows) == 1
        ploss, pcount = batch_loss(model, _tensors(pad_batch(packed_rows, 0), "cpu"))
        padded_loss, padded_count = batch_loss(
            model,
            _tensors(pad_batch(rows_from_examples(examples, 64, packing=False), 0), "cpu"),
        )
    assert pcount == count == padded_count == sum(e.trained_tokens for e in examples)
    assert float(ploss) == pytest.approx(total, rel=1e-5)
    assert float(padded_loss) == pytest.approx(total, rel=1e-5)


def test_the_block_mask_is_used_only_when_a_row_holds_several_examples() -> None:
    needs_tune()
    examples = _examples()
    one_each = _tensors(pad_batch(rows_from_examples(examples[:1], 64, packing=True), 0), "cpu")
    assert one_each["attention_mask"] is None  # SDPA keeps its fast causal path
    packed = _tensors(pad_batch(rows_from_examples(examples, 64, packing=True), 0), "cpu")
    n = len(packed["input_ids"][0])
    assert tuple(packed["attention_mask"].shape) == (1, 1, n, n)


class _Reporter:
    def __init__(self) -> None:
        self.logs: list[StepLog] = []

    def step(self, log: StepLog, *, print_line: bool) -> None:
        self.logs.append(log)

    def note(self, text: str) -> None:
        pass


def test_a_few_steps_lower_the_loss_and_checkpoint_on_schedule() -> None:
    needs_tune()
    import torch

    from kaiyuan.tune._model import attach_lora

    model = attach_lora(
        _tiny_model(), rank=4, alpha=8, dropout=0.0, target_modules=["q_proj", "v_proj"], seed=0
    )
    config = _config(lr=5e-2, warmup=0.0, batch=2, grad_accum=2, checkpoint_every=3, seq_len=64)
    rows = rows_from_examples(_examples(), 64, packing=False)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=config.lr)
    reporter, saved = _Reporter(), []
    train(
        model, optimizer, rows, Schedule(len(rows), 2, seed=0), config,
        start_step=0, total_steps=8, pad_id=0, device="cpu", autocast=contextlib.nullcontext,
        reporter=reporter, checkpoint=lambda step, loss: saved.append(step), periodic_eval=lambda step: None,
    )  # fmt: skip
    assert [log.step for log in reporter.logs] == list(range(1, 9))
    assert reporter.logs[-1].loss < reporter.logs[0].loss
    assert saved == [3, 6]
