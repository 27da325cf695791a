"""One kaiyuan request on vLLM, run as one or more vLLM requests ("phases") in turn.

vLLM samples a request start to end with one set of sampling parameters. kaiyuan's ``GenerationRequest`` asks
for more: a grammar that starts only after ``grammar_after`` ("</think>"), a thinking budget after which the end
marker is forced, and an owed answer (an end-of-generation token before ``grammar_after`` forces that text).
Each of these is a point where the rules change, so the request runs as phases: a phase is a vLLM request whose
prompt is the original prompt plus every token generated so far (vLLM's prefix cache makes that prefill nearly
free), with the cap and grammar in force until the next change point. Forced tokens are streamed with
``forced=True`` and become part of the next phase's prompt.

Owns the phase loop and turning vLLM outputs into ``TokenEvent`` objects (own incremental detokenizing, the
end-of-generation token dropped, logprobs as token texts). Knows nothing of HTTP or chat templates.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from kaiyuan.engine._handle import GenerationHandle
from kaiyuan.engine._protocol import GenerationRequest, TokenEvent
from kaiyuan.engine._text_watch import TextWatch, ThinkTracker
from kaiyuan.engine.vllm._params import after_trigger_grammar, grammar_for_vllm, vllm_params
from kaiyuan.errors import EngineError

__all__ = ["PhaseRunner", "RequestCounters"]

_ids = itertools.count()
# vLLM's finish reasons as phase ends ("stop" is an end-of-generation or stop token: kaiyuan sets no stop strings)
_ENDS = {"stop": "eog", "length": "length", "abort": "cancelled"}


@dataclass
class RequestCounters:
    """Totals the engine reports in ``stats()``, summed over finished and running requests."""

    prompt_tokens: int = 0
    generated_tokens: int = 0
    prefix_cache_hits: int = 0
    prefix_cache_tokens: int = 0


@dataclass
class _State:
    generated: list[int] = field(default_factory=list)  # streamed tokens, forced ones included
    grammar_on: bool = False  # the grammar constrains what is sampled now
    phase: int = 0


class PhaseRunner:
    """Drives one request: call ``run()`` on the engine's event loop; it finishes the handle in every case."""

    def __init__(
        self,
        *,
        llm: Any,  # vllm AsyncLLM
        request: GenerationRequest,
        handle: GenerationHandle,
        limit: int,
        lora: Any,  # vllm LoRARequest or None
        decoder: Callable[[], Any],  # a fresh incremental decoder: .step(token) -> str
        token_text: Callable[[int], str],
        tokenize: Callable[[str], list[int]],
        eog: frozenset[int],
        counters: RequestCounters,
    ) -> None:
        self.llm = llm
        self.request = request
        self.handle = handle
        self.limit = limit
        self.lora = lora
        self._decoder = decoder()
        self._token_text = token_text
        self._tokenize = tokenize
        self._eog = eog
        self._counters = counters
        budget = request.think_budget
        self.think = ThinkTracker(budget) if budget is not None else None
        self.forced_end = self._tokenize(budget.end_text) if budget is not None else []
        self.after = request.grammar_after if request.grammar else None
        self.after_watch = TextWatch(self.after) if self.after else None
        self.after_tokens = self._tokenize(self.after) if self.after else []

    async def run(self) -> None:
        state = _State(grammar_on=bool(self.request.grammar) and not self.after)
        try:
            reason = await self._run(state)
        except asyncio.CancelledError:
            self.handle.finish("cancelled")
            raise
        except (
            Exception
        ) as exc:  # vLLM failed mid-request: the stream ends with the error, the server stays up
            self.handle.finish("stop", EngineError(f"vLLM failed during generation: {exc}"))
            return
        self.handle.finish(reason)

    async def _run(self, state: _State) -> str:
        while True:
            room = self.limit - len(state.generated)
            if room <= 0:
                return "length"
            cap = room
            if self.think is not None and self.think.thinking:
                cap = min(cap, max(self.think.budget.max_tokens - self.think.tokens, 0))
                if cap == 0:  # budget spent while thinking: close the think block by force
                    self._force(state, self.forced_end)
                    continue
            end = await self._phase(state, cap)
            if end == "cancelled":
                return "cancelled"
            if end == "trigger":  # grammar_after appeared: the grammar applies from here on
                state.grammar_on = True
                continue
            if end == "eog":
                if self.after_watch is not None and not self.after_watch.seen:
                    # An answer is owed: the think block closes by force and the grammar takes over.
                    self._force(state, self.after_tokens)
                    continue
                return "stop"
            # "length": the phase's cap was reached; loop decides (context/max_tokens, budget, or go on)

    def _force(self, state: _State, tokens: Sequence[int]) -> None:
        room = self.limit - len(state.generated)
        for token in list(tokens)[: max(room, 0)]:
            self._emit(state, token, None, [], forced=True)
        if self.after_watch is not None and self.after_watch.seen:
            state.grammar_on = True

    def _emit(
        self,
        state: _State,
        token: int,
        logprob: float | None,
        top: list[tuple[str, float]],
        *,
        forced: bool = False,
    ) -> bool:
        """Stream one token; True when it completed ``grammar_after`` (the phase must end here)."""
        text = self._decoder.step(token)
        state.generated.append(token)
        self._counters.generated_tokens += 1
        self.handle.push(TokenEvent(token, text, logprob, top, forced))
        if self.think is not None:
            self.think.feed(text)
        if self.after_watch is not None and not state.grammar_on:
            return self.after_watch.feed(text)
        return False

    async def _phase(self, state: _State, cap: int) -> str:
        """One vLLM request of at most ``cap`` tokens. Returns why it ended: eog, length, trigger, cancelled."""
        from vllm.inputs import TokensPrompt

        grammar = None
        if state.grammar_on and self.request.grammar:
            grammar = grammar_for_vllm(self.request.grammar, self._token_text)
            grammar = after_trigger_grammar(grammar) if self.after else grammar
        params = vllm_params(self.request.sampling, max_tokens=cap, grammar=grammar, seed_offset=state.phase)
        prompt = TokensPrompt(prompt_token_ids=[*self.request.prompt, *state.generated])
        request_id = f"kaiyuan-{next(_ids)}"
        first = state.phase == 0
        state.phase += 1
        top_n = self.request.sampling.top_logprobs if self.request.sampling.logprobs else 0
        stream = self.llm.generate(prompt, params, request_id, lora_request=self.lora)
        try:
            async for output in stream:
                if first:
                    first = False
                    cached = int(output.num_cached_tokens or 0)
                    self.handle.cached_tokens = cached
                    if cached:
                        self._counters.prefix_cache_hits += 1
                        self._counters.prefix_cache_tokens += cached
                if self.handle.cancelled:
                    return "cancelled"
                completion = output.outputs[0]
                logprobs = completion.logprobs or []
                for i, token in enumerate(completion.token_ids):
                    if token in self._eog and completion.finish_reason == "stop":
                        return "eog"  # not streamed, as on llama.cpp
                    if logprobs:
                        chosen, top = self._logprobs(logprobs[i] if i < len(logprobs) else None, token, top_n)
                    else:  # the common case, once per token and stream: no call
                        chosen, top = None, []
                    if self._emit(state, token, chosen, top):
                        return "trigger"
                if completion.finish_reason is not None:
                    return _ENDS.get(completion.finish_reason, "length")
        finally:
            await stream.aclose()  # aborts the vLLM request when it is still running
        return "length"

    def _logprobs(
        self, entry: dict[int, Any] | None, token: int, top_n: int
    ) -> tuple[float | None, list[tuple[str, float]]]:
        if entry is None:
            return None, []
        chosen = entry.get(token)
        ranked = sorted(entry.items(), key=lambda item: item[1].rank)[:top_n]
        return (
            None if chosen is None else float(chosen.logprob),
            [(self._token_text(t), float(lp.logprob)) for t, lp in ranked],
        )
