"""FlashChoices, the one flash-attention choice per model file that every replica uses: the first to ask
measures, the others wait for its choice; a failed or vanished measurement passes the turn on."""

from __future__ import annotations

import asyncio

import pytest

from kaiyuan.cluster import _flash_choices
from kaiyuan.cluster._flash_choices import FlashChoices


def test_the_first_replica_measures_and_the_others_take_its_choice() -> None:
    async def scenario() -> list[str | None]:
        choices = FlashChoices()
        assert await choices.claim("m") is None  # first: measure
        waiting = [asyncio.ensure_future(choices.claim("m")) for _ in range(2)]
        await asyncio.sleep(0.05)
        assert not any(w.done() for w in waiting)  # they wait for the measurement, not measure beside it
        assert await choices.claim("other") is None  # another model file is measured on its own
        choices.record("m", "off")
        later = await choices.claim("m")  # e.g. a replacement replica, long after
        return [*(await asyncio.gather(*waiting)), later]

    assert asyncio.run(scenario()) == ["off", "off", "off"]


def test_a_failed_or_lost_measurement_passes_the_turn(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_flash_choices, "WAIT_S", 0.1)

    async def scenario() -> tuple[str | None, str | None, str | None]:
        choices = FlashChoices()
        assert await choices.claim("m") is None
        waiter = asyncio.ensure_future(choices.claim("m"))
        await asyncio.sleep(0.02)
        choices.release("m")  # the measuring replica's load failed
        after_release = await waiter  # None: this one measures now
        # ... and dies without a word: after WAIT_S the next one measures
        after_timeout = await choices.claim("m")
        choices.record("m", "on")
        return after_release, after_timeout, await choices.claim("m")

    assert asyncio.run(scenario()) == (None, None, "on")
