"""Per-request sampling: a llama.cpp sampler chain built from ``SamplingParams``, and logprobs from raw logits.

Chain order (llama.cpp's own): logit bias → penalties → grammar → top-k → top-p → min-p → temperature → dist.
Temperature 0 (or below) is greedy: the argmax after bias, penalties and grammar. Penalties see the generated
tokens only (the last 64), as in vLLM's presence/frequency penalties. ``grammar_after`` makes the grammar lazy:
llama.cpp's grammar sampler waits until the trigger text has been generated, then constrains what follows
(the grammar is fed the trigger itself through a wrapping rule, then at most ``_TRIGGER_WS`` whitespace
characters, then the root rule).

Logprobs are the model's own distribution (log-softmax of the raw logits, before bias, penalties, grammar or
temperature), like vLLM's default. Knows nothing of batches or slots.
"""

from __future__ import annotations

import ctypes
import re
from dataclasses import dataclass
from typing import Any

import numpy as np
from llama_cpp import llama_cpp as lib

from kaiyuan.engine._protocol import GenerationRequest
from kaiyuan.engine.llama_cpp._model import Model
from kaiyuan.errors import InvalidRequest

__all__ = ["Sampler", "logprobs_of"]

PENALTY_LAST_N = 64
_TRIGGER_RULE = "kaiyuan-after-trigger"
# Whitespace allowed between the trigger and the grammar's root ("</think>\n\n"). Bounded: with an unbounded
# run, a small or random model writes whitespace until max_tokens and the structured answer never starts.
_TRIGGER_WS = 4


def _gbnf_literal(text: str) -> str:
    out = []
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\r":
            out.append("\\r")
        elif ch == "\t":
            out.append("\\t")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


@dataclass
class Sampler:
    """An owned llama.cpp sampler chain. ``free`` must be called once (the scheduler does it)."""

    ptr: Any
    greedy: bool

    @classmethod
    def build(cls, model: Model, request: GenerationRequest) -> Sampler:
        s = request.sampling
        chain = lib.llama_sampler_chain_init(lib.llama_sampler_chain_default_params())
        try:
            if s.logit_bias:
                items = list(s.logit_bias.items())
                arr = (lib.llama_logit_bias * len(items))(
                    *(lib.llama_logit_bias(int(token), float(bias)) for token, bias in items)
                )
                lib.llama_sampler_chain_add(
                    chain, lib.llama_sampler_init_logit_bias(model.n_vocab, len(items), arr)
                )
            if s.repetition_penalty != 1.0 or s.frequency_penalty or s.presence_penalty:
                if s.repetition_penalty <= 0:
                    raise InvalidRequest("repetition_penalty must be > 0", param="repetition_penalty")
                lib.llama_sampler_chain_add(
                    chain,
                    lib.llama_sampler_init_penalties(
                        model.n_vocab,
                        PENALTY_LAST_N,
                        s.repetition_penalty,
                        s.frequency_penalty,
                        s.presence_penalty,
                    ),
                )
            if request.grammar:
                lib.llama_sampler_chain_add(chain, _grammar(model, request.grammar, request.grammar_after))
            greedy = s.temperature <= 0
            if greedy:
                lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_greedy())
            else:
                if s.top_k > 0:
                    lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_top_k(s.top_k))
                if 0 < s.top_p < 1:
                    lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_top_p(s.top_p, 1))
                if 0 < s.min_p < 1:
                    lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_min_p(s.min_p, 1))
                lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_temp(s.temperature))
                seed = lib.LLAMA_DEFAULT_SEED if s.seed is None else s.seed & 0xFFFFFFFF
                lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_dist(seed))
        except BaseException:
            lib.llama_sampler_free(chain)
            raise
        return cls(chain, greedy)

    def sample(self, ctx: Any, index: int) -> int:
        """Pick a token from the logits of batch position ``index`` and record it in the chain."""
        return int(lib.llama_sampler_sample(self.ptr, ctx, index))

    def accept(self, token: int) -> None:
        """Record a token that was not sampled (a forced one) so penalties and grammar see it."""
        lib.llama_sampler_accept(self.ptr, token)

    def free(self) -> None:
        if self.ptr:
            lib.llama_sampler_free(self.ptr)
            self.ptr = None


def _grammar(model: Model, grammar: str, after: str | None) -> Any:
    if not after:
        ptr = lib.llama_sampler_init_grammar(model.vocab, grammar.encode(), b"root")
    else:
        # The lazy grammar replays generated text from where the trigger matched, so the grammar must accept
        # the trigger first; models write whitespace after "</think>", allow a little of it.
        wrapped = (
            f"{grammar}\n{_TRIGGER_RULE} ::= {_gbnf_literal(after)} [ \\t\\n\\r]{{0,{_TRIGGER_WS}}} root\n"
        )
        patterns = (ctypes.c_char_p * 1)(re.escape(after).encode())
        ptr = lib.llama_sampler_init_grammar_lazy_patterns(
            model.vocab, wrapped.encode(), _TRIGGER_RULE.encode(), patterns, 1, None, 0
        )
    if not ptr:
        raise InvalidRequest(
            "the grammar does not parse (llama.cpp GBNF syntax, root rule 'root'); check the rule names and quoting",
            param="grammar",
        )
    return ptr


def logprobs_of(
    ctx: Any, index: int, n_vocab: int, token: int, top: int
) -> tuple[float, list[tuple[int, float]]]:
    """Log-probability of ``token`` and the ``top`` most likely tokens at batch position ``index``."""
    logits = np.ctypeslib.as_array(lib.llama_get_logits_ith(ctx, index), shape=(n_vocab,))
    peak = float(logits.max())
    lse = peak + float(np.log(np.exp(logits - peak).sum()))
    chosen = float(logits[token]) - lse
    if top <= 0:
        return chosen, []
    ids = np.argpartition(-logits, top)[:top] if top < n_vocab else np.arange(n_vocab)
    ids = ids[np.argsort(-logits[ids], kind="stable")]
    return chosen, [(int(i), float(logits[i]) - lse) for i in ids]
