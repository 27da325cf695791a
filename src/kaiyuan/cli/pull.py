"""``kaiyuan pull REF``: download a model from Hugging Face, ModelScope or an Ollama registry into the store.

Owns the command-line face of a pull: the reference forms in ``--help``, ``--name`` / ``--force``, a rich progress
bar per file on stderr (size, speed, time left; resumed downloads start where they stopped), status lines for the
other steps, one summary line on stdout, and a resume hint when the pull is interrupted (Ctrl-C or a dropped
connection). Must not know hubs or HTTP: ``kaiyuan.store.pull`` does the work.
"""

from __future__ import annotations

from typing import Any

import click

from kaiyuan.config import load_settings

__all__ = ["pull_command"]

_HELP = """Download a model into the store.

\b
REF is one of:
  hf://ORG/REPO[:QUANT|:FILE.gguf][@REV]   a GGUF from Hugging Face (QUANT like Q4_K_M; default Q4_K_M)
  ms://ORG/REPO[:QUANT|:FILE.gguf][@REV]   a GGUF from ModelScope
  ollama://[REGISTRY/]NAMESPACE/NAME:TAG   a model from an Ollama registry
  hf.co/ORG/REPO:QUANT, NAME:TAG            Ollama's spellings (NAME:TAG = the Ollama library)

\b
The model card (or the registry's license layer) is checked against [policy] in kaiyuan.toml before any weights
are downloaded. Downloads are verified by SHA-256 and resume where they stopped when you pull again.
Endpoints: HF_ENDPOINT / KAIYUAN_HF_ENDPOINT, KAIYUAN_MODELSCOPE_ENDPOINT, KAIYUAN_OLLAMA_REGISTRY; token: HF_TOKEN.

\b
Examples:
  kaiyuan pull hf://Qwen/Qwen2.5-0.5B-Instruct-GGUF:Q4_K_M
  kaiyuan pull ms://Qwen/Qwen3-0.6B-GGUF:Q8_0 --name qwen3:0.6b
  kaiyuan pull llama3.2:1b
"""


class _Display:
    """Status lines and one progress bar per downloading file, on stderr."""

    def __init__(self, quiet: bool) -> None:
        from rich.console import Console

        self.console = Console(stderr=True)
        self.quiet = quiet
        self.progress: Any = None
        self.tasks: dict[str, Any] = {}
        self.last_status = ""

    def __enter__(self) -> _Display:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.stop()

    def _bar(self) -> Any:
        if self.progress is None:
            from kaiyuan.cli._progress import byte_progress

            self.progress = byte_progress(self.console)
            self.progress.start()
        return self.progress

    def __call__(self, event: Any) -> None:
        if self.quiet:
            return
        if event.completed is not None and event.total:
            bar = self._bar()
            task = self.tasks.get(event.status)
            if task is None:
                task = bar.add_task(event.status, total=event.total)
                self.tasks[event.status] = task
            bar.update(task, completed=event.completed)
            return
        if event.status == self.last_status or (
            event.status.startswith("pulling ") and event.status in self.tasks
        ):
            return
        self.last_status = event.status
        if self.progress is not None:
            self.progress.console.print(event.status)
        else:
            self.console.print(event.status)


@click.command("pull", help=_HELP)
@click.argument("ref")
@click.option("--name", "-n", "name", help="NAME[:TAG] to store it under (default: from the reference).")
@click.option("--force", "-f", is_flag=True, help="Replace a model that already has this name.")
@click.option("--quiet", "-q", is_flag=True, help="No progress output; print only the model's name.")
def pull_command(ref: str, name: str | None, force: bool, quiet: bool) -> None:
    from kaiyuan.store import ModelStore
    from kaiyuan.store.pull import pull_model

    settings = load_settings()
    store = ModelStore.from_settings(settings)
    try:
        with _Display(quiet) as display:
            manifest = pull_model(ref, store, settings, name=name, overwrite=force, listener=display)
    except KeyboardInterrupt:
        click.echo("Interrupted; run the same `kaiyuan pull` again to resume the download.", err=True)
        raise SystemExit(130) from None
    if quiet:
        click.echo(manifest.full_name)
        return
    license_id = manifest.license_id
    click.echo(
        f"pulled {manifest.full_name} ({manifest.size:,} bytes, {manifest.quantization or 'unknown quant'}, license {license_id})"
    )
