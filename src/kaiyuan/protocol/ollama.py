"""Ollama wire models (pydantic v2): requests and responses of the ``/api`` endpoints kaiyuan serves.

Owns the JSON shapes only, following Ollama's API reference (https://github.com/ollama/ollama/blob/main/docs/api.md)
and its Go types (``api/types.go``): field names, which keys are omitted when empty (responses are written with
``exclude_none``), durations in nanoseconds, tool-call ``arguments`` as a JSON object (not a string as in OpenAI).
kaiyuan-only fields sit under a ``# kaiyuan extensions`` comment and carry a description. Unknown request fields
and unknown ``options`` are accepted (Ollama accepts them too) and logged once per name.

Must not know the engine, the chat layer or HTTP routing: ``convert_ollama.py`` translates these to native types.
"""

from __future__ import annotations

import logging
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = [
    "IGNORED_OPTIONS",
    "ChatRequest",
    "ChatResponse",
    "CopyRequest",
    "DeleteRequest",
    "EmbedRequest",
    "EmbedResponse",
    "EmbeddingRequest",
    "EmbeddingResponse",
    "ErrorResponse",
    "GenerateRequest",
    "GenerateResponse",
    "ListModel",
    "ListResponse",
    "Logprob",
    "Message",
    "MessageOut",
    "ModelDetails",
    "Options",
    "ProcessModel",
    "ProcessResponse",
    "ProgressResponse",
    "PullRequest",
    "ShowRequest",
    "ShowResponse",
    "ThinkLevel",
    "Tool",
    "ToolCall",
    "ToolCallFunction",
    "ToolCallFunctionOut",
    "ToolCallOut",
    "ToolFunction",
    "TopLogprob",
    "VersionResponse",
    "log_once",
]

log = logging.getLogger(__name__)

_logged_unknown: set[tuple[str, str]] = set()

ThinkLevel = Literal["low", "medium", "high", "max"]
Format = Literal["", "json"] | dict[str, Any]
KeepAlive = float | str  # seconds, or a Go duration ("5m", "1h30m", "-1")


def log_once(key: tuple[str, str], message: str, *args: Any) -> None:
    """Log ``message`` at warning level the first time ``key`` is seen in this process."""
    if key not in _logged_unknown:
        _logged_unknown.add(key)
        log.warning(message, *args)


class _Request(BaseModel):
    """Base of request objects: unknown fields are kept (``model_extra``) and logged once per name."""

    model_config = ConfigDict(extra="allow")

    @model_validator(mode="after")
    def _log_unknown_fields(self) -> _Request:
        for name in self.model_extra or {}:
            log_once(
                (type(self).__name__, name),
                "ignoring unknown field %r in Ollama %s (logged once)",
                name,
                type(self).__name__,
            )
        return self


class _Response(BaseModel):
    """Base of response objects: exact fields; serialized with ``exclude_none`` like Go's ``omitempty``."""

    model_config = ConfigDict(extra="forbid")

    def to_json(self) -> str:
        return self.model_dump_json(exclude_none=True)


class _Named(_Request):
    """Requests naming a model in ``model`` or, as older clients do, in ``name``."""

    model: str | None = None
    name: str | None = Field(default=None, description="Deprecated alias of 'model' (older clients send it)")

    @model_validator(mode="after")
    def _model_or_name(self) -> _Named:
        chosen = self.model or self.name
        if not chosen:
            raise ValueError("model is required")
        self.model = chosen
        return self


# ---------------------------------------------------------------------------------------------------------------
# Options (https://github.com/ollama/ollama/blob/main/docs/modelfile.md#valid-parameters-and-values)
# ---------------------------------------------------------------------------------------------------------------


