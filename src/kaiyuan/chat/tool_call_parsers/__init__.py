"""Streaming tool-call parsers, one per output format (see ``kaiyuan.chat.dialects`` for who speaks which).

Each parser turns answer text into content plus OpenAI-shaped ``ToolCallDelta`` objects and, at the end, the
complete ``ToolCall`` list. ``get_tool_call_parser(name)`` returns the class registered under a dialect's
``tool_parser`` name.
"""

from __future__ import annotations

from kaiyuan.chat.tool_call_parsers._base import ToolCallParser, ToolParseDelta, coerce_param_value
from kaiyuan.chat.tool_call_parsers.deepseek import (
    DeepSeekR1ToolParser,
    DeepSeekV31ToolParser,
    DeepSeekV32ToolParser,
)
from kaiyuan.chat.tool_call_parsers.generic import GenericToolParser
from kaiyuan.chat.tool_call_parsers.hermes import HermesToolParser
from kaiyuan.chat.tool_call_parsers.key_value import Glm45ToolParser, HunyuanToolParser
from kaiyuan.chat.tool_call_parsers.kimi_k2 import KimiK2ToolParser
from kaiyuan.chat.tool_call_parsers.llama3 import Llama3ToolParser
from kaiyuan.chat.tool_call_parsers.mistral import MistralToolParser
from kaiyuan.chat.tool_call_parsers.qwen3_coder import Qwen3CoderToolParser

__all__ = [
    "PARSERS",
    "DeepSeekR1ToolParser",
    "DeepSeekV31ToolParser",
    "DeepSeekV32ToolParser",
    "GenericToolParser",
    "Glm45ToolParser",
    "HermesToolParser",
    "HunyuanToolParser",
    "KimiK2ToolParser",
    "Llama3ToolParser",
    "MistralToolParser",
    "Qwen3CoderToolParser",
    "ToolCallParser",
    "ToolParseDelta",
    "coerce_param_value",
    "get_tool_call_parser",
]

PARSERS: dict[str, type[ToolCallParser]] = {
    cls.name: cls
    for cls in (
        DeepSeekR1ToolParser,
        DeepSeekV31ToolParser,
        DeepSeekV32ToolParser,
        GenericToolParser,
        Glm45ToolParser,
        HermesToolParser,
        HunyuanToolParser,
        KimiK2ToolParser,
        Llama3ToolParser,
        MistralToolParser,
        Qwen3CoderToolParser,
    )
}


def get_tool_call_parser(name: str) -> type[ToolCallParser]:
    """The parser class registered as ``name``; ``KeyError`` names the known parsers."""
    try:
        return PARSERS[name]
    except KeyError:
        raise KeyError(f"unknown tool-call parser {name!r}; known: {', '.join(sorted(PARSERS))}") from None
