"""One flash-attention choice per model file for every replica, so a request's answer does not depend on which
replica served it.

``flash_attn = auto`` measures both settings when an engine loads and keeps the faster; the two are close on many
CPUs, so replicas measuring on their own (at the same moment, on a busy machine) can choose differently — and the
two settings give slightly different logits: the same seeded request then samples other tokens on the other
replica. ``FlashChoices`` is a small Ray actor beside the replicas: the first replica to load a model measures,
the others wait for that choice and load with it; a replica started later (autoscaling, a replacement after a
crash) takes it too.

Must not know engines (the replica turns the choice into its engine settings) or HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

__all__ = ["FLASH_CHOICES_NAME", "WAIT_S", "FlashChoices", "end_flash_choices", "flash_choices"]

FLASH_CHOICES_NAME = "kaiyuan-flash-choices"
WAIT_S = (
    600.0  # how long a replica waits for the one measuring (which loads the model first) before measuring
)


class FlashChoices:
    """The choice per model key (a Ray actor; async, so waiting replicas do not block the one that records)."""

    def __init__(self) -> None:
        self._chosen: dict[str, str] = {}
        self._measuring: dict[str, asyncio.Event] = {}

    async def claim(self, key: str) -> str | None:
        """The recorded choice for ``key``; or None: no choice yet and nobody measuring, so the caller measures
        and must ``record`` what it found. A measurement that does not come within ``WAIT_S`` (its replica died
        loading) passes the turn to the next caller."""
        while key not in self._chosen:
            measuring = self._measuring.get(key)
            if measuring is None:
                self._measuring[key] = asyncio.Event()
                return None
            try:
                await asyncio.wait_for(measuring.wait(), WAIT_S)
            except TimeoutError:
                if self._measuring.get(key) is measuring:
                    del self._measuring[key]
        return self._chosen[key]

    def record(self, key: str, choice: str) -> None:
        """``choice`` (``on``, ``off`` or ``auto``: llama.cpp's own) is what every replica uses for ``key``."""
        self._chosen.setdefault(key, choice)
        self.release(key)

    def release(self, key: str) -> None:
        """The claimant of ``key`` could not measure (its load failed): the next waiting replica measures."""
        measuring = self._measuring.pop(key, None)
        if measuring is not None:
            measuring.set()


def flash_choices(namespace: str) -> Any:
    """The actor, started by the first replica that asks. Detached, so that it outlives any one replica (a
    replacement must find the choice its peers use); the local cluster's shutdown ends it, and ``ServeCluster``
    ends it on a joined cluster (``end_flash_choices``)."""
    import ray

    return (
        ray.remote(FlashChoices)
        .options(
            name=FLASH_CHOICES_NAME, namespace=namespace, get_if_exists=True, lifetime="detached", num_cpus=0
        )
        .remote()
    )


def end_flash_choices(namespace: str) -> None:
    """Stop the actor, if there is one (the application is going away)."""
    import ray

    with contextlib.suppress(ValueError):  # ValueError: no replica started it
        ray.kill(ray.get_actor(FLASH_CHOICES_NAME, namespace=namespace))
