"""The CLI's one table from the error tree to exit codes and one-line messages (no tracebacks for users)."""

from __future__ import annotations

import sys
from typing import Any, NoReturn

import click

from kaiyuan.errors import KaiyuanError, LicenseDenied, ModelNotFound

__all__ = ["exit_with", "format_error", "run_with_error_mapping"]


def format_error(exc: KaiyuanError) -> str:
    """One line (plus hints) that tells the user what went wrong and what to do next."""
    text = f"Error: {exc.message}"
    if isinstance(exc, ModelNotFound) and exc.suggestions:
        text += f" (did you mean: {', '.join(exc.suggestions)}?)"
    if isinstance(exc, LicenseDenied) and exc.reasons:
        text += "".join(f"\n  - {reason}" for reason in exc.reasons)
    return text


def exit_with(exc: KaiyuanError) -> NoReturn:
    click.echo(format_error(exc), err=True)
    sys.exit(exc.exit_code)


def run_with_error_mapping(command: click.Command, argv: list[str] | None) -> Any:
    try:
        return command.main(args=argv, prog_name="kaiyuan", standalone_mode=False)
    except KaiyuanError as exc:
        exit_with(exc)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("Interrupted.", err=True)
        sys.exit(130)
    except BrokenPipeError:
        sys.exit(0)
