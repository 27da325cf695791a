"""Atomic output: write to a hidden temporary sibling, rename into place only when the write finished.

Owns the rule "a reader never sees a half-written export": the temporary file lives in the destination's folder
(so the final ``os.replace`` is a same-filesystem rename) and is removed on any failure, Ctrl-C included.
Must not know what is being written.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

__all__ = ["atomic_output", "temporary_sibling"]


def temporary_sibling(dest: Path, label: str = "tmp") -> Path:
    """A hidden path next to ``dest`` that no other process of ours will pick (pid in the name)."""
    return dest.with_name(f".{dest.name}.{label}-{os.getpid()}")


@contextlib.contextmanager
def atomic_output(dest: Path) -> Iterator[Path]:
    """Yield a temporary path to write; on success it is renamed to ``dest``, on any exception it is removed.

    ``BaseException`` is caught on purpose: a ``KeyboardInterrupt`` must not leave a half file behind.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_sibling(dest)
    try:
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(f"nothing was written to {tmp}")
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
