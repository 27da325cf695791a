"""Running llama.cpp compute that is not the scheduler's on a thread that ends with it.

llama.cpp built with OpenMP (the default build, and llama-cpp-python's) runs each graph on an OpenMP team owned by
the calling thread, and the team lives as long as that thread. Once two live threads own teams, libgomp counts
more busy threads than CPUs and stops spinning at barriers (it sleeps at every one of the hundreds per decode):
measured here, a decode-only stream fell from 75 to 29 tokens/s after one embedding call or a flash-attention
probe made on a long-lived thread. So compute outside the scheduler thread (embeddings, the load-time probe) runs
on a fresh thread that exits when done, taking its team with it. Knows nothing of what the work is.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

__all__ = ["in_fresh_thread"]

T = TypeVar("T")


def in_fresh_thread(work: Callable[[], T], *, name: str = "kaiyuan-compute") -> T:
    """Run ``work`` on a new thread, wait for it, and return its result or raise its exception."""
    result: list[T] = []
    error: list[BaseException] = []

    def run() -> None:
        try:
            result.append(work())
        except BaseException as exc:  # handed to the caller's thread below
            error.append(exc)

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    thread.join()
    if error:
        raise error[0]
    return result[0]
