"""Per-request sampling: a llama.cpp sampler chain built from ``SamplingParams``, and logprobs from raw logits.

Chain order (llama.cpp's own): logit bias → penalties → (grammar) → top-k → top-p → min-p → temperature → dist.
Temperature 0 (or below) is greedy: the argmax after bias, penalties and grammar. Penalties see the generated
tokens only (the last 64), as in vLLM's presence/frequency penalties. ``grammar_after`` makes the grammar lazy:
llama.cpp's grammar sampler waits until the trigger text has been generated, then constrains what follows
(the grammar is fed the trigger itself through a wrapping rule, then at most ``_TRIGGER_WS`` whitespace
characters, then the root rule).

A grammar is checked after the chain, not applied before it (llama.cpp's own rejection sampling, as in
llama-server): the chain picks from the unconstrained logits and only that token is matched against the grammar.
Masking means matching every vocabulary entry against the grammar (5-10 ms per step with a 49k vocabulary, 3x that
with 150k), and the whole batch waits for it; checking one token is free. When the grammar rejects the pick, the
grammar judges the highest candidates first (after bias and penalties: 64, then 1,024) and the whole vocabulary only
when they cannot decide: greedy needs one allowed candidate, top-k sampling ``top_k`` of them (the k best allowed
tokens are then the ones the whole mask would keep). So greedy output is the same as masking first, and so is the
distribution of top-k sampling and of plain temperature sampling (a rejected draw is redrawn from the masked one).

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


_CANDIDATE = np.dtype([("id", np.int32), ("logit", np.float32), ("p", np.float32)])  # llama_token_data
# Candidates the grammar judges, highest logits first, before it judges the whole vocabulary.
GRAMMAR_TIERS = (64, 1024)


@dataclass
class Sampler:
    """An owned llama.cpp sampler chain, and the request's grammar sampler kept beside it (``None`` without a
    grammar). ``free`` must be called once (the scheduler does it).

    ``ptr`` is a chain of two chains: ``pre`` (logit bias, penalties: they change logits in place) and ``post``
    (top-k … greedy or dist: they truncate and pick); the grammar path runs them apart, with the grammar between.
    """

    ptr: Any
    greedy: bool
    pre: Any = None  # borrowed from ptr
    post: Any = None  # borrowed from ptr
    top_k: int = 0
    grammar: Any = None
    _rows: np.ndarray | None = None  # one row per vocabulary entry, reused every step

    @classmethod
    def build(cls, model: Model, request: GenerationRequest) -> Sampler:
        s = request.sampling
        chain = lib.llama_sampler_chain_init(lib.llama_sampler_chain_default_params())
        pre = lib.llama_sampler_chain_init(lib.llama_sampler_chain_default_params())
        post = lib.llama_sampler_chain_init(lib.llama_sampler_chain_default_params())
        lib.llama_sampler_chain_add(chain, pre)  # the outer chain owns both from here on
        lib.llama_sampler_chain_add(chain, post)
        grammar = None
        try:
            if s.logit_bias:
                items = list(s.logit_bias.items())
                arr = (lib.llama_logit_bias * len(items))(
                    *(lib.llama_logit_bias(int(token), float(bias)) for token, bias in items)
                )
                lib.llama_sampler_chain_add(
                    pre, lib.llama_sampler_init_logit_bias(model.n_vocab, len(items), arr)
                )
            if s.repetition_penalty != 1.0 or s.frequency_penalty or s.presence_penalty:
                if s.repetition_penalty <= 0:
                    raise InvalidRequest("repetition_penalty must be > 0", param="repetition_penalty")
                lib.llama_sampler_chain_add(
                    pre,
                    lib.llama_sampler_init_penalties(
                        model.n_vocab,
                        PENALTY_LAST_N,
                        s.repetition_penalty,
                        s.frequency_penalty,
                        s.presence_penalty,
                    ),
                )
            greedy = s.temperature <= 0
            if greedy:
                lib.llama_sampler_chain_add(post, lib.llama_sampler_init_greedy())
            else:
                if s.top_k > 0:
                    lib.llama_sampler_chain_add(post, lib.llama_sampler_init_top_k(s.top_k))
                if 0 < s.top_p < 1:
                    lib.llama_sampler_chain_add(post, lib.llama_sampler_init_top_p(s.top_p, 1))
                if 0 < s.min_p < 1:
                    lib.llama_sampler_chain_add(post, lib.llama_sampler_init_min_p(s.min_p, 1))
                lib.llama_sampler_chain_add(post, lib.llama_sampler_init_temp(s.temperature))
                seed = lib.LLAMA_DEFAULT_SEED if s.seed is None else s.seed & 0xFFFFFFFF
                lib.llama_sampler_chain_add(post, lib.llama_sampler_init_dist(seed))
            if request.grammar:
                grammar = _grammar(model, request.grammar, request.grammar_after)
        except BaseException:
            lib.llama_sampler_free(chain)
            raise
        if grammar is None:
            return cls(chain, greedy)
        rows = np.zeros(model.n_vocab, dtype=_CANDIDATE)
        return cls(chain, greedy, pre, post, max(s.top_k, 0), grammar, rows)

    def sample(self, ctx: Any, index: int) -> int:
        """Pick a token from the logits of batch position ``index`` and record it in the chain (and grammar)."""
        if self.grammar is None:
            return int(lib.llama_sampler_sample(self.ptr, ctx, index))
        adjusted = self._adjusted_logits(ctx, index)
        token = self._pick_whole(adjusted, masked=False)
        if not self._grammar_allows(token):
            token = self._pick_allowed(adjusted)
        self.accept(token)
        return token

    def accept(self, token: int) -> None:
        """Record a token that was not sampled (a forced one) so penalties and grammar see it."""
        if self.grammar is not None:
            lib.llama_sampler_accept(self.grammar, token)
        lib.llama_sampler_accept(self.ptr, token)

    def free(self) -> None:
        if self.ptr:
            lib.llama_sampler_free(self.ptr)  # frees pre and post with it
            self.ptr = self.pre = self.post = None
        if self.grammar:
            lib.llama_sampler_free(self.grammar)
            self.grammar = None

    def _adjusted_logits(self, ctx: Any, index: int) -> np.ndarray:
        """The logits of ``index`` after logit bias and penalties, one per vocabulary entry."""
        assert self._rows is not None
        rows = self._rows
        logits = np.ctypeslib.as_array(lib.llama_get_logits_ith(ctx, index), shape=(len(rows),))
        array = _candidates(rows, np.arange(len(rows), dtype=np.int32), logits)
        lib.llama_sampler_apply(self.pre, ctypes.byref(array))  # bias and penalties change logits in place
        assert ctypes.addressof(array.data.contents) == rows.ctypes.data
        return rows["logit"].copy()

    def _pick_allowed(self, adjusted: np.ndarray) -> int:
        """The chain's pick among the tokens the grammar allows: from the highest candidates when they decide."""
        need = 1 if self.greedy else self.top_k  # allowed candidates that make a tier's answer exact
        for tier in GRAMMAR_TIERS:
            if 0 < need <= tier < len(adjusted):
                ids = np.argpartition(-adjusted, tier)[:tier].astype(np.int32)
                token = self._pick_among(ids, adjusted[ids], need)
                if token is not None:
                    return token
        return self._pick_whole(adjusted, masked=True)

    def _pick_whole(self, adjusted: np.ndarray, *, masked: bool) -> int:
        """Run ``post`` over the whole vocabulary's adjusted logits, after the grammar's mask when ``masked``."""
        assert self._rows is not None
        # the chain sorts and truncates the rows in place: they are filled again for every pass
        array = _candidates(self._rows, np.arange(len(adjusted), dtype=np.int32), adjusted)
        if masked:
            lib.llama_sampler_apply(self.grammar, ctypes.byref(array))
        return self._run_post(array)

    def _pick_among(self, ids: np.ndarray, logits: np.ndarray, need: int) -> int | None:
        """The grammar judges these candidates; ``post`` picks among them when at least ``need`` are allowed."""
        rows = np.empty(len(ids), dtype=_CANDIDATE)
        array = _candidates(rows, ids, logits)
        lib.llama_sampler_apply(self.grammar, ctypes.byref(array))
        if int(np.isfinite(rows["logit"]).sum()) < need:
            return None
        return self._run_post(array)

    def _run_post(self, array: Any) -> int:
        lib.llama_sampler_apply(self.post, ctypes.byref(array))
        if array.selected < 0:
            raise RuntimeError("llama.cpp's sampler chain selected no token")
        return int(array.data[array.selected].id)

    def _grammar_allows(self, token: int) -> bool:
        one = lib.llama_token_data(token, 1.0, 0.0)
        array = lib.llama_token_data_array(ctypes.pointer(one), 1, -1, False)
        lib.llama_sampler_apply(self.grammar, ctypes.byref(array))
        return bool(np.isfinite(array.data[0].logit))


def _candidates(rows: np.ndarray, ids: np.ndarray, logits: np.ndarray) -> Any:
    """``rows`` filled with ``ids`` and their ``logits``, as the llama.cpp array the samplers work on in place."""
    rows["id"] = ids
    rows["logit"] = logits
    rows["p"] = 0.0
    return lib.llama_token_data_array(
        rows.ctypes.data_as(ctypes.POINTER(lib.llama_token_data)), len(rows), -1, False
    )


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
