"""The process environment vLLM's CPU build reads when an engine starts, changed only under one lock.

vLLM's CPU platform takes some settings from the environment only (``VLLM_CPU_KVCACHE_SPACE``,
``VLLM_CPU_OMP_THREADS_BIND``), read while the engine is configured and inherited by its engine process. Two
engines starting at once (two models, or a model and its embedding engine) must not see each other's values.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["env_without", "start_lock"]

# Held while a vLLM engine is configured and its engine process spawned.
start_lock = threading.Lock()


@contextmanager
def env_without(name: str) -> Iterator[None]:
    """``name`` absent from the environment for the duration (call under ``start_lock``)."""
    saved = os.environ.pop(name, None)
    try:
        yield
    finally:
        if saved is not None:
            os.environ[name] = saved
