"""``kaiyuan export NAME``: write a store model out as a GGUF LoRA adapter, a merged (quantized) GGUF, or a release
bundle with LICENSE, NOTICE, model card and CycloneDX AI-BOM. The work is ``kaiyuan.export``'s.
"""

from __future__ import annotations

from pathlib import Path

import click

__all__ = ["export_command"]

_QUANTS = ["Q8_0", "Q4_K_M", "Q4_1", "Q4_0", "Q5_K_M", "Q6_K", "F16", "F32"]


@click.command("export")
@click.argument("name")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["gguf-lora", "gguf"]),
    help="gguf-lora: the adapter as a llama.cpp LoRA file (default for adapter models); gguf: a model file.",
)
@click.option("--merge", is_flag=True, help="Merge the adapter into its base and write one model GGUF.")
@click.option(
    "--quant", type=click.Choice(_QUANTS), help="Quantization of a merged/copied model (default: the base's)."
)
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path), help="Output file.")
@click.option(
    "--bundle", type=click.Path(file_okay=False, path_type=Path), help="Write a release bundle folder."
)
@click.option("--force", is_flag=True, help="Overwrite an existing output file or bundle folder.")
@click.option(
    "--no-eval",
    is_flag=True,
    help="Do not measure a merged or re-quantized file against its source (by default: KL divergence, top-1 "
    "agreement and PPL ratio on 4 windows of 128 tokens of kaiyuan's corpus, recorded on the source).",
)
def export_command(
    name: str,
    fmt: str | None,
    merge: bool,
    quant: str | None,
    output: Path | None,
    bundle: Path | None,
    force: bool,
    no_eval: bool,
) -> None:
    """Export model NAME (an adapter as GGUF LoRA, merged into its base, or as a release bundle).

    A merged or re-quantized file is measured against its source by default and fails the release when the
    policy's max_kl, max_ppl_ratio or min_top1 (kaiyuan.toml [policy]) is passed.
    """
    from kaiyuan.config import load_settings
    from kaiyuan.export import export_model

    result = export_model(
        load_settings(),
        name,
        fmt=fmt,
        merge=merge,
        quant=quant,
        output=output,
        bundle=bundle,
        force=force,
        measure=not no_eval,
    )
    for path in result.files:
        click.echo(str(path))
