"""Watching generated text for a marker, token by token: the think budget and ``grammar_after`` triggers.

``TextWatch`` tells when a marker (``</think>``) has appeared in a stream of text pieces, also when the marker is
split across pieces. ``ThinkTracker`` adds the token budget: it says when the engine must force the marker.
Pure Python, no engine state; both engines share it.
"""

from __future__ import annotations

from kaiyuan.engine._protocol import ThinkBudget

__all__ = ["TextWatch", "ThinkTracker"]


class TextWatch:
    """Becomes ``seen`` once ``marker`` has occurred in the concatenated pieces fed to it."""

    def __init__(self, marker: str) -> None:
        self.marker = marker
        self.seen = not marker
        self._tail = ""

    def feed(self, piece: str) -> bool:
        """Add generated text; returns True on the piece that completes the marker (once)."""
        if self.seen or not piece:
            return False
        window = self._tail + piece
        if self.marker in window:
            self.seen = True
            self._tail = ""
            return True
        keep = len(self.marker) - 1
        self._tail = window[-keep:] if keep else ""
        return False


class ThinkTracker:
    """Counts thinking tokens against a ``ThinkBudget``.

    Thinking runs from the first generated token until ``end_text`` appears. ``should_force`` turns true when
    the budget is spent while still thinking; the engine then injects the tokens of ``end_text`` (which the
    engine feeds back through ``feed``, closing the think block) and generation goes on.
    """

    def __init__(self, budget: ThinkBudget) -> None:
        self.budget = budget
        self.tokens = 0
        self._watch = TextWatch(budget.end_text)

    @property
    def thinking(self) -> bool:
        return not self._watch.seen

    def feed(self, piece: str) -> None:
        """Record one generated (or forced) token with its text."""
        if self._watch.seen:
            return
        self.tokens += 1
        self._watch.feed(piece)

    def should_force(self) -> bool:
        return self.thinking and self.tokens >= self.budget.max_tokens
