"""Anthropic Messages wire models (pydantic v2): ``POST /v1/messages`` and ``/v1/messages/count_tokens``.

Owns the JSON shapes only, following Anthropic's API reference (https://docs.anthropic.com/en/api/messages,
.../messages-streaming, .../errors): requests with their content blocks, the ``message`` response, the named
stream events and the error envelope ``{"type": "error", "error": {"type", "message"}}``. Unknown request fields
are accepted (clients such as Claude Code send new fields before servers know them) and logged once per name;
unknown content block types are refused by validation (a block kaiyuan cannot show the model is not dropped).

Must not know the engine, the chat layer or HTTP routing: ``convert_anthropic.py`` translates these to native types.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

# the OpenAI models' request base: unknown fields are kept (``model_extra``) and logged once per name
from kaiyuan.protocol.openai import _Request

__all__ = [
    "ContentBlockDeltaEvent",
    "ContentBlockStartEvent",
    "ContentBlockStopEvent",
    "CountTokensRequest",
    "CountTokensResponse",
    "ErrorDetail",
    "ErrorResponse",
    "ImageBlock",
    "InputJSONDelta",
    "Message",
    "MessageDelta",
    "MessageDeltaEvent",
    "MessageParam",
    "MessageStartEvent",
    "MessageStopEvent",
    "MessagesRequest",
    "OutputConfig",
    "OutputFormat",
    "PingEvent",
    "RedactedThinkingBlock",
    "SignatureDelta",
    "TextBlock",
    "TextDelta",
    "TextOut",
    "ThinkingBlock",
    "ThinkingConfig",
    "ThinkingDelta",
    "ThinkingOut",
    "Tool",
    "ToolChoice",
    "ToolResultBlock",
    "ToolUseBlock",
    "ToolUseOut",
    "Usage",
]


class _Response(BaseModel):
    """Base of response objects: exact fields, all of them written (Anthropic sends nulls, e.g. ``stop_sequence``)."""

    model_config = ConfigDict(extra="forbid")


# ---------------------------------------------------------------------------------------------------------------
# Request content blocks (https://docs.anthropic.com/en/api/messages#body-messages-content)
# ---------------------------------------------------------------------------------------------------------------


class TextBlock(_Request):
    type: Literal["text"]
    text: str
    cache_control: dict[str, Any] | None = None
    citations: list[dict[str, Any]] | None = None


class ImageBlock(_Request):
    type: Literal["image"]
    source: dict[str, Any]
    cache_control: dict[str, Any] | None = None


class DocumentBlock(_Request):
    type: Literal["document"]
    source: dict[str, Any]


class ToolUseBlock(_Request):
    type: Literal["tool_use"]
    id: str
    name: str
    input: dict[str, Any]
    cache_control: dict[str, Any] | None = None


class ToolResultBlock(_Request):
    type: Literal["tool_result"]
    tool_use_id: str
    content: (
        str | list[Annotated[TextBlock | ImageBlock | DocumentBlock, Field(discriminator="type")]] | None
    ) = None
    is_error: bool | None = None
    cache_control: dict[str, Any] | None = None


class ThinkingBlock(_Request):
    type: Literal["thinking"]
    thinking: str
    signature: str | None = None


class RedactedThinkingBlock(_Request):
    type: Literal["redacted_thinking"]
    data: str


ContentBlock = Annotated[
    TextBlock
    | ImageBlock
    | DocumentBlock
    | ToolUseBlock
    | ToolResultBlock
    | ThinkingBlock
    | RedactedThinkingBlock,
    Field(discriminator="type"),
]


class MessageParam(_Request):
    role: str = Field(
        min_length=1,
        description="user or assistant; other roles (system, developer) are mapped rather than refused.",
    )
    content: str | list[ContentBlock]


# ---------------------------------------------------------------------------------------------------------------
# Tools, tool choice, thinking
# ---------------------------------------------------------------------------------------------------------------


class Tool(_Request):
    name: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.\-]+$")
    description: str | None = None
    input_schema: dict[str, Any] | None = None
    type: str | None = Field(
        default=None, description="'custom' or absent; Anthropic's server tools are refused."
    )
    cache_control: dict[str, Any] | None = None


class ToolChoice(_Request):
    type: Literal["auto", "any", "tool", "none"]
    name: str | None = None
    disable_parallel_tool_use: bool | None = None

    @model_validator(mode="after")
    def _name_given_for_tool(self) -> ToolChoice:
        if self.type == "tool" and not self.name:
            raise ValueError("tool_choice of type 'tool' needs the tool's name")
        return self


class ThinkingConfig(_Request):
    type: Literal["enabled", "disabled", "adaptive", "between_tools"]
    budget_tokens: int | None = Field(default=None, ge=0)
    display: str | None = None


class OutputFormat(_Request):
    type: Literal["json_schema"]
    schema_: dict[str, Any] = Field(alias="schema")

    model_config = ConfigDict(extra="allow", populate_by_name=True)


class OutputConfig(_Request):
    effort: Literal["low", "medium", "high", "xhigh", "max"] | None = None
    format: OutputFormat | None = None


# ---------------------------------------------------------------------------------------------------------------
# Requests (https://docs.anthropic.com/en/api/messages, .../messages-count-tokens)
# ---------------------------------------------------------------------------------------------------------------


class CountTokensRequest(_Request):
    model: str = Field(min_length=1)
    messages: list[MessageParam] = Field(min_length=1)
    system: str | list[TextBlock] | None = None
    thinking: ThinkingConfig | None = None
    tool_choice: ToolChoice | None = None
    tools: list[Tool] | None = None
    mcp_servers: list[dict[str, Any]] | None = None


class MessagesRequest(CountTokensRequest):
    max_tokens: int = Field(ge=1)
    cache_control: dict[str, Any] | None = None
    container: str | dict[str, Any] | None = None
    context_management: dict[str, Any] | None = None
    metadata: dict[str, Any] | None = None
    output_config: OutputConfig | None = None
    service_tier: str | None = None
    stop_sequences: list[str] | None = None
    stream: bool | None = None
    temperature: float | None = Field(default=None, ge=0.0, le=1.0)
    top_k: int | None = Field(default=None, ge=0)
    top_p: float | None = Field(default=None, ge=0.0, le=1.0)


# ---------------------------------------------------------------------------------------------------------------
# Responses
# ---------------------------------------------------------------------------------------------------------------


class Usage(_Response):
    input_tokens: int
    output_tokens: int
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0


class TextOut(_Response):
    type: Literal["text"] = "text"
    text: str


class ThinkingOut(_Response):
    type: Literal["thinking"] = "thinking"
    thinking: str
    signature: str


class ToolUseOut(_Response):
    type: Literal["tool_use"] = "tool_use"
    id: str
    name: str
    input: dict[str, Any]


ContentOut = TextOut | ThinkingOut | ToolUseOut
StopReason = Literal["end_turn", "max_tokens", "stop_sequence", "tool_use", "pause_turn", "refusal"]


class Message(_Response):
    id: str
    type: Literal["message"] = "message"
    role: Literal["assistant"] = "assistant"
    model: str
    content: list[ContentOut]
    stop_reason: StopReason | None = None
    stop_sequence: str | None = None
    usage: Usage


class CountTokensResponse(_Response):
    input_tokens: int


class ErrorDetail(_Response):
    type: str
    message: str


class ErrorResponse(_Response):
    type: Literal["error"] = "error"
    error: ErrorDetail


# ---------------------------------------------------------------------------------------------------------------
# Stream events (https://docs.anthropic.com/en/docs/build-with-claude/streaming); the SSE ``event:`` name is
# each event's ``type``
# ---------------------------------------------------------------------------------------------------------------


class TextDelta(_Response):
    type: Literal["text_delta"] = "text_delta"
    text: str


class InputJSONDelta(_Response):
    type: Literal["input_json_delta"] = "input_json_delta"
    partial_json: str


class ThinkingDelta(_Response):
    type: Literal["thinking_delta"] = "thinking_delta"
    thinking: str


class SignatureDelta(_Response):
    type: Literal["signature_delta"] = "signature_delta"
    signature: str


class MessageStartEvent(_Response):
    type: Literal["message_start"] = "message_start"
    message: Message


class ContentBlockStartEvent(_Response):
    type: Literal["content_block_start"] = "content_block_start"
    index: int
    content_block: ContentOut


class ContentBlockDeltaEvent(_Response):
    type: Literal["content_block_delta"] = "content_block_delta"
    index: int
    delta: TextDelta | InputJSONDelta | ThinkingDelta | SignatureDelta


class ContentBlockStopEvent(_Response):
    type: Literal["content_block_stop"] = "content_block_stop"
    index: int


class MessageDelta(_Response):
    stop_reason: StopReason | None
    stop_sequence: str | None


class MessageDeltaEvent(_Response):
    type: Literal["message_delta"] = "message_delta"
    delta: MessageDelta
    usage: Usage


class MessageStopEvent(_Response):
    type: Literal["message_stop"] = "message_stop"


class PingEvent(_Response):
    type: Literal["ping"] = "ping"
