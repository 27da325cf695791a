"""Sequence slots and the prefix cache: which slot a new request gets and how much of its prompt is already computed.

Each of the ``n_parallel`` slots is one llama.cpp sequence id. A slot keeps the KV of what it last held (prompt
plus generated tokens) after its request ends, so a later prompt that starts the same way (the repeated system
prompt) skips that prefix. The longest common prefix may sit in a *different* slot, busy or free; then the plan
says to copy it (``llama_memory_seq_cp``) into the free slot instead of recomputing it. KV computed under one LoRA
adapter is never reused for another.

Pure bookkeeping over token lists: the scheduler applies the plan to llama.cpp memory. Knows nothing of ctypes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

__all__ = ["Plan", "PrefixCache", "Slot", "common_prefix"]


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """Length of the longest common prefix of two token lists."""
    n = min(len(a), len(b))
    # Compare in blocks first: prompts share long prefixes, and slice equality runs in C.
    i, step = 0, 256
    while i < n:
        j = min(i + step, n)
        if a[i:j] == b[i:j]:
            i = j
            continue
        while a[i] == b[i]:
            i += 1
        return i
    return n


@dataclass(eq=False)
class Slot:
    seq: int  # llama.cpp sequence id
    tokens: list[int] = field(default_factory=list)  # tokens whose KV this sequence holds, positions 0..len-1
    adapter: tuple[str, ...] = ()  # LoRA adapters the KV was computed with (() for the base model)
    busy: bool = False
    last_used: int = 0  # admission counter of the last request (LRU eviction)


@dataclass
class Plan:
    slot: Slot  # the free slot the request will run in
    reuse: (
        int  # prompt tokens whose KV is reused (never the whole prompt: the last token is always evaluated)
    )
    copy_from: Slot | None = None  # copy ``reuse`` tokens of KV from this slot first


class PrefixCache:
    """Slot table plus the choice of slot and reusable prefix for each new request."""

    def __init__(self, n_slots: int, *, min_copy: int = 8) -> None:
        self.slots = [Slot(seq=i) for i in range(n_slots)]
        self.min_copy = min_copy  # copying a shorter prefix from another slot is not worth a copy
        self._clock = 0

    def has_free(self) -> bool:
        return any(not s.busy for s in self.slots)

    def plan(self, prompt: Sequence[int], adapter: tuple[str, ...] = ()) -> Plan:
        """Choose a free slot for ``prompt``; raises ``LookupError`` when none is free."""
        free = [s for s in self.slots if not s.busy]
        if not free:
            raise LookupError("no free slot")
        cap = len(prompt) - 1

        def reusable(slot: Slot) -> int:
            return min(common_prefix(slot.tokens, prompt), cap) if slot.adapter == adapter else 0

        shared = {id(s): reusable(s) for s in self.slots}
        fresh = min(free, key=lambda s: (self._runs_added(s), s.last_used))
        best_free = max(free, key=lambda s: (shared[id(s)], -s.last_used))
        best_any = max(self.slots, key=lambda s: (shared[id(s)], not s.busy))
        if shared[id(best_free)] == 0:
            best_free = fresh
        gain = shared[id(best_any)] - shared[id(best_free)]
        if best_any is not best_free and gain >= self.min_copy:
            return Plan(slot=fresh, reuse=shared[id(best_any)], copy_from=best_any)
        return Plan(slot=best_free, reuse=shared[id(best_free)])

    def _runs_added(self, slot: Slot) -> int:
        """How many more runs of consecutive busy sequence ids there are once ``slot`` is busy (1, 0 or -1).

        A slot without a useful prefix goes where this is least, then to the least recently used one (keeping
        the other cached prefixes alive): with per-sequence KV buffers llama.cpp decodes each run as its own
        micro-batch, so 3 streams in slots 0, 3 and 6 cost about three single-stream steps per token."""
        neighbours = [self.slots[i] for i in (slot.seq - 1, slot.seq + 1) if 0 <= i < len(self.slots)]
        return 1 - sum(n.busy for n in neighbours)

    def occupy(self, plan: Plan, adapter: tuple[str, ...] = ()) -> None:
        """Record the plan as applied: the slot is busy and holds the reused prefix."""
        slot = plan.slot
        source = plan.copy_from.tokens if plan.copy_from is not None else slot.tokens
        slot.tokens = source[: plan.reuse]
        slot.adapter = adapter
        slot.busy = True
        self._clock += 1
        slot.last_used = self._clock

    def release(self, slot: Slot) -> None:
        slot.busy = False

    def forget(self, slot: Slot) -> None:
        """The slot's KV was dropped (decode failure): nothing is cached there any more."""
        slot.tokens = []
