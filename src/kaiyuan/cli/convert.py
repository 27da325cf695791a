"""``kaiyuan convert MODEL --to hf|gguf``: a store model in the other format, as a new model in the store.

Owns the command's options and its progress display; the work is ``kaiyuan.convert.convert_model``.
"""

from __future__ import annotations

from typing import Any

import click

__all__ = ["convert_command"]


@click.command("convert")
@click.argument("model")
@click.option(
    "--to", "to", type=click.Choice(["hf", "gguf"]), required=True, help="The format to convert to."
)
@click.option(
    "--quant",
    metavar="TYPE",
    help="--to gguf: quantize the result (Q4_K_M, Q8_0, Q4_1, Q4_0, Q5_K_M, Q6_K, F16, F32); default: the "
    "checkpoint's float type.",
)
@click.option(
    "--name",
    "-n",
    "name",
    help="NAME[:TAG] of the new model (default: MODEL's name, tag + '-hf' or '-<quant>').",
)
@click.option(
    "--dtype",
    type=click.Choice(["bfloat16", "float16", "float32"]),
    default="bfloat16",
    show_default=True,
    help="--to hf: the float type of the dequantized weights.",
)
@click.option("--force", "-f", is_flag=True, help="Replace a model that already has the new name.")
@click.option(
    "--no-eval",
    is_flag=True,
    help="Do not measure the result against MODEL (by default: KL divergence, top-1 agreement and PPL ratio on "
    "4 windows of 128 tokens of kaiyuan's corpus, recorded on the new model; kaiyuan eval gives full figures).",
)
def convert_command(
    model: str, to: str, quant: str | None, name: str | None, dtype: str, force: bool, no_eval: bool
) -> None:
    """Convert a model between GGUF and Hugging Face format (a new model in the store).

    GGUF → Hugging Face dequantizes the weights into safetensors (for vLLM and transformers); Hugging Face →
    GGUF writes llama.cpp's format (llama, qwen2 and qwen3 architectures), then quantizes with --quant. The new
    model inherits MODEL's license and records the conversion in its lineage, and what the conversion cost
    (measured against MODEL unless --no-eval) on its manifest. Needs the tune extra
    (pip install 'kaiyuan[tune]').

    \b
    Examples:
      kaiyuan convert smollm2 --to hf
      kaiyuan convert qwen2.5:0.5b-hf --to gguf --quant Q4_K_M --name qwen2.5:0.5b-q4
    """
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
    )

    from kaiyuan.config import load_settings
    from kaiyuan.convert import convert_model
    from kaiyuan.store import ModelStore

    settings = load_settings()
    store = ModelStore.from_settings(settings)
    progress = Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=True,
    )
    tasks: dict[str, tuple[Any, int]] = {}  # step -> (rich task id, its total)

    def report(step: str, done: int, total: int) -> None:
        if step not in tasks:
            for task, task_total in tasks.values():  # the previous step is over
                progress.update(task, completed=task_total)
            tasks[step] = (progress.add_task(step, total=total), total)
        progress.update(tasks[step][0], completed=done, total=total)

    with progress:
        manifest = convert_model(
            store,
            settings,
            model,
            to,
            quant=quant,
            name=name,
            dtype=dtype,
            overwrite=force,
            measure=not no_eval,
            progress=report,
        )
    click.echo(
        f"converted {model} to {manifest.full_name} ({'Hugging Face' if manifest.is_folder else 'GGUF'}, "
        f"{manifest.quantization or 'unknown type'}, license {manifest.license_id})"
    )
    cost = next((r for r in reversed(manifest.evals) if r.get("kind") == "against" and r.get("quick")), None)
    if cost is not None:
        click.echo(
            f"cost against {model}: mean KL {cost['kl']['mean']:.4f}, top-1 agreement "
            f"{cost['top1_agreement'] * 100:.1f}%, PPL ratio {cost['ppl_ratio']:.4f} (quick: {cost['windows']} "
            f"windows of {cost['n_ctx']} tokens of kaiyuan's corpus; kaiyuan eval gives full figures)"
        )
