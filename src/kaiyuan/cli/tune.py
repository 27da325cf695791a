"""``kaiyuan tune``: fine-tune a store model with LoRA (``kaiyuan tune BASE --data FILE --name NEW``), resume an
interrupted run (``kaiyuan tune --resume [RUN]``) and list runs (``kaiyuan tune list``).

``tune`` is both a command with arguments and a group with a ``list`` subcommand: :class:`_TuneGroup` sends any
argument list that does not start with a subcommand name to the hidden ``train`` command, so BASE can never be
mistaken for a subcommand and vice versa. Training itself is ``kaiyuan.tune``'s; torch is imported only there.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import click

__all__ = ["tune_group"]

_USAGE = """\
Usage: kaiyuan tune BASE --data FILE --name NEW [OPTIONS]
       kaiyuan tune --resume [RUN]
       kaiyuan tune list [--json]
"""


class _TuneGroup(click.Group):
    """A group whose default command is ``train``: ``kaiyuan tune smollm2 --data d.jsonl --name x`` trains."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if not args or args[0] not in self.commands:
            args = ["train", *args]
        return super().parse_args(ctx, args)


class _TrainCommand(click.Command):
    def format_usage(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        formatter.write(_USAGE)


@click.group(cls=_TuneGroup, context_settings={"help_option_names": ["-h", "--help"]})
def tune_group() -> None:
    """Fine-tune a model with LoRA, list runs."""


@tune_group.command(
    "train",
    cls=_TrainCommand,
    hidden=True,
    epilog="Runs live in $KAIYUAN_HOME/runs; `kaiyuan tune list` shows them. "
    "Export the result with `kaiyuan export NEW --format gguf-lora` or `--merge`.",
)
@click.argument("base", required=False)
@click.option(
    "--data", "data", type=click.Path(dir_okay=False, path_type=Path), help="Training data (JSONL)."
)
@click.option("--name", "name", help="Store name of the adapter model to create.")
@click.option(
    "--eval", "eval_data", type=click.Path(dir_okay=False, path_type=Path), help="Held-out eval JSONL."
)
@click.option(
    "--eval-split", type=float, default=0.1, show_default=True, help="Fraction held out without --eval."
)
@click.option(
    "--format",
    "data_format",
    type=click.Choice(["chat", "prompt", "alpaca", "sharegpt"]),
    help="Force the format.",
)
@click.option("--epochs", type=float, default=1.0, show_default=True, help="Passes over the data.")
@click.option("--max-steps", type=int, help="Optimizer steps (overrides --epochs).")
@click.option("--lr", type=float, default=2e-4, show_default=True, help="Peak learning rate.")
@click.option("--warmup", type=float, default=0.05, show_default=True, help="Warm-up fraction of the steps.")
@click.option("--rank", type=int, default=16, show_default=True, help="LoRA rank.")
@click.option("--alpha", type=float, default=32.0, show_default=True, help="LoRA alpha (scale = alpha/rank).")
@click.option("--dropout", type=float, default=0.05, show_default=True, help="LoRA dropout.")
@click.option("--target-modules", help="Comma-separated layer names to adapt (default: attention + MLP).")
@click.option("--seq-len", type=int, default=1024, show_default=True, help="Longest sequence (tokens).")
@click.option("--batch", type=int, default=4, show_default=True, help="Sequences per micro-batch.")
@click.option("--grad-accum", type=int, default=1, show_default=True, help="Micro-batches per step.")
@click.option("--packing/--no-packing", default=False, show_default=True, help="Pack examples into rows.")
@click.option(
    "--group-by-length/--no-group-by-length",
    default=True,
    show_default=True,
    help="Batch examples of similar length together (less padding, faster on uneven data).",
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--eval-every", type=int, default=0, show_default=True, help="Extra evals every N steps (0: off)."
)
@click.option("--checkpoint-every", type=int, default=50, show_default=True, help="Checkpoint every N steps.")
@click.option("--log-every", type=int, default=10, show_default=True, help="A log line every N steps.")
@click.option("--device", default="auto", show_default=True, help="auto | cpu | cuda | cuda:N.")
@click.option("--threads", type=int, help="CPU threads for torch (default: kaiyuan's threads setting).")
@click.option(
    "--resume",
    "resume",
    is_flag=False,
    flag_value="",
    default=None,
    metavar="[RUN]",
    help="Resume the newest interrupted run (or RUN: run id or adapter name) from its last checkpoint.",
)
def train_command(base: str | None, resume: str | None, **options: Any) -> None:
    """Fine-tune BASE on --data with LoRA and register the adapter as store model --name."""
    from kaiyuan.config import load_settings
    from kaiyuan.tune import TuneConfig, resume_tune, run_tune

    settings = load_settings()
    if resume is not None:
        given = [k for k in ("data", "name") if options.get(k)]
        if base or given:
            raise click.UsageError("--resume takes no BASE, --data or --name: the run's meta.json has them")
        result = resume_tune(resume or None, settings=settings)
    else:
        missing = [
            flag
            for flag, value in (("BASE", base), ("--data", options["data"]), ("--name", options["name"]))
            if not value
        ]
        if missing:
            raise click.UsageError(f"missing {', '.join(missing)} (see `kaiyuan tune --help`)")
        targets = options.pop("target_modules")
        eval_data = options.pop("eval_data")
        fields: dict[str, Any] = {
            "base": str(base),
            "data": str(options.pop("data")),
            "name": str(options.pop("name")),
            "eval_data": str(eval_data) if eval_data else None,
            **options,
        }
        if targets:
            fields["target_modules"] = [t.strip() for t in targets.split(",") if t.strip()]
        config = TuneConfig(**fields)
        result = run_tune(config, settings=settings)
    if not result.model:  # a non-zero rank of a torchrun launch: rank 0 reports
        return
    before = f"{result.eval_before.loss:.4f}" if result.eval_before else "-"
    after = f"{result.eval_after.loss:.4f}" if result.eval_after else "-"
    click.echo(
        f"{result.model}: {result.steps} steps, eval loss {before} -> {after}, "
        f"{result.tokens_per_s:,.0f} tok/s; run {result.run_id}"
    )


@tune_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def list_command(as_json: bool) -> None:
    """List fine-tuning runs, newest first."""
    from kaiyuan.config import load_settings
    from kaiyuan.tune import list_runs

    runs = list_runs(load_settings().runs_dir)
    if as_json:
        rows = [
            {
                "run_id": r.run_id,
                "name": r.name,
                "base": r.base,
                "status": r.status,
                "step": r.step,
                "total_steps": r.total_steps,
                "eval_loss_before": r.eval_before,
                "eval_loss_after": r.eval_after,
                "created": r.created,
                "path": str(r.path),
            }
            for r in runs
        ]
        click.echo(json.dumps(rows, indent=2))
        return
    if not runs:
        click.echo("no fine-tuning runs yet; start one with `kaiyuan tune BASE --data FILE --name NEW`")
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(box=None, pad_edge=False)
    for column in ("RUN", "MODEL", "BASE", "STATUS", "STEP", "EVAL LOSS", "CREATED"):
        table.add_column(column)
    for r in runs:
        evals = " -> ".join(f"{v:.4f}" for v in (r.eval_before, r.eval_after) if v is not None) or "-"
        created = time.strftime("%Y-%m-%d %H:%M", time.localtime(r.created)) if r.created else "-"
        table.add_row(r.run_id, r.name, r.base, r.status, f"{r.step}/{r.total_steps}", evals, created)
    Console(width=200).print(table)
