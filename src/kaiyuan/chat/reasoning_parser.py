"""Streaming split of a model's output into reasoning (thinking) and answer content.

Owns the ``<think>…</think>`` state machine (or any family's own start/end markers). It is fed the decoded text
in whatever pieces the engine produces and returns ``(reasoning_delta, content_delta)`` for each piece; markers
split across pieces at any character are recognised, because text that could still become a marker is held
back until it is decided. The concatenated result does not depend on how the text was split.

Rules: a reasoning block is recognised only at the start of the output (after whitespace), or from the first
character when the prompt already opened it (``starts_in_reasoning``). Whitespace around the reasoning and
between ``</think>`` and the answer is dropped; nothing else is changed. It knows nothing of tool calls.
"""

from __future__ import annotations

__all__ = ["ReasoningParser"]


def partial_suffix(text: str, marker: str) -> int:
    """Length of the longest proper suffix of ``text`` that is a prefix of ``marker`` (text to hold back)."""
    for n in range(min(len(text), len(marker) - 1), 0, -1):
        if marker.startswith(text[-n:]):
            return n
    return 0


_BEFORE, _REASONING, _AFTER_END, _CONTENT = range(4)


class ReasoningParser:
    """Splits streamed output into reasoning and content; see the module docstring for the rules."""

    def __init__(
        self, start: str = "<think>", end: str = "</think>", *, starts_in_reasoning: bool = False
    ) -> None:
        if not start or not end:
            raise ValueError("reasoning markers must be non-empty")
        self.start = start
        self.end = end
        self._state = _REASONING if starts_in_reasoning else _BEFORE
        self._buf = ""
        self._reasoning_started = False  # leading whitespace of the reasoning has been skipped

    @property
    def in_reasoning(self) -> bool:
        """True while the output is (or may still be) inside the think block."""
        return self._state in (_BEFORE, _REASONING)

    @property
    def reasoning_done(self) -> bool:
        """True once the end marker has been seen (or the output turned out to have no reasoning)."""
        return self._state in (_AFTER_END, _CONTENT)

    def feed(self, text: str) -> tuple[str, str]:
        """Consume a piece of output; return the ``(reasoning, content)`` text that is now certain."""
        self._buf += text
        return self._drain(final=False)

    def finish(self) -> tuple[str, str]:
        """End of output: flush what was held back (an unterminated think block stays reasoning)."""
        return self._drain(final=True)

    def _drain(self, *, final: bool) -> tuple[str, str]:
        reasoning: list[str] = []
        content: list[str] = []
        while True:
            if self._state == _BEFORE:
                stripped = self._buf.lstrip()
                if stripped.startswith(self.start):
                    self._buf = stripped[len(self.start) :]
                    self._state = _REASONING
                    continue
                if not final and self.start.startswith(stripped):
                    break  # only whitespace or a partial start marker so far
                self._state = _CONTENT
                continue
            if self._state == _REASONING:
                if not self._reasoning_started:
                    self._buf = self._buf.lstrip()
                    if not self._buf and not final:
                        break
                    self._reasoning_started = True
                idx = self._buf.find(self.end)
                if idx >= 0:
                    reasoning.append(self._buf[:idx].rstrip())
                    self._buf = self._buf[idx + len(self.end) :]
                    self._state = _AFTER_END
                    continue
                if final:
                    reasoning.append(self._buf.rstrip())
                    self._buf = ""
                    break
                keep = partial_suffix(self._buf, self.end)
                safe = self._buf[: len(self._buf) - keep]
                body = safe.rstrip()  # trailing whitespace may turn out to precede the end marker
                reasoning.append(body)
                self._buf = self._buf[len(body) :]
                break
            if self._state == _AFTER_END:
                self._buf = self._buf.lstrip()
                if not self._buf:
                    break
                self._state = _CONTENT
                continue
            content.append(self._buf)
            self._buf = ""
            break
        return "".join(reasoning), "".join(content)
