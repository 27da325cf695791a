"""The Engine protocol: what every backend (llama.cpp, vLLM, the fake engine for tests) offers.

An engine sees file paths and token ids; it knows nothing of HTTP, chat templates or model names. The chat layer
renders a prompt, tokenizes it with the engine, submits a ``GenerationRequest`` and reads ``TokenEvent`` objects
from the returned ``GenerationHandle`` (sync or async iteration), cancelling it when it has seen enough.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from kaiyuan.engine._handle import GenerationHandle
from kaiyuan.types import SamplingParams

__all__ = ["Engine", "EngineStats", "GenerationRequest", "ThinkBudget", "TokenEvent"]


@dataclass
class ThinkBudget:
    """Cap on thinking tokens. The engine counts generated tokens until ``end_text`` appears in the output;
    if ``max_tokens`` are spent first, it forces the tokens of ``end_text`` itself and generation goes on."""

    max_tokens: int
    end_text: str = "</think>"


@dataclass
class GenerationRequest:
    """One generation. Contract every engine keeps:

    - ``max_tokens`` (or, when it is None, ``sampling.max_tokens``) caps generated tokens; the room left in the
      context caps them too. Either ends the stream with ``finish_reason == "length"``. A prompt of ``n_ctx``
      tokens or more is refused at ``submit`` with ``ContextOverflow``.
    - An end-of-generation token ends the stream with ``"stop"``; that token is not streamed.
    - ``sampling.stop`` strings are NOT handled by the engine: the chat layer matches them on the text (holding
      back a possible partial match) and cancels the handle.
    - ``grammar`` constrains every generated token; with ``grammar_after`` the output is free until that text has
      been generated, then the grammar applies to what follows (up to 4 whitespace characters first). The
      grammar's answer is owed: an end-of-generation token before ``grammar_after`` appeared is not the end, the
      engine forces the tokens of ``grammar_after`` instead (``TokenEvent.forced``) and goes on.
    - ``think_budget``: tokens count as thinking from the first one until ``end_text`` appears; when the budget is
      spent the engine injects the tokens of ``end_text`` (``TokenEvent.forced``) and generation goes on. Forced
      tokens count as generated tokens.
    - ``adapters``: GGUF LoRA files (stacked, scale 1) for this request only, replacing the engine's own
      defaults; ``()`` runs the bare base model. Requests with different adapters run side by side.
    """

    prompt: list[int]  # token ids, already rendered and tokenized by the chat layer
    sampling: SamplingParams = field(default_factory=SamplingParams)
    max_tokens: int | None = (
        None  # resolved limit on generated tokens; None: sampling.max_tokens, else the context
    )
    grammar: str | None = None  # GBNF constraining the output (llama.cpp grammar syntax), root rule "root"
    grammar_after: str | None = (
        None  # grammar applies only once this text has been generated (e.g. "</think>")
    )
    think_budget: ThinkBudget | None = None
    adapters: tuple[str, ...] | None = None  # GGUF LoRA files for this request; None: the engine's defaults
    embed: bool = False  # reserved: embeddings go through Engine.embed


@dataclass
class TokenEvent:
    token: int  # token id
    text: str  # decoded text of this token; bytes of an incomplete UTF-8 sequence are held back to a later event
    logprob: float | None = None  # log-probability of the chosen token (when sampling.logprobs)
    top_logprobs: list[tuple[str, float]] = field(default_factory=list)
    forced: bool = False  # injected by the engine (think budget), not sampled


@dataclass
class EngineStats:
    running: int = 0  # sequences decoding now
    waiting: int = 0  # requests queued for a slot
    slots: int = 0  # sequence slots in total
    kv_used_cells: int = 0  # KV cells holding tokens (running sequences and cached prefixes)
    kv_total_cells: int = 0  # KV cells in the cache (n_ctx * slots for llama.cpp)
    prefix_cache_hits: int = 0  # requests that reused a cached prefix
    prefix_cache_tokens: int = 0  # prompt tokens served from the cache in total
    prompt_tokens: int = 0  # prompt tokens processed in total
    generated_tokens: int = 0  # tokens generated in total
    # (running, waiting) per LoRA adapter set (real paths; () is the bare base), for engines that serve several
    # adapter models at once; None when the engine does not tell them apart
    by_adapters: dict[tuple[str, ...], tuple[int, int]] | None = None


@runtime_checkable
class Engine(Protocol):
    """A loaded model that generates tokens. Thread-safe: ``submit`` may be called from any thread."""

    model_path: str
    n_ctx: int  # context window of one sequence (tokens)
    n_vocab: int

    def tokenize(self, text: str, *, add_special: bool = False, parse_special: bool = True) -> list[int]: ...

    def detokenize(self, tokens: Sequence[int]) -> str: ...

    def token_text(self, token: int) -> str: ...

    def is_eog(self, token: int) -> bool: ...

    def submit(self, request: GenerationRequest) -> GenerationHandle:
        """Queue a request. Raises ``ContextOverflow`` if the prompt does not fit, ``Overloaded`` if the queue is full."""
        ...

    def embed(self, texts: Sequence[str]) -> list[list[float]]: ...

    def stats(self) -> EngineStats: ...

    def close(self) -> None: ...
