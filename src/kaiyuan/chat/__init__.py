"""Prompt side: chat templates (sandboxed Jinja), model-family dialects, reasoning and tool-call parsing,
tool-call grammars, and the native chat path that drives the engine.

``chat`` may import the leaf layer and ``kaiyuan.engine``; it knows nothing of HTTP or wire models.
"""

from kaiyuan.chat._pipeline import (
    REASONING_EFFORT_TOKENS,
    ChatModel,
    ChatResult,
    ChatStream,
    ChoiceResult,
    ContextLimit,
    GenerationObserver,
    collect_chunks,
    collect_stream,
    complete_chat,
    complete_chat_sync,
    iter_chat,
    render_prompt,
    start_chat,
    start_chat_async,
    start_completion,
    start_completion_async,
    stream_chat,
)
from kaiyuan.chat._template import CHATML_FALLBACK_TEMPLATE, ChatTemplate
from kaiyuan.chat.dialects import DIALECTS, Dialect, detect_dialect, dialect_by_name
from kaiyuan.chat.grammars import (
    json_object_grammar,
    json_schema_grammar,
    response_format_grammar,
    schema_to_gbnf_rules,
)
from kaiyuan.chat.reasoning_parser import ReasoningParser
from kaiyuan.chat.response_parser import ParsedDelta, ResponseParser
from kaiyuan.chat.tool_grammars import build_tool_call_grammar

__all__ = [
    "CHATML_FALLBACK_TEMPLATE",
    "DIALECTS",
    "REASONING_EFFORT_TOKENS",
    "ChatModel",
    "ChatResult",
    "ChatStream",
    "ChatTemplate",
    "ChoiceResult",
    "ContextLimit",
    "Dialect",
    "GenerationObserver",
    "ParsedDelta",
    "ReasoningParser",
    "ResponseParser",
    "build_tool_call_grammar",
    "collect_chunks",
    "collect_stream",
    "complete_chat",
    "complete_chat_sync",
    "detect_dialect",
    "dialect_by_name",
    "iter_chat",
    "json_object_grammar",
    "json_schema_grammar",
    "render_prompt",
    "response_format_grammar",
    "schema_to_gbnf_rules",
    "start_chat",
    "start_chat_async",
    "start_completion",
    "start_completion_async",
    "stream_chat",
]
