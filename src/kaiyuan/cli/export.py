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
def export_command(
    name: str,
    fmt: str | None,
    merge: bool,
    quant: str | None,
    output: Path | None,
    bundle: Path | None,
    force: bool,
) -> None:
    """Export model NAME (an adapter as GGUF LoRA, merged into its base, or as a release bundle)."""
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
    )
    for path in result.files:
        click.echo(str(path))
