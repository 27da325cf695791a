"""The top-level click group with lazily imported subcommands, and the entry point that maps errors."""

from __future__ import annotations

import importlib
import importlib.util
import logging
from typing import Any

import click

from kaiyuan import __version__

__all__ = ["cli", "main"]

# command name -> "module:attribute" (a click.Command). Keep sorted by name; the help lists them in this order.
_COMMANDS: dict[str, tuple[str, str]] = {
    "convert": ("kaiyuan.cli.convert", "convert_command"),
    "copy": ("kaiyuan.cli.models", "copy_command"),
    "eval": ("kaiyuan.cli.eval", "eval_command"),
    "export": ("kaiyuan.cli.export", "export_command"),
    "import": ("kaiyuan.cli.models", "import_command"),
    "license": ("kaiyuan.cli.license", "license_group"),
    "list": ("kaiyuan.cli.models", "list_command"),
    "ps": ("kaiyuan.cli.serve", "ps_command"),
    "pull": ("kaiyuan.cli.pull", "pull_command"),
    "rm": ("kaiyuan.cli.models", "rm_command"),
    "run": ("kaiyuan.cli.run", "run_command"),
    "serve": ("kaiyuan.cli.serve", "serve_command"),
    "show": ("kaiyuan.cli.models", "show_command"),
    "tune": ("kaiyuan.cli.tune", "tune_group"),
}

# One-line help shown by `kaiyuan --help` without importing the command modules.
_SHORT_HELP: dict[str, str] = {
    "convert": "Convert a model between GGUF and Hugging Face format (a new model in the store).",
    "copy": "Copy a model to a new name (no data is duplicated).",
    "eval": "Measure perplexity, or KL divergence against a reference model, and record it.",
    "export": "Export a model or adapter as GGUF, merged GGUF or a release bundle.",
    "import": "Add a local GGUF file or Hugging Face model folder to the model store.",
    "license": "Show, check and explain model licenses against your policy.",
    "list": "List models in the store.",
    "ps": "List models loaded by a running server.",
    "pull": "Download a model from Hugging Face, ModelScope or an Ollama registry.",
    "rm": "Remove a model from the store.",
    "run": "Chat with a model, or answer one prompt.",
    "serve": "Start the OpenAI- and Ollama-compatible server with the web chat.",
    "show": "Show a model's metadata, parameters, template, license and lineage.",
    "tune": "Fine-tune a model with LoRA, list runs.",
}


class _LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(name for name in _COMMANDS if self._available(name))

    @staticmethod
    def _available(name: str) -> bool:
        module = _COMMANDS[name][0]
        return importlib.util.find_spec(module) is not None

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in _COMMANDS or not self._available(cmd_name):
            return None
        module_name, attr = _COMMANDS[cmd_name]
        command = getattr(importlib.import_module(module_name), attr)
        assert isinstance(command, click.Command)
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, _SHORT_HELP.get(name, "")) for name in self.list_commands(ctx)]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


@click.group(
    cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100}
)
@click.version_option(__version__, "--version", prog_name="kaiyuan")
@click.option("--verbose", "-v", is_flag=True, help="Log debug information to stderr.")
def cli(verbose: bool) -> None:
    """kaiyuan (开源): run, serve, fine-tune, export and govern open-weight LLMs on your own hardware.

    \b
    Quick start:
      kaiyuan serve                 serve the bundled SmolLM2 on http://127.0.0.1:8080
      kaiyuan run smollm2 "Hi!"     answer one prompt
      kaiyuan list                  models in the store
    """
    if verbose:
        logging.basicConfig(level=logging.DEBUG, format="%(levelname)s %(name)s: %(message)s")


def main(argv: list[str] | None = None) -> Any:
    """Entry point of the ``kaiyuan`` console script: runs the group and maps errors to exit codes."""
    from kaiyuan.cli._errors import run_with_error_mapping

    return run_with_error_mapping(cli, argv)
