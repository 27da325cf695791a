"""One choice's output, parsed as it streams: reasoning, answer content and tool calls.

Owns the composition: the dialect's reasoning markers split thinking from the answer first, the family's answer
wrapper (ERNIE's ``<response>…</response>``) is removed, and only then is the answer read for tool calls, so a
``<tool_call>`` inside the thinking is never executed. Streaming and non-streaming use the same path: a
non-streamed answer is the concatenation of the deltas. It knows nothing of engines, tokens or HTTP.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kaiyuan.chat.dialects import Dialect
from kaiyuan.chat.reasoning_parser import ReasoningParser
from kaiyuan.chat.tool_call_parsers import ToolCallParser, get_tool_call_parser
from kaiyuan.types import ToolCall, ToolCallDelta

__all__ = ["ParsedDelta", "ResponseParser"]


@dataclass
class ParsedDelta:
    """What a piece of model output turned into."""

    content: str = ""
    reasoning: str = ""
    tool_calls: list[ToolCallDelta] = field(default_factory=list)

    @property
    def is_empty(self) -> bool:
        return not (self.content or self.reasoning or self.tool_calls)


class ResponseParser:
    """Parses the output of one choice for ``dialect``.

    ``starts_in_reasoning``: the prompt already opened the think block (``Dialect.think_opened_in_prompt``).
    ``parse_tools``: read tool calls from the answer (false for ``tool_choice: "none"`` or no tools); the text
    then stays content. ``id_factory`` makes tool-call ids (default: the dialect's ``new_tool_call_id``).
    """

    def __init__(
        self,
        dialect: Dialect,
        *,
        tools: list[dict[str, Any]] | None = None,
        starts_in_reasoning: bool = False,
        parse_tools: bool = True,
        id_factory: Callable[[], str] | None = None,
    ) -> None:
        self.dialect = dialect
        self._reasoning: ReasoningParser | None = None
        if dialect.has_reasoning:
            assert dialect.reasoning_start is not None and dialect.reasoning_end is not None
            self._reasoning = ReasoningParser(
                dialect.reasoning_start, dialect.reasoning_end, starts_in_reasoning=starts_in_reasoning
            )
        self._wrapper: ReasoningParser | None = None
        if dialect.content_start and dialect.content_end:
            self._wrapper = ReasoningParser(dialect.content_start, dialect.content_end)
        self._tools: ToolCallParser | None = None
        if parse_tools:
            parser_cls = get_tool_call_parser(dialect.tool_parser)
            self._tools = parser_cls(tools, id_factory=id_factory or dialect.new_tool_call_id)

    @property
    def in_reasoning(self) -> bool:
        """True while the output is (or may still be) inside the think block."""
        return self._reasoning is not None and self._reasoning.in_reasoning

    @property
    def reasoning_done(self) -> bool:
        """True once the answer part has begun (always true for a model without reasoning markers)."""
        return self._reasoning is None or self._reasoning.reasoning_done

    @property
    def tool_calls(self) -> list[ToolCall]:
        """The complete tool calls parsed so far (all of them after :meth:`finish`)."""
        return self._tools.tool_calls if self._tools is not None else []

    def feed(self, text: str) -> ParsedDelta:
        """Consume a piece of output; return the reasoning, content and tool-call deltas now certain."""
        if self._reasoning is not None:
            reasoning, answer = self._reasoning.feed(text)
        else:
            reasoning, answer = "", text
        return self._answer(reasoning, answer, final=False)

    def finish(self) -> ParsedDelta:
        """End of output: flush everything held back."""
        reasoning, answer = self._reasoning.finish() if self._reasoning is not None else ("", "")
        return self._answer(reasoning, answer, final=True)

    def _answer(self, reasoning: str, answer: str, *, final: bool) -> ParsedDelta:
        if self._wrapper is not None:
            inside, outside = self._wrapper.feed(answer)
            answer = inside + outside
            if final:
                inside, outside = self._wrapper.finish()
                answer += inside + outside
        if self._tools is None:
            return ParsedDelta(content=answer, reasoning=reasoning)
        parsed = self._tools.feed(answer)
        content, calls = parsed.content, list(parsed.tool_calls)
        if final:
            tail = self._tools.finish()
            content += tail.content
            calls = _merge(calls, tail.tool_calls)
        return ParsedDelta(content=content, reasoning=reasoning, tool_calls=calls)


def _merge(first: list[ToolCallDelta], second: list[ToolCallDelta]) -> list[ToolCallDelta]:
    """Concatenate delta lists, folding argument-only deltas into the previous delta of the same call."""
    out = list(first)
    for delta in second:
        last = out[-1] if out else None
        if last is not None and last.index == delta.index and delta.id is None and delta.name is None:
            out[-1] = ToolCallDelta(
                index=last.index, id=last.id, name=last.name, arguments=last.arguments + delta.arguments
            )
        else:
            out.append(delta)
    return out
