"""``kaiyuan eval MODEL [--text FILE | --chat FILE.jsonl] [--against REF]``: perplexity, the cost against a
reference, or a tuned model on held-out chats, measured.

Owns the command's options, its progress bar and how the figures are printed; the work is
``kaiyuan.eval.evaluate`` / ``evaluate_chats``, which also record the result on MODEL's manifest (``kaiyuan show``
lists it).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import click

__all__ = ["eval_command"]


def _rows(result: object) -> list[tuple[str, str]]:
    from kaiyuan.eval import EvalResult

    assert isinstance(result, EvalResult)
    ppl = result.perplexity
    comparison = result.comparison
    if comparison is None:
        return [
            ("perplexity", f"{ppl.ppl:.4f} ± {ppl.ppl_stderr:.4f}"),
            ("speed", f"{ppl.tokens_per_second:.0f} tokens/s"),
        ]
    ref = comparison.reference
    return [
        ("perplexity", f"{ppl.ppl:.4f} ± {ppl.ppl_stderr:.4f}"),
        ("reference perplexity", f"{ref.ppl:.4f} ± {ref.ppl_stderr:.4f}"),
        ("PPL ratio", f"{comparison.ppl_ratio:.4f}"),
        ("mean KL divergence", f"{comparison.kl_mean:.6f}"),
        ("median KL divergence", f"{comparison.kl_median:.6f}"),
        ("99th percentile KL", f"{comparison.kl_p99:.6f}"),
        ("maximum KL", f"{comparison.kl_max:.6f}"),
        ("top-1 agreement", f"{comparison.top1_agreement * 100:.2f}%"),
        ("speed", f"{ppl.tokens_per_second:.0f} tokens/s (model), {ref.tokens_per_second:.0f} (reference)"),
    ]


if TYPE_CHECKING:
    from rich.progress import Progress


@click.command("eval")
@click.argument("model")
@click.option(
    "--text",
    type=click.Path(path_type=Path, dir_okay=False),
    help="UTF-8 text to score (at least two context windows of tokens). [default: kaiyuan's public-domain "
    "corpus, 2,238 tokens]",
)
@click.option(
    "--chat",
    "chat",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Held-out chats (JSONL, the assistant's reference answer last; optional per-line 'regex' or 'schema'): "
    "report the loss on assistant tokens and how many greedy answers match, beside --against (the base).",
)
@click.option(
    "--against",
    "-a",
    metavar="REF",
    help="A reference model of the same vocabulary (e.g. the F16/F32 source of a quantization): report the KL "
    "divergence of MODEL's next-token distributions from REF's, top-1 agreement and the perplexity ratio.",
)
@click.option(
    "--ctx",
    type=click.IntRange(16),
    help="Window size in tokens (llama-perplexity's -c); the second half of each window is scored. "
    "[default: 512; with --chat, the context of each chat: 2048]",
)
@click.option("--threads", type=click.IntRange(1), help="CPU threads for llama.cpp. [default: all cores]")
@click.option("--no-record", is_flag=True, help="Do not record the result on MODEL's manifest.")
@click.option("--json", "as_json", is_flag=True, help="Print the result record as JSON.")
def eval_command(
    model: str,
    text: Path | None,
    chat: Path | None,
    against: str | None,
    ctx: int | None,
    threads: int | None,
    no_record: bool,
    as_json: bool,
) -> None:
    """Measure a model's perplexity, what quantizing or converting cost against REF, or a tuned model on chats.

    Uses llama.cpp's perplexity method (windows of --ctx tokens, the second half of each scored), so the
    figures compare with llama-perplexity's. The result is recorded on MODEL and shown by kaiyuan show.

    \b
    Examples:
      kaiyuan eval smollm2
      kaiyuan eval mymodel:q4_k_m --against mymodel:f16 --text wiki.test.raw
      kaiyuan eval mytuned --chat held-out.jsonl --against smollm2
    """
    if chat is not None:
        if text is not None:
            raise click.UsageError("give --text (perplexity) or --chat (held-out chats), not both")
        _eval_chats(model, chat, against, ctx or 2048, threads, no_record, as_json)
        return
    ctx = ctx or 512

    from kaiyuan.config import load_settings
    from kaiyuan.eval import evaluate
    from kaiyuan.store import ModelStore

    settings = load_settings(threads=threads)
    store = ModelStore.from_settings(settings)
    label = f"{model} vs {against}" if against else f"scoring {model}"
    progress = _progress("windows")
    task = progress.add_task(label, total=None)

    def report(done: int, total: int) -> None:
        if not progress.live.is_started:  # shown once scoring begins: errors before it print alone
            progress.start()
        progress.update(task, completed=done, total=total)

    try:
        result = evaluate(
            store,
            model,
            text=text,
            n_ctx=ctx,
            n_threads=settings.threads,
            against=against,
            progress=report,
            record=not no_record,
        )
    finally:
        if progress.live.is_started:
            progress.stop()
    if as_json:
        click.echo(json.dumps(result.record, indent=2, ensure_ascii=False))
        return
    ppl = result.perplexity
    click.echo(
        f"{result.model} on {result.corpus.name} ({result.tokens} tokens), ctx {ppl.n_ctx}: "
        f"{ppl.windows} windows, {ppl.tokens_scored} tokens scored, {settings.threads} "
        f"thread{'s' if settings.threads != 1 else ''}"
    )
    rows = _rows(result)
    width = max(len(key) for key, _ in rows)
    for key, value in rows:
        click.echo(f"  {key:<{width}}  {value}")
    if not no_record:
        click.echo(f"recorded on {result.model} (kaiyuan show {result.model})")


def _eval_chats(
    model: str, chat: Path, against: str | None, ctx: int, threads: int | None, no_record: bool, as_json: bool
) -> None:

    from kaiyuan.config import load_settings
    from kaiyuan.eval import evaluate_chats
    from kaiyuan.store import ModelStore

    settings = load_settings(threads=threads)
    store = ModelStore.from_settings(settings)
    progress = _progress("chats")
    tasks: dict[str, object] = {}

    def report(name: str, done: int, total: int) -> None:
        if not progress.live.is_started:
            progress.start()
        if name not in tasks:
            tasks[name] = progress.add_task(name, total=total)
        progress.update(tasks[name], completed=done)  # type: ignore[arg-type]

    try:
        result = evaluate_chats(
            store, model, chat, against=against, n_ctx=ctx, n_threads=settings.threads, progress=report,
            record=not no_record,
        )  # fmt: skip
    finally:
        if progress.live.is_started:
            progress.stop()
    if as_json:
        click.echo(json.dumps(result.record, indent=2, ensure_ascii=False))
        return
    checks = ", ".join(f"{n} {kind}" for kind, n in result.record["checks"].items() if n)
    click.echo(
        f"{result.model.name} on {result.chats.name}: {len(result.chats.cases)} chats ({checks} checks)"
    )
    scores = [result.model, *([result.reference] if result.reference else [])]
    width = max(len(s.name) for s in scores)
    click.echo(f"  {'model':<{width}}  {'answers matched':>15}  {'assistant-token loss':>20}")
    for score in scores:
        matched = f"{score.matched}/{score.examples} ({score.match_rate * 100:.0f}%)"
        click.echo(f"  {score.name:<{width}}  {matched:>15}  {score.loss:>20.4f}")
    if not no_record:
        click.echo(f"recorded on {result.model.name} (kaiyuan show {result.model.name})")


def _progress(unit: str) -> Progress:
    """A bar on stderr that counts ``unit`` (windows scored, chats answered) and goes away when done."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn(unit),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=True,
    )
