"""OpenAI Responses API wire models (pydantic v2): ``/v1/responses`` requests, the ``response`` object, its output
items and the streaming events.

Owns the JSON shapes only, following the API reference (https://platform.openai.com/docs/api-reference/responses,
.../responses-streaming). Input items may omit ``type`` (a bare ``{"role", "content"}`` is a message); unknown
item and content types are refused by validation. Output items are valid input items too, which is how a stored
conversation is replayed for ``previous_response_id``. Unknown request fields are accepted and logged once.

Must not know the engine, the chat layer or HTTP routing: ``convert_responses.py`` translates these to native types.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, field_validator

from kaiyuan.protocol.openai import _Request

__all__ = [
    "ContentPartEvent",
    "ErrorEvent",
    "FunctionCallArgumentsDeltaEvent",
    "FunctionCallArgumentsDoneEvent",
    "FunctionCallItem",
    "FunctionCallOutputItem",
    "FunctionTool",
    "InputItem",
    "InputMessage",
    "InputTokensDetails",
    "ItemProgressEvent",
    "ItemReference",
    "LifecycleEvent",
    "McpCallItem",
    "McpListToolsItem",
    "OutputItemEvent",
    "OutputTokensDetails",
    "ReasoningConfig",
    "ReasoningItem",
    "ReasoningTextDeltaEvent",
    "ReasoningTextDoneEvent",
    "Response",
    "ResponseError",
    "ResponseUsage",
    "ResponsesRequest",
    "TextConfig",
    "TextDeltaEvent",
    "TextDoneEvent",
    "TextFormat",
]


class _Wire(BaseModel):
    """Base of output objects and events: exact fields, all written (the SDK reads nulls as absent)."""

    model_config = ConfigDict(extra="forbid")


# ---------------------------------------------------------------------------------------------------------------
# Input items (https://platform.openai.com/docs/api-reference/responses/create#responses-create-input)
# ---------------------------------------------------------------------------------------------------------------


class ContentPart(_Request):
    """``input_text`` / ``output_text`` / ``refusal``; ``input_image`` / ``input_file`` / ``input_audio`` parse
    here and are refused by the converter with a message that says why."""

    type: Literal["input_text", "output_text", "refusal", "input_image", "input_file", "input_audio"]
    text: str | None = None
    refusal: str | None = None


class InputMessage(_Request):
    type: Literal["message"] = "message"
    role: Literal["user", "system", "developer", "assistant"]
    content: str | list[ContentPart]
    id: str | None = None
    status: str | None = None


class FunctionCallItem(_Request):
    type: Literal["function_call"]
    call_id: str = Field(min_length=1)
    name: str = Field(min_length=1)
    arguments: str
    id: str | None = None
    status: str | None = None


class FunctionCallOutputItem(_Request):
    type: Literal["function_call_output"]
    call_id: str = Field(min_length=1)
    output: str | list[ContentPart]
    id: str | None = None
    status: str | None = None


class ReasoningText(_Request):
    type: Literal["reasoning_text", "summary_text"]
    text: str


class ReasoningItem(_Request):
    type: Literal["reasoning"]
    id: str | None = None
    summary: list[ReasoningText] = Field(default_factory=list)
    content: list[ReasoningText] | None = None
    encrypted_content: str | None = None
    status: str | None = None


class ItemReference(_Request):
    type: Literal["item_reference"]
    id: str


class McpListToolsItem(_Request):
    type: Literal["mcp_list_tools"]
    id: str | None = None
    server_label: str
    tools: list[dict[str, Any]] = Field(default_factory=list)
    error: str | None = None


class McpCallItem(_Request):
    type: Literal["mcp_call"]
    id: str = Field(min_length=1)
    server_label: str
    name: str = Field(min_length=1)
    arguments: str
    output: str | None = None
    error: str | None = None
    status: str | None = None


def _item_type(value: Any) -> str:
    if isinstance(value, dict):
        return str(value.get("type", "message"))
    return str(getattr(value, "type", "message"))


InputItem = Annotated[
    Annotated[InputMessage, Tag("message")]
    | Annotated[FunctionCallItem, Tag("function_call")]
    | Annotated[FunctionCallOutputItem, Tag("function_call_output")]
    | Annotated[ReasoningItem, Tag("reasoning")]
    | Annotated[ItemReference, Tag("item_reference")]
    | Annotated[McpListToolsItem, Tag("mcp_list_tools")]
    | Annotated[McpCallItem, Tag("mcp_call")],
    Discriminator(_item_type),
]


# ---------------------------------------------------------------------------------------------------------------
# Tools, text format, reasoning
# ---------------------------------------------------------------------------------------------------------------


class FunctionTool(_Request):
    """A ``function`` tool, or an ``mcp`` tool naming a server the owner configured; other types are refused."""

    type: str = Field(description="'function' or 'mcp'")
    name: str | None = Field(default=None, max_length=64, pattern=r"^[A-Za-z0-9_.\-]+$")
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None
    # type "mcp"
    server_label: str | None = None
    allowed_tools: list[str] | dict[str, Any] | None = None
    require_approval: str | dict[str, Any] | None = None
    server_url: str | None = None
    connector_id: str | None = None
    headers: dict[str, str] | None = None
    authorization: str | None = None
    server_description: str | None = None


class NamedFunctionChoice(_Request):
    type: str
    name: str | None = None


class TextFormat(_Request):
    type: Literal["text", "json_object", "json_schema"]
    name: str | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    description: str | None = None
    strict: bool | None = None

    model_config = ConfigDict(extra="allow", populate_by_name=True)


class TextConfig(_Request):
    format: TextFormat | None = None
    verbosity: str | None = None


class ReasoningConfig(_Request):
    effort: Literal["none", "minimal", "low", "medium", "high", "xhigh"] | None = None
    summary: str | None = None
    generate_summary: str | None = None


# ---------------------------------------------------------------------------------------------------------------
# Request (https://platform.openai.com/docs/api-reference/responses/create)
# ---------------------------------------------------------------------------------------------------------------


METADATA_MAX_PAIRS, METADATA_MAX_KEY, METADATA_MAX_VALUE = 16, 64, 512


class ResponsesRequest(_Request):
    background: bool | None = None
    conversation: str | dict[str, Any] | None = None
    include: list[str] | None = None
    input: list[InputItem] | str = Field(description="Text, or a list of items (at most 4096).")
    instructions: str | None = None
    max_output_tokens: int | None = Field(default=None, ge=1)
    max_tool_calls: int | None = Field(default=None, ge=1)
    metadata: dict[str, str] | None = None
    model: str = Field(min_length=1)
    parallel_tool_calls: bool | None = None
    previous_response_id: str | None = None
    prompt: dict[str, Any] | None = None
    prompt_cache_key: str | None = None
    reasoning: ReasoningConfig | None = None
    safety_identifier: str | None = None
    service_tier: str | None = None
    store: bool | None = None
    stream: bool | None = None
    stream_options: dict[str, Any] | None = None
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    text: TextConfig | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedFunctionChoice | None = None
    tools: list[FunctionTool] | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    top_p: float | None = Field(default=None, ge=0.0, le=1.0)
    truncation: Literal["auto", "disabled"] | None = None
    user: str | None = None
    # kaiyuan extensions
    seed: int | None = Field(default=None, description="Sampling seed, for reproducible answers.")
    top_k: int | None = Field(
        default=None, ge=0, description="Sample from the k most likely tokens (0: all)."
    )

    @field_validator("metadata")
    @classmethod
    def _metadata_bounds(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        # OpenAI's bounds: metadata is stored with the response, so an unbounded map would grow the store
        if value is not None:
            if len(value) > METADATA_MAX_PAIRS:
                raise ValueError(f"at most {METADATA_MAX_PAIRS} key-value pairs")
            for key, text in value.items():
                if len(key) > METADATA_MAX_KEY or len(text) > METADATA_MAX_VALUE:
                    raise ValueError(
                        f"keys are at most {METADATA_MAX_KEY} characters and values at most "
                        f"{METADATA_MAX_VALUE} (key {key[:METADATA_MAX_KEY]!r})"
                    )
        return value


# ---------------------------------------------------------------------------------------------------------------
# The response object
# ---------------------------------------------------------------------------------------------------------------


class InputTokensDetails(_Wire):
    cached_tokens: int = 0


class OutputTokensDetails(_Wire):
    reasoning_tokens: int = 0


class ResponseUsage(_Wire):
    input_tokens: int
    input_tokens_details: InputTokensDetails
    output_tokens: int
    output_tokens_details: OutputTokensDetails
    total_tokens: int


class ResponseError(_Wire):
    code: str
    message: str


class Response(_Wire):
    """The ``response`` object. ``output`` holds item dicts (message, reasoning, function_call) as built by the
    converter; ``tools`` / ``tool_choice`` / ``text`` / ``reasoning`` echo what the request asked."""

    id: str
    object: Literal["response"] = "response"
    created_at: int
    status: Literal["completed", "failed", "in_progress", "cancelled", "queued", "incomplete"]
    background: bool = False
    error: ResponseError | None = None
    incomplete_details: dict[str, str] | None = None
    instructions: str | None = None
    max_output_tokens: int | None = None
    max_tool_calls: int | None = None
    metadata: dict[str, str] = Field(default_factory=dict)
    model: str
    output: list[dict[str, Any]] = Field(default_factory=list)
    parallel_tool_calls: bool = True
    previous_response_id: str | None = None
    reasoning: dict[str, Any] | None = None
    store: bool = True
    temperature: float | None = None
    text: dict[str, Any] = Field(default_factory=lambda: {"format": {"type": "text"}})
    tool_choice: Any = "auto"
    tools: list[dict[str, Any]] = Field(default_factory=list)
    top_logprobs: int | None = None
    top_p: float | None = None
    truncation: str = "disabled"
    usage: ResponseUsage | None = None
    user: str | None = None


# ---------------------------------------------------------------------------------------------------------------
# Streaming events (https://platform.openai.com/docs/api-reference/responses-streaming); the SSE ``event:`` name
# is each event's ``type``
# ---------------------------------------------------------------------------------------------------------------


class LifecycleEvent(_Wire):
    type: Literal[
        "response.created",
        "response.queued",
        "response.in_progress",
        "response.completed",
        "response.incomplete",
        "response.failed",
    ]
    sequence_number: int
    response: Response


class OutputItemEvent(_Wire):
    type: Literal["response.output_item.added", "response.output_item.done"]
    sequence_number: int
    output_index: int
    item: dict[str, Any]


class ContentPartEvent(_Wire):
    type: Literal["response.content_part.added", "response.content_part.done"]
    sequence_number: int
    item_id: str
    output_index: int
    content_index: int
    part: dict[str, Any]


class TextDeltaEvent(_Wire):
    type: Literal["response.output_text.delta"] = "response.output_text.delta"
    sequence_number: int
    item_id: str
    output_index: int
    content_index: int
    delta: str
    logprobs: list[dict[str, Any]] = Field(default_factory=list)


class TextDoneEvent(_Wire):
    type: Literal["response.output_text.done"] = "response.output_text.done"
    sequence_number: int
    item_id: str
    output_index: int
    content_index: int
    text: str
    logprobs: list[dict[str, Any]] = Field(default_factory=list)


class ReasoningTextDeltaEvent(_Wire):
    type: Literal["response.reasoning_text.delta"] = "response.reasoning_text.delta"
    sequence_number: int
    item_id: str
    output_index: int
    content_index: int
    delta: str


class ReasoningTextDoneEvent(_Wire):
    type: Literal["response.reasoning_text.done"] = "response.reasoning_text.done"
    sequence_number: int
    item_id: str
    output_index: int
    content_index: int
    text: str


class FunctionCallArgumentsDeltaEvent(_Wire):
    type: Literal["response.function_call_arguments.delta"] = "response.function_call_arguments.delta"
    sequence_number: int
    item_id: str
    output_index: int
    delta: str


class FunctionCallArgumentsDoneEvent(_Wire):
    type: Literal["response.function_call_arguments.done"] = "response.function_call_arguments.done"
    sequence_number: int
    item_id: str
    output_index: int
    name: str
    arguments: str


class ItemProgressEvent(_Wire):
    """``response.mcp_list_tools.in_progress`` / ``.completed`` / ``.failed``, ``response.mcp_call.…``."""

    type: str
    sequence_number: int
    item_id: str
    output_index: int


class ErrorEvent(_Wire):
    type: Literal["error"] = "error"
    sequence_number: int
    code: str | None
    message: str
    param: str | None
