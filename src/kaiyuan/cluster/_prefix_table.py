"""PrefixTable: which replica recently served which prompt prefix, in token blocks.

A prompt's tokens are cut into blocks of ``block_tokens``; block ``i`` is named by a hash chained over blocks
``0..i`` (and the model), so a block's name stands for the whole prefix up to it — the same scheme vLLM's prefix
cache uses for its KV blocks. ``record`` notes the replica that got a prompt; ``match`` answers, for a new prompt,
the replica that holds the longest recorded prefix among the candidates and how many tokens that prefix has.
Bounded: the least recently used blocks are dropped beyond ``max_blocks``.

Owns only this bookkeeping: no Ray, no I/O, no clocks. The router (``_router.py``) decides what a match is worth.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Collection, Hashable, Sequence

__all__ = ["PrefixTable"]


class PrefixTable:
    """Block-hash → replica, least recently used dropped first."""

    def __init__(self, block_tokens: int = 64, max_blocks: int = 200_000) -> None:
        if block_tokens < 1 or max_blocks < 1:
            raise ValueError("block_tokens and max_blocks must be >= 1")
        self.block_tokens = block_tokens
        self.max_blocks = max_blocks
        self._owner: OrderedDict[int, Hashable] = OrderedDict()

    def __len__(self) -> int:
        return len(self._owner)

    def _chain(self, model: str, prompt: Sequence[int]) -> list[int]:
        """The chained hash of each full block of ``prompt`` (a trailing partial block is not named)."""
        size = self.block_tokens
        names: list[int] = []
        previous = hash(model)
        for start in range(0, len(prompt) - size + 1, size):
            previous = hash((previous, tuple(prompt[start : start + size])))
            names.append(previous)
        return names

    def match(
        self, model: str, prompt: Sequence[int], candidates: Collection[Hashable]
    ) -> tuple[Hashable, int]:
        """``(replica, tokens)``: the candidate holding the longest recorded prefix of ``prompt`` and its length in
        tokens; ``(None, 0)`` when no candidate holds even the first block."""
        best: Hashable = None
        matched = 0
        for depth, name in enumerate(self._chain(model, prompt), start=1):
            owner = self._owner.get(name)
            if owner is None or owner not in candidates:
                break
            best, matched = owner, depth * self.block_tokens
        return best, matched

    def record(self, model: str, prompt: Sequence[int], replica: Hashable) -> None:
        """Note that ``replica`` now holds ``prompt``'s blocks (the newest owner of a block wins)."""
        for name in self._chain(model, prompt):
            self._owner[name] = replica
            self._owner.move_to_end(name)
        while len(self._owner) > self.max_blocks:
            self._owner.popitem(last=False)

    def forget(self, replica: Hashable) -> None:
        """Drop every block ``replica`` held (it died or left: its cache is gone)."""
        for name in [name for name, owner in self._owner.items() if owner == replica]:
            del self._owner[name]
