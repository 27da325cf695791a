"""The native chat path: ChatRequest → prompt → engine → Chunk stream. Both API skins and ``kaiyuan run`` use it.

Owns what happens between a native request and the engine, once for every caller:

- rendering the messages (and tools) with the model's template, tokenizing, and refusing prompts that do not fit
  the context (``ContextOverflow`` with the token counts; never silent truncation; the engine checks it);
- ``n`` choices as ``n`` engine requests (the prefix cache shares the prompt between them);
- stop strings, which are never emitted, also when split across tokens (a tail that may start a stop string is
  held back until it is decided);
- the reasoning split and tool-call parsing through the dialect's ``ResponseParser``, with the thinking budget
  (``reasoning_effort`` / ``max_reasoning_tokens``) and grammars for ``tool_choice`` required/named and for
  ``response_format``, applied after the thinking when the model thinks;
- usage (with reasoning and cached tokens) and logprobs.

Must not know HTTP or wire formats: it speaks ``kaiyuan.types`` only. ``stream_chat`` / ``iter_chat`` yield
``Chunk`` objects, ``complete_chat`` collects them into a ``ChatResult``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from kaiyuan.chat._vocabulary import vocabulary
from kaiyuan.chat.grammars import response_format_grammar
from kaiyuan.chat.response_parser import ResponseParser
from kaiyuan.chat.tool_grammars import build_tool_call_grammar
from kaiyuan.engine import Engine, GenerationHandle, GenerationRequest, ThinkBudget, TokenEvent
from kaiyuan.errors import ContextOverflow, InvalidRequest, KaiyuanError, UnsupportedFeature
from kaiyuan.types import (
    ChatRequest,
    Chunk,
    CompletionRequest,
    FinishReason,
    Message,
    ModelInfo,
    TokenLogprob,
    ToolCall,
    ToolCallDelta,
    Usage,
)

__all__ = [
    "REASONING_EFFORT_TOKENS",
    "ChatModel",
    "ChatResult",
    "ChatStream",
    "ChoiceResult",
    "ContextLimit",
    "GenerationObserver",
    "collect_chunks",
    "collect_stream",
    "complete_chat",
    "complete_chat_sync",
    "iter_chat",
    "render_prompt",
    "start_chat",
    "start_chat_async",
    "start_completion",
    "start_completion_async",
    "stream_chat",
]

log = logging.getLogger(__name__)

# reasoning_effort → thinking budget (tokens); None: no budget. "none" closes the thinking at once.
REASONING_EFFORT_TOKENS: dict[str, int | None] = {
    "none": 0,
    "minimal": 128,
    "low": 512,
    "medium": 2048,
    "high": 8192,
    "xhigh": 16384,
    "max": None,
}


class GenerationObserver(Protocol):
    """Told about each generated token (the server's metrics: time to first token, inter-token latency)."""

    def on_token(self, index: int) -> None: ...


@dataclass
class ChatModel:
    """A loaded model ready to chat: its engine, chat template (which knows its dialect) and settings.

    ``max_reasoning_tokens`` is the per-model thinking budget (``[models."name"]`` in kaiyuan.toml); a request's
    own budget wins over it.
    """

    name: str
    engine: Engine
    template: Any  # kaiyuan.chat.ChatTemplate
    info: ModelInfo | None = None
    max_reasoning_tokens: int | None = None
    default_system: str | None = None  # system message used when a request has none (the model's SYSTEM)
    # the model's default sampling options, Ollama-named (an Ollama model's ``params`` layer: temperature,
    # num_predict, stop ...); both API skins apply them under a request's own settings
    default_options: dict[str, Any] = field(default_factory=dict)

    @property
    def dialect(self) -> Any:
        return self.template.dialect


@dataclass
class ChoiceResult:
    """One finished choice: the assistant message, why it ended, and its logprobs (when asked for)."""

    index: int
    message: Message
    finish_reason: FinishReason | None
    logprobs: list[TokenLogprob] = field(default_factory=list)
    stop_sequence: str | None = None  # the stop string that ended the choice, if one did


@dataclass
class ChatResult:
    choices: list[ChoiceResult]
    usage: Usage


# ---------------------------------------------------------------------------------------------------------------
# Stop strings
# ---------------------------------------------------------------------------------------------------------------


class _StopBuffer:
    """Releases generated text token by token, holding back any tail that could begin a stop string.

    Works on whole tokens (text plus logprob), so released text and logprobs stay aligned. When a stop string
    appears, the text before it is released and the rest is dropped.
    """

    def __init__(self, stops: Sequence[str]) -> None:
        self.stops = [s for s in stops if s]
        self.matched: str | None = None  # the stop string that was hit
        self._pending: list[tuple[str, TokenLogprob | None]] = []

    def push(self, text: str, lp: TokenLogprob | None) -> tuple[list[tuple[str, TokenLogprob | None]], bool]:
        """Add one token; returns the tokens now safe to emit and whether a stop string was hit."""
        if not self.stops:
            return [(text, lp)], False
        self._pending.append((text, lp))
        joined = "".join(t for t, _ in self._pending)
        hits = [(pos, s) for s in self.stops if (pos := joined.find(s)) >= 0]
        if hits:
            cut, self.matched = min(hits, key=lambda hit: hit[0])
            released: list[tuple[str, TokenLogprob | None]] = []
            start = 0
            for piece, plp in self._pending:
                if start >= cut:
                    break
                released.append((piece[: cut - start], plp))
                start += len(piece)
            self._pending.clear()
            return released, True
        hold = self._held_tail(joined)
        safe = len(joined) - hold
        released, start = [], 0
        while self._pending and start + len(self._pending[0][0]) <= safe:
            item = self._pending.pop(0)
            start += len(item[0])
            released.append(item)
        return released, False

    def _held_tail(self, text: str) -> int:
        """Length of the longest suffix of ``text`` that is a proper prefix of a stop string."""
        best = 0
        for stop in self.stops:
            for k in range(min(len(stop) - 1, len(text)), best, -1):
                if text.endswith(stop[:k]):
                    best = k
                    break
        return best

    def flush(self) -> list[tuple[str, TokenLogprob | None]]:
        released, self._pending = self._pending, []
        return released


# ---------------------------------------------------------------------------------------------------------------
# One choice: events → chunks
# ---------------------------------------------------------------------------------------------------------------


class _ChoiceDecoder:
    """Turns one generation's ``TokenEvent`` stream into ``Chunk`` objects for choice ``index``."""

    def __init__(
        self,
        index: int,
        engine: Engine,
        *,
        stops: Sequence[str],
        parser: Any | None,
        logprobs: bool,
        top_logprobs: int,
        thinking: bool,
        single_tool_call: bool,
        new_id: Callable[[], str],
    ) -> None:
        self.index = index
        self._engine = engine
        self._new_id = new_id
        self._stops = _StopBuffer(stops)
        self._parser = parser
        self._logprobs = logprobs
        self._top = top_logprobs
        self._saw_reasoning = thinking
        self._single_tool_call = single_tool_call
        self._call_ids: dict[int, str] = {}
        self.tokens = 0
        self._thinking_tokens = 0
        self.stop_hit = False
        self.done = False

    def _logprob(self, event: TokenEvent) -> TokenLogprob | None:
        if not self._logprobs:
            return None
        token = self._engine.token_text(event.token)
        return TokenLogprob(
            token=token,
            logprob=event.logprob if event.logprob is not None else 0.0,
            bytes=list(token.encode("utf-8")),
            top=list(event.top_logprobs[: self._top]),
        )

    def feed(self, event: TokenEvent) -> Chunk | None:
        """One token in; a chunk out when something can be shown. Sets ``stop_hit`` on a stop string."""
        self.tokens += 1
        thinking_before = self._parser is not None and not self._parser.reasoning_done
        released, self.stop_hit = self._stops.push(event.text, self._logprob(event))
        chunk = self._chunk(released)
        if thinking_before:
            self._thinking_tokens += 1  # includes the token that closes the think block
        return chunk

    @property
    def reasoning_tokens(self) -> int:
        """Tokens spent thinking: those generated before the think block closed, when there was one."""
        return self._thinking_tokens if self._saw_reasoning else 0

    def _chunk(self, released: list[tuple[str, TokenLogprob | None]], final: bool = False) -> Chunk | None:
        text = "".join(t for t, _ in released)
        lps = [lp for _, lp in released if lp is not None]
        content, reasoning = text, ""
        calls: list[ToolCallDelta] = []
        if self._parser is not None:
            content = ""
            if text:
                content, reasoning, calls = _split(self._parser.feed(text))
            if final:
                c2, r2, t2 = _split(self._parser.finish())
                content, reasoning, calls = content + c2, reasoning + r2, calls + t2
        calls = self._name_calls(calls)
        if reasoning:
            self._saw_reasoning = True
        if not (content or reasoning or calls or lps):
            return None
        return Chunk(index=self.index, content=content, reasoning=reasoning, tool_calls=calls, logprobs=lps)

    def _name_calls(self, calls: list[ToolCallDelta]) -> list[ToolCallDelta]:
        out = []
        for call in calls:
            if self._single_tool_call and call.index > 0:
                log.info("dropping parallel tool call %d: parallel_tool_calls is false", call.index)
                continue
            if call.index not in self._call_ids:
                self._call_ids[call.index] = call.id or self._new_id()
                call = replace(call, id=self._call_ids[call.index], name=call.name or "")
            else:
                call = replace(call, id=None, name=None)
            out.append(call)
        return out

    def finish(self, engine_reason: str | None) -> Chunk:
        """The last chunk of this choice: whatever was held back, and the finish reason."""
        self.done = True
        released = [] if self.stop_hit else self._stops.flush()
        chunk = self._chunk(released, final=True) or Chunk(index=self.index)
        reason: FinishReason
        if self.stop_hit:
            reason = "stop"
        elif engine_reason == "length":
            reason = "length"
        elif engine_reason == "cancelled":
            reason = "cancelled"
        else:
            reason = "stop"
        if reason == "stop" and self._call_ids:
            reason = "tool_calls"
        chunk.finish_reason = reason
        chunk.stop_sequence = self._stops.matched if self.stop_hit else None
        return chunk


def _split(delta: Any) -> tuple[str, str, list[ToolCallDelta]]:
    if delta is None:
        return "", "", []
    return delta.content or "", delta.reasoning or "", list(delta.tool_calls or [])


# ---------------------------------------------------------------------------------------------------------------
# The stream of one request
# ---------------------------------------------------------------------------------------------------------------


class ChatStream:
    """The running generation of one request (all its choices). Iterate it (sync or async) for ``Chunk``
    objects: each choice's chunks end with one carrying ``finish_reason``; the last chunk of all carries only
    ``usage``. Leaving the iteration early (or ``cancel()``) cancels the engine requests and frees their slots."""

    def __init__(
        self,
        handles: list[GenerationHandle],
        decoders: list[_ChoiceDecoder],
        *,
        prompt_tokens: int,
        prefix: str = "",
        observer: GenerationObserver | None = None,
    ) -> None:
        self._handles = handles
        self._decoders = decoders
        self.prompt_tokens = prompt_tokens
        self._prefix = prefix  # text emitted before generation (completions with echo)
        self._observer = observer

    @property
    def usage(self) -> Usage:
        return Usage(
            prompt_tokens=self.prompt_tokens,
            completion_tokens=sum(d.tokens for d in self._decoders),
            reasoning_tokens=sum(d.reasoning_tokens for d in self._decoders),
            cached_tokens=max((h.cached_tokens for h in self._handles), default=0),
        )

    def cancel(self) -> None:
        for handle in self._handles:
            handle.cancel()

    def _echo(self) -> Iterator[Chunk]:
        if self._prefix:
            for decoder in self._decoders:
                yield Chunk(index=decoder.index, content=self._prefix)

    def _on_event(self, i: int, event: TokenEvent) -> Chunk | None:
        if self._observer is not None:
            self._observer.on_token(i)
        decoder = self._decoders[i]
        chunk = decoder.feed(event)
        if decoder.stop_hit:
            self._handles[i].cancel()
        return chunk

    def __iter__(self) -> Iterator[Chunk]:
        try:
            yield from self._echo()
            for i, handle in enumerate(self._handles):
                decoder = self._decoders[i]
                for event in handle:
                    chunk = self._on_event(i, event)
                    if chunk is not None:
                        yield chunk
                    if decoder.stop_hit:
                        break
                yield decoder.finish(handle.finish_reason)
            yield Chunk(usage=self.usage)
        finally:
            self.cancel()

    async def __aiter__(self) -> AsyncIterator[Chunk]:
        try:
            for chunk in self._echo():
                yield chunk
            if len(self._handles) == 1:
                async for chunk in self._one(0):
                    yield chunk
            else:
                async for chunk in self._merged():
                    yield chunk
            yield Chunk(usage=self.usage)
        finally:
            self.cancel()

    async def _one(self, i: int) -> AsyncIterator[Chunk]:
        handle, decoder = self._handles[i], self._decoders[i]
        async for event in handle:
            chunk = self._on_event(i, event)
            if chunk is not None:
                yield chunk
            if decoder.stop_hit:
                break
        yield decoder.finish(handle.finish_reason)

    async def _merged(self) -> AsyncIterator[Chunk]:
        """Interleave the choices as their tokens arrive."""
        queue: asyncio.Queue[tuple[int, Chunk | BaseException]] = asyncio.Queue()

        async def pump(i: int) -> None:
            try:
                async for chunk in self._one(i):
                    queue.put_nowait((i, chunk))
            except Exception as exc:  # handed to the consumer, which raises it
                queue.put_nowait((i, exc))

        tasks = [asyncio.create_task(pump(i)) for i in range(len(self._handles))]
        try:
            remaining = len(tasks)
            while remaining:
                _, item = await queue.get()
                if isinstance(item, BaseException):
                    raise item
                if item.finish_reason is not None:
                    remaining -= 1
                yield item
        finally:
            for task in tasks:
                task.cancel()
            with contextlib.suppress(BaseException):
                await asyncio.gather(*tasks, return_exceptions=True)


# ---------------------------------------------------------------------------------------------------------------
# Preparing a request
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ContextLimit:
    """A per-request context window smaller than the loaded one (Ollama's ``num_ctx``): a longer prompt is
    refused and generation is capped to what is left, before any grammar is fitted to ``max_tokens``."""

    tokens: int
    name: str = "the context limit"  # what the client calls it, for messages ("num_ctx")
    param: str | None = None  # the request field errors name ("options.num_ctx")

    def room(self, n_prompt: int, max_tokens: int | None) -> int:
        """``max_tokens`` capped to the window (raises ``ContextOverflow`` when the prompt fills it)."""
        if n_prompt >= self.tokens:
            raise ContextOverflow(
                f"the prompt has {n_prompt} tokens but {self.name} is {self.tokens} (room is needed for at least "
                f"one generated token); shorten the prompt or raise {self.param or self.name}",
                prompt_tokens=n_prompt,
                context_length=self.tokens,
                param=self.param,
            )
        room = self.tokens - n_prompt
        return room if max_tokens is None else min(max_tokens, room)


@dataclass
class _Plan:
    """What a chat request becomes before the engine sees it."""

    prompt: str
    tokens: list[int]
    max_tokens: int | None  # the request's, capped by a context limit
    thinking: bool  # the model is certainly thinking at the first generated token
    reasoning_end: str | None
    grammar: str | None
    think_budget: ThinkBudget | None
    parse_tools: bool
    tools: list[dict[str, Any]]


# Template variables that switch thinking on and off (``thinking``: DeepSeek V3.1+, which reads it first).
_THINKING_SWITCHES = ("enable_thinking", "thinking")


def _thinking_off(request: ChatRequest) -> bool:
    """Whether the request turns thinking off: ``reasoning_effort: "none"`` (Ollama's ``think: false``) or
    ``chat_template_kwargs: {"enable_thinking": false}`` (the web chat's switch; or ``thinking: false``)."""
    kwargs = request.chat_template_kwargs
    return request.reasoning_effort == "none" or any(kwargs.get(k) is False for k in _THINKING_SWITCHES)


def _think_budget(model: ChatModel, request: ChatRequest, max_tokens: int | None) -> int | None:
    if request.reasoning_effort is not None and request.reasoning_effort not in REASONING_EFFORT_TOKENS:
        raise InvalidRequest(
            f"reasoning_effort must be one of {', '.join(REASONING_EFFORT_TOKENS)}", param="reasoning_effort"
        )
    if _thinking_off(request):
        return 0  # a template that does not close the think block itself gets it closed at once
    budgets: list[int] = []
    effort = REASONING_EFFORT_TOKENS[request.reasoning_effort] if request.reasoning_effort else None
    if effort is not None:
        budgets.append(effort)
    if request.max_reasoning_tokens is not None:
        budgets.append(request.max_reasoning_tokens)
    elif model.max_reasoning_tokens is not None:
        budgets.append(model.max_reasoning_tokens)
    if not budgets:
        return None
    budget = min(budgets)
    if max_tokens is not None:
        budget = min(budget, max_tokens * 3 // 4)  # the answer keeps at least a quarter of max_tokens
    return max(budget, 0)


# Whitespace the engine lets through between the end of the thinking and the grammar (GenerationRequest contract).
_WHITESPACE_AFTER_THINKING = 4


def _answer_room(
    engine: Engine, max_tokens: int | None, think_budget: int | None, reasoning_end: str | None
) -> int | None:
    """Tokens a grammar-bound answer may take: ``max_tokens``, less what thinking can take first — its budget,
    the end marker the engine forces when the budget is spent, and the whitespace allowed after it."""
    if max_tokens is None:
        return None
    if think_budget is None or not reasoning_end:
        return max_tokens
    marker = len(engine.tokenize(reasoning_end, add_special=False, parse_special=True))
    return max(max_tokens - think_budget - marker - _WHITESPACE_AFTER_THINKING, 1)


def _plan_chat(model: ChatModel, request: ChatRequest, limit: ContextLimit | None = None) -> _Plan:
    dialect = model.dialect
    tool_choice = (
        request.tool_choice if request.tool_choice is not None else ("auto" if request.tools else "none")
    )
    use_tools = bool(request.tools) and tool_choice != "none"
    tools = list(request.tools) if use_tools else []
    forced_tool = use_tools and tool_choice != "auto"
    if use_tools and not forced_tool and request.response_format is not None:
        raise UnsupportedFeature(
            "response_format together with tools and tool_choice 'auto' cannot be enforced; use tool_choice "
            "'none' (JSON answer) or 'required' (a tool call)",
            param="response_format",
        )

    reserved = sorted({"messages", "tools", "add_generation_prompt"} & set(request.chat_template_kwargs))
    if reserved:
        raise InvalidRequest(
            f"chat_template_kwargs may not set {', '.join(reserved)}: those come from the request itself",
            param="chat_template_kwargs",
        )
    kwargs = dict(request.chat_template_kwargs)
    if request.reasoning_effort is not None:
        kwargs.setdefault("reasoning_effort", dialect.template_reasoning_effort(request.reasoning_effort))
    switched = any(k in kwargs for k in _THINKING_SWITCHES)
    if dialect.has_reasoning and model.template.has_thinking_switch and not switched:
        # A reasoning model thinks unless the request says otherwise: some templates (the R1 distills in
        # llama.cpp's collection, DeepSeek V3.1+, QwQ) treat an undefined switch as off; llama-server passes
        # enable_thinking=true by default too. reasoning_effort "none" (Ollama's think: false) turns it off.
        kwargs["enable_thinking"] = not _thinking_off(request)
    messages = list(request.messages)
    if model.default_system and not any(m.role in ("system", "developer") for m in messages):
        messages.insert(0, Message(role="system", content=model.default_system))
    prompt = model.template.render(messages, tools=tools or None, add_generation_prompt=True, **kwargs)

    max_tokens = request.sampling.max_tokens
    thinking = False
    budget = None
    reasoning_end = None
    wants_grammar = forced_tool or request.response_format is not None
    if dialect.has_reasoning:
        start, end = dialect.reasoning_start, dialect.reasoning_end
        reasoning_end = end
        thinking = bool(dialect.think_opened_in_prompt(prompt))
        closed = prompt.rstrip().endswith(end)
        if not thinking and not closed and (wants_grammar or _think_budget(model, request, None) is not None):
            # A thinking model that has not opened its think block yet: open it, so that the budget counts
            # thinking from the first token and the grammar applies only after the thinking.
            prompt += start
            thinking = True

    tokens = model.engine.tokenize(prompt, add_special=False, parse_special=True)  # once per request
    if limit is not None:
        max_tokens = limit.room(len(tokens), max_tokens)
    if thinking:
        budget = _think_budget(model, request, max_tokens)
        if wants_grammar and budget is None and max_tokens is not None:
            # The structured answer must fit in max_tokens after the thinking: think at most half of it.
            budget = max_tokens // 2

    grammar = None
    room = _answer_room(model.engine, max_tokens, budget if thinking else None, reasoning_end)
    if forced_tool:
        vocab = vocabulary(model.engine)
        grammar = build_tool_call_grammar(
            dialect,
            tools,
            tool_choice,
            request.parallel_tool_calls,
            budget_tokens=room,
            token_of=vocab.token_of,
            tokens_of=vocab.tokens_of,
            longest_token=vocab.longest_token if room is not None else None,
        )
    elif request.response_format is not None:
        grammar = response_format_grammar(
            request.response_format, budget_tokens=room, tokens_of=vocabulary(model.engine).tokens_of
        )

    return _Plan(
        prompt=prompt,
        tokens=tokens,
        max_tokens=max_tokens,
        thinking=thinking,
        reasoning_end=reasoning_end,
        grammar=grammar,
        think_budget=ThinkBudget(budget, reasoning_end) if budget is not None and reasoning_end else None,
        parse_tools=use_tools,
        tools=tools,
    )


@contextlib.contextmanager
def _preparing() -> Iterator[None]:
    """Preparing a request (template, tokenizer, grammar, submit) fails only with kaiyuan's own errors: anything
    else is a bug or a resource limit, reported as a clean server error (the server answers it with its error
    envelope and keeps the connection) with the original chained for the log."""
    try:
        yield
    except KaiyuanError:
        raise
    except UnicodeError as exc:  # JSON may carry lone surrogates ("\ud800"), which no tokenizer takes
        raise InvalidRequest(
            f"the request holds text that is not valid Unicode ({getattr(exc, 'reason', exc)}, e.g. a lone surrogate escape "
            "like \\ud800); send well-formed text"
        ) from exc
    except Exception as exc:
        raise KaiyuanError(
            f"the request could not be prepared ({type(exc).__name__}: {str(exc)[:200]}); this is a bug in kaiyuan "
            "or in the model's chat template, the server log has the details"
        ) from exc


def render_prompt(model: ChatModel, request: ChatRequest) -> str:
    """The prompt text a request becomes (after the template and any think-block opening)."""
    with _preparing():
        return _plan_chat(model, request).prompt


def _submit_all(engine: Engine, requests: list[GenerationRequest]) -> list[GenerationHandle]:
    """Submit the ``n`` requests of one call; if one is refused, cancel the ones already queued."""
    handles: list[GenerationHandle] = []
    try:
        for req in requests:
            handles.append(engine.submit(req))
    except BaseException:
        for handle in handles:
            handle.cancel()
        raise
    return handles


def _per_choice(base: GenerationRequest, n: int) -> list[GenerationRequest]:
    """``n`` engine requests; with a seed, choice ``i`` uses ``seed + i`` so the choices differ yet reproduce."""
    if n == 1:
        return [base]
    seed = base.sampling.seed
    return [
        replace(base, sampling=replace(base.sampling, seed=None if seed is None else seed + i))
        for i in range(n)
    ]


def start_chat(
    model: ChatModel,
    request: ChatRequest,
    *,
    observer: GenerationObserver | None = None,
    context_limit: ContextLimit | None = None,
) -> ChatStream:
    """Render, tokenize and submit ``request``; raises before anything streams (``ContextOverflow``,
    ``Overloaded``, ``InvalidRequest``, ``TemplateError``), so a server can still answer with an error status.
    This is CPU work (template, tokenizer, grammar); async callers use ``start_chat_async``."""
    if request.n < 1:
        raise InvalidRequest("n must be at least 1", param="n")
    with _preparing():
        plan = _plan_chat(model, request, context_limit)
        base = GenerationRequest(
            prompt=plan.tokens,
            sampling=replace(request.sampling, max_tokens=plan.max_tokens),
            max_tokens=plan.max_tokens,
            grammar=plan.grammar,
            grammar_after=plan.reasoning_end if plan.grammar and plan.thinking else None,
            think_budget=plan.think_budget,
        )
        handles = _submit_all(model.engine, _per_choice(base, request.n))
    decoders = [
        _ChoiceDecoder(
            i,
            model.engine,
            stops=request.sampling.stop,
            parser=ResponseParser(
                model.dialect,
                tools=plan.tools,
                starts_in_reasoning=plan.thinking,
                parse_tools=plan.parse_tools,
            ),
            logprobs=request.sampling.logprobs,
            top_logprobs=request.sampling.top_logprobs,
            thinking=plan.thinking,
            single_tool_call=not request.parallel_tool_calls,
            new_id=model.dialect.new_tool_call_id,
        )
        for i in range(request.n)
    ]
    return ChatStream(handles, decoders, prompt_tokens=len(plan.tokens), observer=observer)


def start_completion(
    model: ChatModel,
    request: CompletionRequest,
    *,
    observer: GenerationObserver | None = None,
    context_limit: ContextLimit | None = None,
) -> ChatStream:
    """A raw-prompt completion (no template, no parsing): tokenized with the model's BOS, stop strings and
    ``response_format`` honoured, ``echo`` repeats the prompt first."""
    if request.n < 1:
        raise InvalidRequest("n must be at least 1", param="n")
    with _preparing():
        tokens = model.engine.tokenize(request.prompt, add_special=True, parse_special=True)
        max_tokens = request.sampling.max_tokens
        if context_limit is not None:
            max_tokens = context_limit.room(len(tokens), max_tokens)
        grammar = None
        if request.response_format is not None:
            grammar = response_format_grammar(
                request.response_format,
                budget_tokens=max_tokens,
                tokens_of=vocabulary(model.engine).tokens_of,
            )
        base = GenerationRequest(
            prompt=tokens,
            sampling=replace(request.sampling, max_tokens=max_tokens),
            max_tokens=max_tokens,
            grammar=grammar,
        )
        try:
            handles = _submit_all(model.engine, _per_choice(base, request.n))
        except ContextOverflow as exc:
            exc.param = "prompt"
            raise
    decoders = [
        _ChoiceDecoder(
            i,
            model.engine,
            stops=request.sampling.stop,
            parser=None,
            logprobs=request.sampling.logprobs,
            top_logprobs=request.sampling.top_logprobs,
            thinking=False,
            single_tool_call=False,
            new_id=lambda: "",
        )
        for i in range(request.n)
    ]
    return ChatStream(
        handles,
        decoders,
        prompt_tokens=len(tokens),
        prefix=request.prompt if request.echo else "",
        observer=observer,
    )


# ---------------------------------------------------------------------------------------------------------------
# Off the event loop
# ---------------------------------------------------------------------------------------------------------------

# Preparing a request is CPU work in Python (template, tokenizer, grammar compilation, llama.cpp's grammar
# parser): on the event loop it would stall every stream being written. Two workers: requests prepare in
# parallel with decoding, and few enough threads contend for the GIL with the loop and the scheduler.
_PREPARE = ThreadPoolExecutor(max_workers=2, thread_name_prefix="kaiyuan-prepare")


async def _off_loop(start: Callable[[], ChatStream]) -> ChatStream:
    """``start()`` in a worker thread. If the caller is cancelled meanwhile (the client went away), the stream
    the worker still starts is cancelled as soon as it exists, so its engine slots are freed."""
    future = asyncio.get_running_loop().run_in_executor(_PREPARE, start)
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        future.add_done_callback(_cancel_started)
        raise


def _cancel_started(future: asyncio.Future[ChatStream]) -> None:
    if not future.cancelled() and future.exception() is None:
        future.result().cancel()


async def start_chat_async(
    model: ChatModel,
    request: ChatRequest,
    *,
    observer: GenerationObserver | None = None,
    context_limit: ContextLimit | None = None,
) -> ChatStream:
    """``start_chat`` in a worker thread, for async servers: the event loop keeps writing other streams while
    this request renders, tokenizes and compiles its grammar. Raises what ``start_chat`` raises."""
    return await _off_loop(
        functools.partial(start_chat, model, request, observer=observer, context_limit=context_limit)
    )


async def start_completion_async(
    model: ChatModel,
    request: CompletionRequest,
    *,
    observer: GenerationObserver | None = None,
    context_limit: ContextLimit | None = None,
) -> ChatStream:
    """``start_completion`` in a worker thread (see ``start_chat_async``)."""
    return await _off_loop(
        functools.partial(start_completion, model, request, observer=observer, context_limit=context_limit)
    )


# ---------------------------------------------------------------------------------------------------------------
# Convenience: stream, iterate, complete
# ---------------------------------------------------------------------------------------------------------------


async def stream_chat(
    model: ChatModel, request: ChatRequest, *, observer: GenerationObserver | None = None
) -> AsyncIterator[Chunk]:
    """Async ``Chunk`` stream of a chat request (see ``ChatStream``)."""
    stream = await start_chat_async(model, request, observer=observer)
    async for chunk in stream:
        yield chunk


def iter_chat(model: ChatModel, request: ChatRequest) -> Iterator[Chunk]:
    """Blocking ``Chunk`` stream for the CLI; closing the iterator cancels the generation."""
    yield from start_chat(model, request)


class _Collector:
    """Builds ``ChoiceResult`` objects from a choice's chunks."""

    def __init__(self) -> None:
        self.content: dict[int, list[str]] = {}
        self.reasoning: dict[int, list[str]] = {}
        self.calls: dict[int, dict[int, ToolCall]] = {}
        self.logprobs: dict[int, list[TokenLogprob]] = {}
        self.finish: dict[int, FinishReason | None] = {}
        self.stop_sequence: dict[int, str | None] = {}
        self.usage = Usage()

    def add(self, chunk: Chunk) -> None:
        if chunk.usage is not None:
            self.usage = chunk.usage
        i = chunk.index
        self.content.setdefault(i, []).append(chunk.content)
        self.reasoning.setdefault(i, []).append(chunk.reasoning)
        self.logprobs.setdefault(i, []).extend(chunk.logprobs)
        calls = self.calls.setdefault(i, {})
        for delta in chunk.tool_calls:
            call = calls.setdefault(delta.index, ToolCall(name="", arguments="", id=""))
            call.id = delta.id or call.id
            call.name = delta.name or call.name
            call.arguments += delta.arguments
        if chunk.finish_reason is not None:
            self.finish[i] = chunk.finish_reason
            self.stop_sequence[i] = chunk.stop_sequence

    def result(self) -> ChatResult:
        choices = []
        for i in sorted(self.finish):
            content = "".join(self.content.get(i, []))
            calls = [self.calls[i][k] for k in sorted(self.calls.get(i, {}))]
            reasoning = "".join(self.reasoning.get(i, []))
            message = Message(
                role="assistant",
                content=content if content or not calls else None,
                reasoning_content=reasoning or None,
                tool_calls=calls,
            )
            choices.append(
                ChoiceResult(i, message, self.finish[i], self.logprobs.get(i, []), self.stop_sequence.get(i))
            )
        return ChatResult(choices=choices, usage=self.usage)


def collect_chunks(chunks: Sequence[Chunk]) -> ChatResult:
    """Gather a finished stream's chunks into one result per choice."""
    collector = _Collector()
    for chunk in chunks:
        collector.add(chunk)
    return collector.result()


async def collect_stream(stream: ChatStream) -> ChatResult:
    """Await a started stream (chat or completion) to the end and gather it into one result per choice."""
    collector = _Collector()
    async for chunk in stream:
        collector.add(chunk)
    return collector.result()


async def complete_chat(
    model: ChatModel, request: ChatRequest, *, observer: GenerationObserver | None = None
) -> ChatResult:
    """The whole answer at once (``stream: false``)."""
    return await collect_stream(await start_chat_async(model, request, observer=observer))


def complete_chat_sync(model: ChatModel, request: ChatRequest) -> ChatResult:
    """Blocking ``complete_chat`` for the CLI."""
    return collect_chunks(list(start_chat(model, request)))
