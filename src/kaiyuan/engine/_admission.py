"""Admission rules every engine applies at ``submit``: does the prompt fit, how many tokens may it generate.

Owns the context policy, the same for every backend:

- a prompt of ``n_ctx`` tokens or more is rejected with ``ContextOverflow`` (it leaves no room for one token);
- otherwise generation is capped by ``max_tokens`` *and* by the room left in the context; reaching either ends
  the stream with ``finish_reason == "length"``. A ``max_tokens`` larger than the room left is not an error
  (llama-server and Ollama behave the same way); the usage the client receives shows what happened.

Knows nothing of queues, threads or llama.cpp.
"""

from __future__ import annotations

from kaiyuan.engine._protocol import GenerationRequest
from kaiyuan.errors import ContextOverflow, InvalidRequest

__all__ = ["check_request", "generation_limit"]


def check_request(request: GenerationRequest, n_ctx: int, n_vocab: int) -> None:
    """Raise ``InvalidRequest``/``ContextOverflow`` for a request no engine can run."""
    n_prompt = len(request.prompt)
    if n_prompt == 0:
        raise InvalidRequest("the prompt is empty: give at least one token", param="prompt")
    if n_prompt >= n_ctx:
        raise ContextOverflow(
            f"the prompt has {n_prompt} tokens but the context window is {n_ctx} tokens "
            f"(room is needed for at least one generated token); shorten the prompt or load the model "
            f"with a larger context (--ctx)",
            prompt_tokens=n_prompt,
            context_length=n_ctx,
        )
    bad = [t for t in request.prompt if not 0 <= t < n_vocab]
    if bad:
        raise InvalidRequest(
            f"prompt token id {bad[0]} is outside the vocabulary (0..{n_vocab - 1})", param="prompt"
        )
    limit = _requested_limit(request)
    if limit is not None and limit < 0:
        raise InvalidRequest(f"max_tokens must be >= 0, got {limit}", param="max_tokens")
    bad_bias = [t for t in request.sampling.logit_bias if not 0 <= int(t) < n_vocab]
    if bad_bias:
        raise InvalidRequest(
            f"logit_bias token id {bad_bias[0]} is outside the vocabulary (0..{n_vocab - 1})",
            param="logit_bias",
        )
    if request.think_budget is not None:
        if request.think_budget.max_tokens < 0:
            raise InvalidRequest("the thinking budget must be >= 0 tokens", param="max_reasoning_tokens")
        if not request.think_budget.end_text:
            raise InvalidRequest(
                "the thinking budget needs a non-empty end_text", param="max_reasoning_tokens"
            )


def _requested_limit(request: GenerationRequest) -> int | None:
    return request.max_tokens if request.max_tokens is not None else request.sampling.max_tokens


def generation_limit(request: GenerationRequest, n_ctx: int) -> int:
    """Tokens this request may generate: ``max_tokens`` capped by the room left in the context."""
    room = n_ctx - len(request.prompt)
    limit = _requested_limit(request)
    return room if limit is None else min(limit, room)
