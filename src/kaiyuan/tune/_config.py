"""The fine-tuning run's configuration: one dataclass, one commented line per field, saved in every meta.json.

Owns defaults and checks of values a user can give (CLI flags map one-to-one onto fields). ``--resume`` reads the
saved config back with ``from_dict``, so a resumed run needs no flags. Knows nothing of torch or the store.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from kaiyuan.errors import ConfigError

__all__ = ["DEFAULT_TARGET_MODULES", "TuneConfig"]

# The linear layers LoRA adapts by default: attention and MLP projections of llama/qwen-style blocks.
DEFAULT_TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass
class TuneConfig:
    """A LoRA SFT run. One commented line per field: meaning (unit)."""

    base: str  # store model to adapt (name[:tag])
    data: str  # training data file, JSONL (chat, prompt/completion, Alpaca or ShareGPT)
    name: str  # store name of the adapter model the run registers when it finishes
    eval_data: str | None = None  # held-out JSONL for eval loss; None: split off eval_split of data
    eval_split: float = 0.1  # fraction of data held out for eval when eval_data is None (0: no eval)
    data_format: str | None = (
        None  # force chat | prompt | alpaca | sharegpt; None: detect from the first line
    )
    epochs: float = 1.0  # passes over the training data (ignored when max_steps is set)
    max_steps: int | None = None  # optimizer steps to run; None: derived from epochs
    lr: float = 2e-4  # peak learning rate (AdamW)
    warmup: float = 0.05  # linear warm-up, as a fraction of the steps
    min_lr_ratio: float = 0.1  # cosine decay ends at lr * min_lr_ratio
    weight_decay: float = 0.0  # AdamW weight decay on LoRA matrices
    rank: int = 16  # LoRA rank r (count)
    alpha: float = 32.0  # LoRA alpha; updates are scaled by alpha / rank
    dropout: float = 0.05  # dropout on the LoRA input during training (probability)
    target_modules: list[str] = field(default_factory=lambda: list(DEFAULT_TARGET_MODULES))  # layers to adapt
    seq_len: int = 1024  # longest training sequence (tokens); longer examples are truncated and counted
    batch: int = 4  # sequences per micro-batch (count)
    grad_accum: int = 1  # micro-batches per optimizer step (count)
    clip: float = 1.0  # gradient norm clipping (0: off)
    packing: bool = False  # pack several examples into each seq_len row (each attends only to itself)
    group_by_length: bool = True  # batch rows of similar length together (less padding); see Schedule
    seed: int = 0  # seeds data order, eval split and LoRA init
    eval_every: int = 0  # evaluate every N steps in addition to before and after (0: only before/after)
    eval_max_examples: int = 200  # eval examples used at most (count)
    checkpoint_every: int = 50  # save a resumable checkpoint every N steps (0: only at the end)
    keep_checkpoints: int = 2  # checkpoints kept on disk, newest first (count)
    log_every: int = 10  # print one log line every N steps
    device: str = "auto"  # auto | cpu | cuda | cuda:N; auto picks CUDA when present
    threads: int | None = None  # torch CPU threads; None: kaiyuan's threads setting

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ConfigError naming the flag whose value cannot work."""
        checks: list[tuple[bool, str]] = [
            (self.epochs > 0, "--epochs must be > 0"),
            (self.max_steps is None or self.max_steps > 0, "--max-steps must be > 0"),
            (self.lr > 0, "--lr must be > 0"),
            (0 <= self.warmup < 1, "warmup must be a fraction in [0, 1)"),
            (0 <= self.min_lr_ratio <= 1, "min_lr_ratio must be in [0, 1]"),
            (self.rank > 0, "--rank must be > 0"),
            (self.alpha > 0, "--alpha must be > 0"),
            (0 <= self.dropout < 1, "--dropout must be in [0, 1)"),
            (self.seq_len >= 16, "--seq-len must be at least 16"),
            (self.batch > 0, "--batch must be > 0"),
            (self.grad_accum > 0, "--grad-accum must be > 0"),
            (self.clip >= 0, "--clip must be >= 0"),
            (0 <= self.eval_split < 1, "--eval-split must be in [0, 1)"),
            (self.eval_every >= 0 and self.checkpoint_every >= 0, "eval/checkpoint intervals must be >= 0"),
            (self.keep_checkpoints >= 1, "keep_checkpoints must be >= 1"),
            (self.log_every >= 1, "log_every must be >= 1"),
            (bool(self.target_modules), "target_modules must not be empty"),
            (self.threads is None or self.threads >= 1, "--threads must be >= 1"),
            (
                self.data_format in (None, "chat", "prompt", "alpaca", "sharegpt"),
                "--format is not a known format",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TuneConfig:
        """Rebuild a saved config; keys this version does not know are ignored (forward compatibility)."""
        known = {f.name for f in dataclasses.fields(cls)}
        # runs saved before group_by_length existed batched in plain shuffled order; a resume must do the same
        data = {"group_by_length": False, **data}
        return cls(**{k: v for k, v in data.items() if k in known})