class Options(_Request):
    """Model parameters of a request. Unknown names are accepted and logged once (as Ollama does)."""

    # mapped to kaiyuan's sampling and limits
    num_ctx: int | None = Field(default=None, ge=1)
    num_predict: int | None = None
    temperature: float | None = Field(default=None, ge=0)
    top_k: int | None = None
    top_p: float | None = Field(default=None, ge=0, le=1)
    min_p: float | None = Field(default=None, ge=0, le=1)
    seed: int | None = None
    stop: list[str] | str | None = None
    repeat_penalty: float | None = Field(default=None, gt=0)
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    # accepted and ignored (logged once when set): Ollama runner or sampler settings kaiyuan does not have
    num_keep: int | None = None
    typical_p: float | None = None
    repeat_last_n: int | None = None
    tfs_z: float | None = None
    mirostat: int | None = None
    mirostat_tau: float | None = None
    mirostat_eta: float | None = None
    penalize_newline: bool | None = None
    numa: bool | None = None
    num_batch: int | None = None
    num_gpu: int | None = None
    main_gpu: int | None = None
    low_vram: bool | None = None
    f16_kv: bool | None = None
    logits_all: bool | None = None
    vocab_only: bool | None = None
    use_mmap: bool | None = None
    use_mlock: bool | None = None
    embedding_only: bool | None = None
    num_thread: int | None = None
    draft_num_predict: int | None = None


IGNORED_OPTIONS: tuple[str, ...] = (
    "num_keep",
    "typical_p",
    "repeat_last_n",
    "tfs_z",
    "mirostat",
    "mirostat_tau",
    "mirostat_eta",
    "penalize_newline",
    "numa",
    "num_batch",
    "num_gpu",
    "main_gpu",
    "low_vram",
    "f16_kv",
    "logits_all",
    "vocab_only",
    "use_mmap",
    "use_mlock",
    "embedding_only",
    "num_thread",
    "draft_num_predict",
)


# ---------------------------------------------------------------------------------------------------------------
# Messages and tools
# ---------------------------------------------------------------------------------------------------------------


class ToolCallFunction(_Request):
    index: int | None = None
    name: str
    arguments: dict[str, Any] | str = Field(
        default_factory=dict, description="A JSON object (Ollama); a JSON text is accepted too"
    )


class ToolCall(_Request):
    id: str | None = None
    type: str | None = None
    function: ToolCallFunction


class Message(_Request):
    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: str | None = None
    thinking: str | None = None
    images: list[str] | None = None
    tool_calls: list[ToolCall] | None = None
    tool_name: str | None = None
    tool_call_id: str | None = None


class ToolFunction(_Request):
    name: str = Field(min_length=1)
    description: str | None = None
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})


class Tool(_Request):
    type: Literal["function"] = "function"
    function: ToolFunction


# ---------------------------------------------------------------------------------------------------------------
# Generation requests
# ---------------------------------------------------------------------------------------------------------------


class ChatRequest(_Request):
    """``POST /api/chat``."""

    model: str = Field(min_length=1)
    messages: list[Message] = Field(default_factory=list)
    tools: list[Tool] | None = None
    format: Format | None = None
    options: Options | None = None
    stream: bool | None = Field(default=None, description="Default true: NDJSON stream")
    keep_alive: KeepAlive | None = None
    think: bool | ThinkLevel | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    truncate: bool | None = None
    shift: bool | None = None


class GenerateRequest(_Request):
    """``POST /api/generate``."""

    model: str = Field(min_length=1)
    prompt: str | None = None
    suffix: str | None = None
    system: str | None = None
    template: str | None = None
    context: list[int] | None = None
    stream: bool | None = Field(default=None, description="Default true: NDJSON stream")
    raw: bool | None = None
    format: Format | None = None
    keep_alive: KeepAlive | None = None
    images: list[str] | None = None
    options: Options | None = None
    think: bool | ThinkLevel | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    truncate: bool | None = None
    shift: bool | None = None


class EmbedRequest(_Request):
    """``POST /api/embed``."""

    model: str = Field(min_length=1)
    input: str | list[str] = ""
    truncate: bool | None = None
    options: Options | None = None
    keep_alive: KeepAlive | None = None
    dimensions: int | None = Field(default=None, ge=1)


class EmbeddingRequest(_Request):
    """``POST /api/embeddings`` (legacy, one prompt)."""

    model: str = Field(min_length=1)
    prompt: str = ""
    options: Options | None = None
    keep_alive: KeepAlive | None = None


# ---------------------------------------------------------------------------------------------------------------
# Model management requests
# ---------------------------------------------------------------------------------------------------------------


class ShowRequest(_Named):
    """``POST /api/show``."""

    verbose: bool | None = None
    system: str | None = None
    template: str | None = None
    options: dict[str, Any] | None = None


class DeleteRequest(_Named):
    """``DELETE /api/delete``."""


