"""OpenAI wire models (pydantic v2): requests and responses of the chat, completions, embeddings and models APIs.

Owns the JSON shapes only. Fields follow the OpenAI API reference order
(https://platform.openai.com/docs/api-reference/chat/create, .../completions/create, .../embeddings/create,
.../models); kaiyuan-only fields sit under a ``# kaiyuan extensions`` comment and carry a description. Unknown
request fields are accepted (clients send new fields before servers know them) and logged once per field name.
Must not know the engine, the chat layer or HTTP routing: ``convert_openai.py`` translates these to native types.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = [
    "AssistantMessage",
    "ChatCompletion",
    "ChatCompletionChunk",
    "ChatCompletionRequest",
    "ChatMessage",
    "ChatMessageOut",
    "Choice",
    "ChoiceLogprobs",
    "ChunkChoice",
    "CompletionChoice",
    "CompletionLogprobs",
    "CompletionRequest",
    "CompletionResponse",
    "CompletionTokensDetails",
    "CompletionUsage",
    "ContentPart",
    "DeltaMessage",
    "DeltaToolCall",
    "DeltaToolCallFunction",
    "DeveloperMessage",
    "Embedding",
    "EmbeddingRequest",
    "EmbeddingResponse",
    "EmbeddingUsage",
    "ErrorDetail",
    "ErrorResponse",
    "FunctionMessage",
    "ImageURLPart",
    "InputAudioPart",
    "InputFilePart",
    "JSONSchemaFormat",
    "LicenseObject",
    "ModelList",
    "ModelObject",
    "NamedToolChoice",
    "PromptTokensDetails",
    "RefusalPart",
    "ResponseFormat",
    "StreamOptions",
    "SystemMessage",
    "TextPart",
    "TokenLogprob",
    "Tool",
    "ToolCall",
    "ToolCallFunction",
    "ToolFunction",
    "ToolMessage",
    "TopLogprob",
    "UserMessage",
]

log = logging.getLogger(__name__)

_logged_unknown: set[tuple[str, str]] = set()


class _Request(BaseModel):
    """Base of request objects: unknown fields are kept (``model_extra``) and logged once per name."""

    model_config = ConfigDict(extra="allow")

    @model_validator(mode="after")
    def _log_unknown_fields(self) -> _Request:
        for name in self.model_extra or {}:
            key = (type(self).__name__, name)
            if key not in _logged_unknown:
                _logged_unknown.add(key)
                log.warning("ignoring unknown field %r in %s (logged once)", name, type(self).__name__)
        return self


class _Response(BaseModel):
    """Base of response objects: exact fields, serialized with ``exclude_unset`` so that a converter decides which
    optional keys appear (OpenAI omits some and sends others as ``null``). Constant tags (``object``, ``role``,
    ``type`` with a non-null default) always appear."""

    model_config = ConfigDict(extra="forbid")

    def model_post_init(self, context: Any, /) -> None:
        for name in ("object", "role", "type"):
            info = type(self).model_fields.get(name)
            if info is not None and info.default is not None:
                self.__pydantic_fields_set__.add(name)


# ---------------------------------------------------------------------------------------------------------------
# Messages and content parts (https://platform.openai.com/docs/api-reference/chat/create#chat-create-messages)
# ---------------------------------------------------------------------------------------------------------------


class TextPart(_Request):
    type: Literal["text"]
    text: str


class ImageURL(_Request):
    url: str
    detail: Literal["auto", "low", "high"] | None = None


class ImageURLPart(_Request):
    type: Literal["image_url"]
    image_url: ImageURL


class InputAudio(_Request):
    data: str
    format: str


class InputAudioPart(_Request):
    type: Literal["input_audio"]
    input_audio: InputAudio


class InputFilePart(_Request):
    type: Literal["file"]
    file: dict[str, Any]


class RefusalPart(_Request):
    type: Literal["refusal"]
    refusal: str


ContentPart = Annotated[
    TextPart | ImageURLPart | InputAudioPart | InputFilePart | RefusalPart, Field(discriminator="type")
]


class ToolCallFunction(_Request):
    name: str
    arguments: str = Field(description="The arguments as a JSON object in text.")


class ToolCall(_Request):
    id: str
    type: Literal["function"] = "function"
    function: ToolCallFunction


class SystemMessage(_Request):
    content: str | list[ContentPart]
    role: Literal["system"]
    name: str | None = None


class DeveloperMessage(_Request):
    content: str | list[ContentPart]
    role: Literal["developer"]
    name: str | None = None


class UserMessage(_Request):
    content: str | list[ContentPart]
    role: Literal["user"]
    name: str | None = None


class AssistantMessage(_Request):
    role: Literal["assistant"]
    audio: dict[str, Any] | None = None
    content: str | list[ContentPart] | None = None
    function_call: dict[str, Any] | None = None
    name: str | None = None
    refusal: str | None = None
    tool_calls: list[ToolCall] | None = None
    # kaiyuan extensions
    reasoning_content: str | None = Field(
        default=None,
        description="The assistant's earlier thinking, passed to the chat template (multi-turn).",
    )
    reasoning: str | None = Field(
        default=None, description="Alias of reasoning_content (vLLM-style clients)."
    )


class ToolMessage(_Request):
    content: str | list[ContentPart]
    role: Literal["tool"]
    tool_call_id: str


class FunctionMessage(_Request):
    content: str | None
    name: str
    role: Literal["function"]


ChatMessage = Annotated[
    SystemMessage | DeveloperMessage | UserMessage | AssistantMessage | ToolMessage | FunctionMessage,
    Field(discriminator="role"),
]


# ---------------------------------------------------------------------------------------------------------------
# Tools, tool choice, response format, stream options
# ---------------------------------------------------------------------------------------------------------------


class ToolFunction(_Request):
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.\-]+$")
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class Tool(_Request):
    type: Literal["function"]
    function: ToolFunction


class NamedFunction(_Request):
    name: str


class NamedToolChoice(_Request):
    type: Literal["function"]
    function: NamedFunction


class JSONSchemaFormat(_Request):
    name: str = Field(min_length=1, max_length=64)
    description: str | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None

    model_config = ConfigDict(extra="allow", populate_by_name=True)


class ResponseFormat(_Request):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JSONSchemaFormat | None = None

    @model_validator(mode="after")
    def _schema_given_for_json_schema(self) -> ResponseFormat:
        if self.type == "json_schema" and self.json_schema is None:
            raise ValueError("response_format of type json_schema needs a json_schema object")
        return self


class StreamOptions(_Request):
    include_usage: bool | None = None
    include_obfuscation: bool | None = None


Stop = str | list[str] | None


# ---------------------------------------------------------------------------------------------------------------
# Chat completions request (https://platform.openai.com/docs/api-reference/chat/create)
# ---------------------------------------------------------------------------------------------------------------


class ChatCompletionRequest(_Request):
    messages: list[ChatMessage] = Field(min_length=1)
    model: str = Field(min_length=1)
    audio: dict[str, Any] | None = None
    frequency_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    function_call: str | dict[str, Any] | None = None
    functions: list[dict[str, Any]] | None = None
    logit_bias: dict[str, float] | None = None
    logprobs: bool | None = None
    max_completion_tokens: int | None = Field(default=None, ge=1)
    max_tokens: int | None = Field(default=None, ge=1)
    metadata: dict[str, Any] | None = None
    modalities: list[str] | None = None
    n: int | None = Field(default=None, ge=1, le=16)
    parallel_tool_calls: bool | None = None
    prediction: dict[str, Any] | None = None
    presence_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    prompt_cache_key: str | None = None
    reasoning_effort: Literal["none", "minimal", "low", "medium", "high", "xhigh", "max"] | None = None
    response_format: ResponseFormat | None = None
    safety_identifier: str | None = None
    seed: int | None = None
    service_tier: str | None = None
    stop: Stop = None
    store: bool | None = None
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    tools: list[Tool] | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    top_p: float | None = Field(default=None, ge=0.0, le=1.0)
    user: str | None = None
    verbosity: str | None = None
    web_search_options: dict[str, Any] | None = None
    # kaiyuan extensions
    top_k: int | None = Field(
        default=None, ge=0, description="Sample from the k most likely tokens (0: all)."
    )
    min_p: float | None = Field(
        default=None,
        ge=0.0,
        le=1.0,
        description="Drop tokens below this fraction of the top token's probability.",
    )
    repetition_penalty: float | None = Field(
        default=None, gt=0.0, le=10.0, description="Penalty on repeated tokens (1.0: off), as in llama.cpp."
    )
    chat_template_kwargs: dict[str, Any] | None = Field(
        default=None, description="Extra variables for the chat template, e.g. {'enable_thinking': false}."
    )
    max_reasoning_tokens: int | None = Field(
        default=None,
        ge=0,
        description="Thinking budget in tokens; when spent the model is made to close its thinking and answer.",
    )


# ---------------------------------------------------------------------------------------------------------------
# Chat completions response and stream chunks (https://platform.openai.com/docs/api-reference/chat/object)
# ---------------------------------------------------------------------------------------------------------------


class TopLogprob(_Response):
    token: str
    logprob: float
    bytes: list[int] | None = None


class TokenLogprob(_Response):
    token: str
    logprob: float
    bytes: list[int] | None = None
    top_logprobs: list[TopLogprob] = Field(default_factory=list)


class ChoiceLogprobs(_Response):
    content: list[TokenLogprob] | None = None
    refusal: list[TokenLogprob] | None = None


class ChatMessageOut(_Response):
    role: Literal["assistant"] = "assistant"
    content: str | None = None
    refusal: str | None = None
    tool_calls: list[ToolCall] | None = None
    # kaiyuan extensions
    reasoning_content: str | None = Field(
        default=None,
        description="The model's thinking, kept out of content. Named 'reasoning' when the server runs with "
        "--reasoning-field reasoning.",
    )
    reasoning: str | None = Field(
        default=None, description="The model's thinking (with --reasoning-field reasoning)."
    )


FinishReason = Literal["stop", "length", "tool_calls", "content_filter", "function_call"]


class Choice(_Response):
    index: int
    message: ChatMessageOut
    logprobs: ChoiceLogprobs | None = None
    finish_reason: FinishReason | None = None


class PromptTokensDetails(_Response):
    cached_tokens: int = 0


class CompletionTokensDetails(_Response):
    reasoning_tokens: int = 0


class CompletionUsage(_Response):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: PromptTokensDetails | None = None
    completion_tokens_details: CompletionTokensDetails | None = None


class ChatCompletion(_Response):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: CompletionUsage | None = None
    system_fingerprint: str | None = None


class DeltaToolCallFunction(_Response):
    name: str | None = None
    arguments: str | None = None


class DeltaToolCall(_Response):
    index: int
    id: str | None = None
    type: Literal["function"] | None = None
    function: DeltaToolCallFunction | None = None


class DeltaMessage(_Response):
    role: Literal["assistant"] | None = None
    content: str | None = None
    refusal: str | None = None
    tool_calls: list[DeltaToolCall] | None = None
    # kaiyuan extensions
    reasoning_content: str | None = Field(default=None, description="A piece of the model's thinking.")
    reasoning: str | None = Field(
        default=None, description="A piece of the model's thinking (--reasoning-field reasoning)."
    )


class ChunkChoice(_Response):
    index: int
    delta: DeltaMessage
    logprobs: ChoiceLogprobs | None = None
    finish_reason: FinishReason | None = None


class ChatCompletionChunk(_Response):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: CompletionUsage | None = None
    system_fingerprint: str | None = None


# ---------------------------------------------------------------------------------------------------------------
# Legacy completions (https://platform.openai.com/docs/api-reference/completions/create)
# ---------------------------------------------------------------------------------------------------------------


class CompletionRequest(_Request):
    model: str = Field(min_length=1)
    prompt: str | list[str] | list[int] | list[list[int]]
    best_of: int | None = Field(default=None, ge=1, le=16)
    echo: bool | None = None
    frequency_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    logit_bias: dict[str, float] | None = None
    logprobs: int | None = Field(default=None, ge=0, le=5)
    max_tokens: int | None = Field(default=16, ge=0)
    n: int | None = Field(default=None, ge=1, le=16)
    presence_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    seed: int | None = None
    stop: Stop = None
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    suffix: str | None = None
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, ge=0.0, le=1.0)
    user: str | None = None
    # kaiyuan extensions
    top_k: int | None = Field(
        default=None, ge=0, description="Sample from the k most likely tokens (0: all)."
    )
    min_p: float | None = Field(
        default=None,
        ge=0.0,
        le=1.0,
        description="Drop tokens below this fraction of the top token's probability.",
    )
    repetition_penalty: float | None = Field(
        default=None, gt=0.0, le=10.0, description="Penalty on repeated tokens (1.0: off), as in llama.cpp."
    )
    response_format: ResponseFormat | None = Field(
        default=None, description="Constrain the completion to JSON (json_object / json_schema), as in chat."
    )


class CompletionLogprobs(_Response):
    tokens: list[str] = Field(default_factory=list)
    token_logprobs: list[float | None] = Field(default_factory=list)
    top_logprobs: list[dict[str, float] | None] = Field(default_factory=list)
    text_offset: list[int] = Field(default_factory=list)


class CompletionChoice(_Response):
    text: str
    index: int
    logprobs: CompletionLogprobs | None = None
    finish_reason: Literal["stop", "length", "content_filter"] | None = None


class CompletionResponse(_Response):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: CompletionUsage | None = None
    system_fingerprint: str | None = None


# ---------------------------------------------------------------------------------------------------------------
# Embeddings (https://platform.openai.com/docs/api-reference/embeddings/create)
# ---------------------------------------------------------------------------------------------------------------


class EmbeddingRequest(_Request):
    input: str | list[str] | list[int] | list[list[int]]
    model: str = Field(min_length=1)
    dimensions: int | None = Field(default=None, ge=1)
    encoding_format: Literal["float", "base64"] | None = None
    user: str | None = None


class Embedding(_Response):
    object: Literal["embedding"] = "embedding"
    embedding: list[float] | str
    index: int


class EmbeddingUsage(_Response):
    prompt_tokens: int
    total_tokens: int


class EmbeddingResponse(_Response):
    object: Literal["list"] = "list"
    data: list[Embedding]
    model: str
    usage: EmbeddingUsage


# ---------------------------------------------------------------------------------------------------------------
# Models (https://platform.openai.com/docs/api-reference/models/object)
# ---------------------------------------------------------------------------------------------------------------


class LicenseObject(_Response):
    """The short license facts of a model (kaiyuan extension); ``kaiyuan license show`` has the full record."""

    model_config = ConfigDict(extra="allow")

    id: str = Field(description="License identifier, e.g. apache-2.0, llama3.1, unknown.")
    name: str = ""
    spdx: str | None = None
    url: str | None = None
    commercial_use: str = Field(default="unknown", description="allowed | conditional | forbidden | unknown")


class ModelObject(_Response):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str
    # kaiyuan extensions
    license: LicenseObject | None = Field(default=None, description="The model's license summary.")
    loaded: bool | None = Field(default=None, description="Whether the server holds the model in memory now.")
    context_length: int | None = Field(default=None, description="Context window the model was trained for.")
    alias_of: str | None = Field(
        default=None,
        description="When this id is another name for a model (smollm2, smollm2:latest): that model's name:tag.",
    )
    evals: list[dict[str, Any]] | None = Field(
        default=None,
        description="What kaiyuan eval, export and convert measured, as recorded on the model (docs/eval.md).",
    )


class ModelList(_Response):
    object: Literal["list"] = "list"
    data: list[ModelObject]


# ---------------------------------------------------------------------------------------------------------------
# Errors (https://platform.openai.com/docs/guides/error-codes)
# ---------------------------------------------------------------------------------------------------------------


class ErrorDetail(_Response):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(_Response):
    error: ErrorDetail
