"""Engine-neutral dataclasses shared by chat, engine, server, CLI and tune.

These are the native shapes of the one path every API skin goes through:
``protocol`` (OpenAI / Ollama wire models) converts to ``ChatRequest`` / ``CompletionRequest``, ``chat`` renders and
drives the engine and yields ``Chunk`` objects, and ``protocol`` converts them back. No pydantic here, no HTTP.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = [
    "ChatRequest",
    "Chunk",
    "CompletionRequest",
    "FinishReason",
    "LicenseSummary",
    "Message",
    "ModelInfo",
    "SamplingParams",
    "TokenLogprob",
    "ToolCall",
    "ToolCallDelta",
    "Usage",
]

FinishReason = Literal["stop", "length", "tool_calls", "content_filter", "cancelled"]


@dataclass
class ToolCall:
    """A complete function call the model made. ``arguments`` is a JSON object as text (OpenAI's convention)."""

    name: str
    arguments: str
    id: str = ""
    type: str = "function"


@dataclass
class Message:
    """One chat message. ``content`` is text; multimodal parts are rejected before they get here."""

    role: str  # system | user | assistant | tool (| developer, mapped to system by the template layer)
    content: str | None = None
    reasoning_content: str | None = None  # the assistant's thinking, kept apart from content
    tool_calls: list[ToolCall] = field(default_factory=list)
    tool_call_id: str | None = None  # for role == "tool": the call this result answers
    name: str | None = None  # optional participant / tool name


@dataclass
class SamplingParams:
    """How to pick tokens. Defaults follow llama.cpp's; ``None`` means "model or server default"."""

    temperature: float = 0.8
    top_p: float = 0.95
    top_k: int = 40
    min_p: float = 0.05
    max_tokens: int | None = None  # None: until end of generation or the context is full
    stop: list[str] = field(default_factory=list)  # stop strings, never emitted in the output
    seed: int | None = None  # None: a random seed per request
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repetition_penalty: float = 1.0
    logit_bias: dict[int, float] = field(default_factory=dict)  # token id -> bias added to its logit
    logprobs: bool = False
    top_logprobs: int = 0  # 0..20 alternatives per position


@dataclass
class ChatRequest:
    """A chat completion request in kaiyuan's native shape (what OpenAI and Ollama routes convert into)."""

    model: str
    messages: list[Message]
    sampling: SamplingParams = field(default_factory=SamplingParams)
    n: int = 1
    stream: bool = False
    tools: list[dict[str, Any]] = field(
        default_factory=list
    )  # OpenAI tool objects {"type":"function","function":{...}}
    tool_choice: str | dict[str, Any] | None = (
        None  # "none" | "auto" | "required" | {"type":"function","function":{"name":..}}
    )
    parallel_tool_calls: bool = True
    response_format: dict[str, Any] | None = (
        None  # {"type": "text"|"json_object"|"json_schema", "json_schema": {...}}
    )
    reasoning_effort: str | None = None  # low | medium | high
    max_reasoning_tokens: int | None = None  # thinking budget (tokens); None: model setting or unlimited
    chat_template_kwargs: dict[str, Any] = field(default_factory=dict)  # extra variables for the template
    user: str | None = None


@dataclass
class CompletionRequest:
    """A raw prompt completion (OpenAI legacy /v1/completions, Ollama /api/generate raw)."""

    model: str
    prompt: str
    sampling: SamplingParams = field(default_factory=SamplingParams)
    n: int = 1
    stream: bool = False
    echo: bool = False
    response_format: dict[str, Any] | None = None


@dataclass
class TokenLogprob:
    token: str
    logprob: float
    bytes: list[int] | None = None
    top: list[tuple[str, float]] = field(default_factory=list)  # alternatives (token text, logprob)


@dataclass
class ToolCallDelta:
    """A streamed piece of a tool call, in OpenAI's delta shape: id/name come once, arguments in fragments."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""


@dataclass
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    reasoning_tokens: int = 0  # part of completion_tokens spent thinking
    cached_tokens: int = 0  # part of prompt_tokens served from the prefix cache

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass
class Chunk:
    """One streamed event of one choice. The final chunk of a choice carries ``finish_reason``; the very last
    chunk of a request may carry ``usage`` (for all choices together)."""

    index: int = 0  # choice index (n > 1)
    content: str = ""
    reasoning: str = ""
    tool_calls: list[ToolCallDelta] = field(default_factory=list)
    logprobs: list[TokenLogprob] = field(default_factory=list)
    finish_reason: FinishReason | None = None
    stop_sequence: str | None = None  # with finish_reason "stop": the stop string that ended the choice
    usage: Usage | None = None


@dataclass
class LicenseSummary:
    """The short license facts a model listing shows; the license package has the full record."""

    id: str = "unknown"
    name: str = ""
    spdx: str | None = None
    url: str | None = None
    commercial_use: str = "unknown"  # allowed | conditional | forbidden | unknown


@dataclass
class ModelInfo:
    """What the server and CLI know about a store model without loading it."""

    name: str  # name:tag
    path: str  # GGUF file on disk
    architecture: str = ""
    parameters: int = 0
    quantization: str = ""
    context_length: int = 0
    size: int = 0  # bytes
    digest: str = ""  # sha256-<hex> of the blob
    created: float = 0.0  # unix time added to the store
    adapters: list[str] = field(default_factory=list)  # GGUF LoRA adapter files applied on top of ``path``
    license: LicenseSummary = field(default_factory=LicenseSummary)
    details: dict[str, Any] = field(default_factory=dict)
    evals: list[dict[str, Any]] = field(default_factory=list)  # kaiyuan eval's records (docs/eval.md)