class CopyRequest(_Request):
    """``POST /api/copy``."""

    source: str = Field(min_length=1)
    destination: str = Field(min_length=1)


class PullRequest(_Named):
    """``POST /api/pull``. ``model`` is an Ollama name (``llama3.2``, ``ns/name:tag``, ``hf.co/org/repo:Q4_K_M``)
    or any kaiyuan pull reference (``hf://…``, ``ms://…``, ``ollama://…``)."""

    insecure: bool | None = None
    stream: bool | None = Field(default=None, description="Default true: NDJSON progress stream")
    username: str | None = None
    password: str | None = None


# ---------------------------------------------------------------------------------------------------------------
# Responses
# ---------------------------------------------------------------------------------------------------------------


class TopLogprob(_Response):
    token: str
    logprob: float
    bytes: list[int] | None = None


class Logprob(_Response):
    token: str
    logprob: float
    bytes: list[int] | None = None
    top_logprobs: list[TopLogprob] | None = None


class ToolCallFunctionOut(_Response):
    index: int
    name: str
    arguments: dict[str, Any]


class ToolCallOut(_Response):
    id: str | None = None
    function: ToolCallFunctionOut


class MessageOut(_Response):
    role: str = "assistant"
    content: str = ""
    thinking: str | None = None
    tool_calls: list[ToolCallOut] | None = None


class ChatResponse(_Response):
    model: str
    created_at: str
    message: MessageOut
    done: bool
    done_reason: str | None = None
    total_duration: int | None = None  # nanoseconds, request received → answer complete
    load_duration: int | None = None  # nanoseconds spent loading the model (0 when it was loaded)
    prompt_eval_count: int | None = None  # prompt tokens
    prompt_eval_duration: int | None = None  # nanoseconds until the first generated token
    eval_count: int | None = None  # generated tokens
    eval_duration: int | None = None  # nanoseconds from the first generated token to the end
    logprobs: list[Logprob] | None = None


class GenerateResponse(_Response):
    model: str
    created_at: str
    response: str = ""
    thinking: str | None = None
    done: bool
    done_reason: str | None = None
    total_duration: int | None = None  # nanoseconds, request received → answer complete
    load_duration: int | None = None  # nanoseconds spent loading the model (0 when it was loaded)
    prompt_eval_count: int | None = None  # prompt tokens
    prompt_eval_duration: int | None = None  # nanoseconds until the first generated token
    eval_count: int | None = None  # generated tokens
    eval_duration: int | None = None  # nanoseconds from the first generated token to the end
    context: list[int] | None = None
    logprobs: list[Logprob] | None = None


class EmbedResponse(_Response):
    model: str
    embeddings: list[list[float]]
    total_duration: int | None = None
    load_duration: int | None = None
    prompt_eval_count: int | None = None


class EmbeddingResponse(_Response):
    embedding: list[float]


class ModelDetails(_Response):
    parent_model: str = ""
    format: str = "gguf"
    family: str = ""
    families: list[str] | None = None
    parameter_size: str = ""
    quantization_level: str = ""


class ListModel(_Response):
    name: str
    model: str
    modified_at: str
    size: int
    digest: str  # hex SHA-256 of the model file (Ollama writes the bare hex)
    details: ModelDetails
    # kaiyuan extensions
    license: str | None = Field(default=None, description="kaiyuan extension: the model's license id")


class ListResponse(_Response):
    models: list[ListModel]


class ProcessModel(_Response):
    name: str
    model: str
    size: int
    digest: str
    details: ModelDetails
    expires_at: str
    size_vram: int = 0
    context_length: int


class ProcessResponse(_Response):
    models: list[ProcessModel]


class ShowResponse(_Response):
    license: str | None = None
    modelfile: str
    parameters: str | None = None
    template: str | None = None
    system: str | None = None
    details: ModelDetails
    model_info: dict[str, Any]
    capabilities: list[str]
    modified_at: str


class ProgressResponse(_Response):
    status: str
    digest: str | None = None
    total: int | None = None
    completed: int | None = None


class VersionResponse(_Response):
    version: str
    # kaiyuan extensions
    kaiyuan: str | None = Field(default=None, description="kaiyuan extension: the kaiyuan version serving")


class ErrorResponse(_Response):
    error: str
