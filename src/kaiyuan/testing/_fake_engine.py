"""FakeEngine: a deterministic engine for unit tests of the chat and server layers.

It implements the ``Engine`` protocol without a model. Instead of sampling, it streams a *script*: a list of
text pieces (or a function of the request that returns one), one ``TokenEvent`` per piece, from a background
thread that behaves like the real scheduler: a fixed number of slots advanced one token per step, a bounded
waiting queue (``Overloaded``), ``ContextOverflow`` for prompts that do not fit, ``max_tokens`` and the context
end (finish ``length``), the end of the script (finish ``stop``, like an end-of-generation token, which is not
streamed), cancellation within one step, the think budget and a prefix cache over earlier prompts.

Tokenizer: ids 0..255 are the bytes of UTF-8 text, 256 is ``<s>`` (BOS), 257 is ``</s>`` (EOS, end of
generation); ``detokenize(tokenize(text)) == text``. Scripted pieces get ids from 258 up, assigned on first use,
so that each piece is one token. ``grammar``, ``grammar_after``, ``adapters`` and the sampling settings are
recorded (``FakeEngine.requests``) but do not change the script; ``stop`` strings are the chat layer's job (as
with every engine). Logprobs, when asked for, are 0.0: the script is certain.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from kaiyuan.engine._admission import check_request, generation_limit
from kaiyuan.engine._handle import GenerationHandle
from kaiyuan.engine._protocol import EngineStats, GenerationRequest, TokenEvent
from kaiyuan.engine._text_watch import ThinkTracker
from kaiyuan.errors import EngineError, Overloaded

__all__ = ["FakeEngine"]

Script = list[str] | Callable[[GenerationRequest], list[str]]

BOS = 256
EOS = 257
_SPECIALS = {"<s>": BOS, "</s>": EOS}
_FIRST_PIECE = 258
EMBEDDING_DIM = 32


@dataclass
class _Job:
    request: GenerationRequest
    handle: GenerationHandle
    pieces: list[str]
    limit: int  # tokens it may generate (max_tokens capped by the context)
    think: ThinkTracker | None = None
    index: int = 0  # next script piece
    produced: list[int] = field(default_factory=list)


class FakeEngine:
    """A scripted, deterministic engine. See the module docstring for what it imitates.

    ``delay`` is the time of one scheduler step (seconds): every running request gets one token per step.
    ``slots`` requests run at once; up to ``max_queue`` more wait; beyond that ``submit`` raises ``Overloaded``.
    """

    def __init__(
        self,
        script: Script,
        *,
        n_ctx: int = 4096,
        delay: float = 0.0,
        max_queue: int = 64,
        slots: int = 4,
        model_path: str = "fake.gguf",
    ) -> None:
        if slots < 1 or max_queue < 0 or n_ctx < 2:
            raise ValueError("FakeEngine needs slots >= 1, max_queue >= 0 and n_ctx >= 2")
        self.model_path = model_path
        self.n_ctx = n_ctx
        self._script = script
        self._delay = delay
        self._max_queue = max_queue
        self._slots = slots
        self._pieces: dict[str, int] = {}
        self._piece_text: list[str] = []
        self._cond = threading.Condition()
        self._waiting: deque[_Job] = deque()
        self._running: list[_Job] = []
        self._cached_prompts: deque[list[int]] = deque(maxlen=slots)
        self._stats = EngineStats(slots=slots, kv_total_cells=n_ctx * slots)
        self._closed = False
        self.requests: list[GenerationRequest] = []  # every accepted request, in order (for assertions)
        self._thread = threading.Thread(target=self._loop, name="kaiyuan-fake-engine", daemon=True)
        self._thread.start()

    # -- tokenizer ---------------------------------------------------------------------------------
    @property
    def n_vocab(self) -> int:
        with self._cond:
            return _FIRST_PIECE + len(self._piece_text)

    def tokenize(self, text: str, *, add_special: bool = False, parse_special: bool = True) -> list[int]:
        tokens = [BOS] if add_special else []
        rest = text
        while rest:
            special = next((s for s in _SPECIALS if parse_special and rest.startswith(s)), None)
            if special is not None:
                tokens.append(_SPECIALS[special])
                rest = rest[len(special) :]
                continue
            cut = min((i for s in _SPECIALS if parse_special and (i := rest.find(s)) > 0), default=len(rest))
            tokens.extend(rest[:cut].encode("utf-8"))
            rest = rest[cut:]
        return tokens

    def _piece_bytes(self, token: int) -> bytes:
        if 0 <= token < 256:
            return bytes([token])
        if token == BOS:
            return b"<s>"
        if token == EOS:
            return b"</s>"
        with self._cond:
            if _FIRST_PIECE <= token < _FIRST_PIECE + len(self._piece_text):
                return self._piece_text[token - _FIRST_PIECE].encode("utf-8")
        raise ValueError(f"token id {token} is not in the fake vocabulary")

    def detokenize(self, tokens: Sequence[int]) -> str:
        return b"".join(self._piece_bytes(t) for t in tokens).decode("utf-8", errors="replace")

    def token_text(self, token: int) -> str:
        return self._piece_bytes(token).decode("utf-8", errors="replace")

    def is_eog(self, token: int) -> bool:
        return token == EOS

    def _piece_id(self, piece: str) -> int:
        with self._cond:
            token = self._pieces.get(piece)
            if token is None:
                token = _FIRST_PIECE + len(self._piece_text)
                self._pieces[piece] = token
                self._piece_text.append(piece)
            return token

    # -- requests ----------------------------------------------------------------------------------
    def submit(self, request: GenerationRequest) -> GenerationHandle:
        check_request(request, self.n_ctx, self.n_vocab)
        pieces = list(self._script(request) if callable(self._script) else self._script)
        for piece in pieces:
            self._piece_id(piece)
        handle = GenerationHandle(len(request.prompt), on_cancel=self._on_cancel)
        job = _Job(request, handle, pieces, generation_limit(request, self.n_ctx))
        if request.think_budget is not None:
            job.think = ThinkTracker(request.think_budget)
        with self._cond:
            if self._closed:
                raise EngineError("the engine is closed; load the model again")
            if len(self._waiting) + len(self._running) - self._slots >= self._max_queue:
                raise Overloaded(
                    f"{len(self._waiting)} requests are already waiting for this model; retry shortly",
                    retry_after=1.0,
                )
            self.requests.append(request)
            self._waiting.append(job)
            self._cond.notify_all()
        return handle

    def _on_cancel(self, handle: GenerationHandle) -> None:
        with self._cond:
            self._cond.notify_all()

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """A deterministic bag-of-bytes vector (L2-normalised, ``EMBEDDING_DIM`` wide) per text."""
        vectors = []
        for text in texts:
            vec = [0.0] * EMBEDDING_DIM
            for i, byte in enumerate(text.encode("utf-8")):
                vec[(byte + i) % EMBEDDING_DIM] += 1.0
            norm = math.sqrt(sum(v * v for v in vec)) or 1.0
            vectors.append([v / norm for v in vec])
        return vectors

    def stats(self) -> EngineStats:
        with self._cond:
            return replace(
                self._stats,
                running=len(self._running),
                waiting=len(self._waiting),
                slots=self._slots,
                kv_used_cells=sum(len(j.request.prompt) + len(j.produced) for j in self._running),
            )

    def close(self) -> None:
        with self._cond:
            if self._closed:
                return
            self._closed = True
            jobs = list(self._waiting) + self._running
            self._waiting.clear()
            self._running.clear()
            self._cond.notify_all()
        for job in jobs:
            job.handle.finish("cancelled", EngineError("the engine was closed while this request ran"))
        self._thread.join(timeout=5)

    # -- scheduler thread --------------------------------------------------------------------------
    def _admit(self, job: _Job) -> None:
        prompt = job.request.prompt
        best = 0
        for cached in self._cached_prompts:
            n = 0
            for a, b in zip(cached, prompt, strict=False):
                if a != b:
                    break
                n += 1
            best = max(best, n)
        best = min(best, len(prompt) - 1)  # the last prompt token is always evaluated, as in the real engine
        job.handle.cached_tokens = best
        if best > 0:
            self._stats.prefix_cache_hits += 1
            self._stats.prefix_cache_tokens += best
        self._stats.prompt_tokens += len(prompt)
        self._cached_prompts.append(list(prompt))
        self._running.append(job)

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._closed and not self._waiting and not self._running:
                    self._cond.wait()
                if self._closed:
                    return
                for job in [j for j in self._waiting if j.handle.cancelled]:
                    self._waiting.remove(job)
                    job.handle.finish("cancelled")
                while self._waiting and len(self._running) < self._slots:
                    self._admit(self._waiting.popleft())
                running = list(self._running)
            finished = [job for job in running if self._step(job)]
            if finished:
                with self._cond:
                    for job in finished:
                        if job in self._running:
                            self._running.remove(job)
            if self._delay:
                # One step of the imitated engine: sleep, but wake at once on close.
                with self._cond:
                    if not self._closed:
                        self._cond.wait(self._delay)

    def _step(self, job: _Job) -> bool:
        """Advance one request by one token; True when it has finished."""
        handle = job.handle
        if handle.cancelled:
            handle.finish("cancelled")
            return True
        if len(job.produced) >= job.limit:
            handle.finish("length")
            return True
        if job.think is not None and job.think.should_force():
            self._emit(job, job.think.budget.end_text, forced=True)
            job.index = _after_marker(job.pieces, job.think.budget.end_text, job.index)
            return False
        if job.index >= len(job.pieces):
            handle.finish("stop")
            return True
        piece = job.pieces[job.index]
        job.index += 1
        self._emit(job, piece, forced=False)
        return False

    def _emit(self, job: _Job, piece: str, *, forced: bool) -> None:
        token = self._piece_id(piece)
        job.produced.append(token)
        if job.think is not None:
            job.think.feed(piece)
        logprobs = job.request.sampling.logprobs
        top = [(piece, 0.0)][: job.request.sampling.top_logprobs] if logprobs else []
        with self._cond:
            self._stats.generated_tokens += 1
        job.handle.push(
            TokenEvent(
                token=token, text=piece, logprob=0.0 if logprobs else None, top_logprobs=top, forced=forced
            )
        )


def _after_marker(pieces: list[str], marker: str, index: int) -> int:
    """Index of the first script piece after the one that completes ``marker`` (the script's own end of
    thinking), or ``index`` when the rest of the script never writes the marker."""
    text = "".join(pieces[:index])
    for i in range(index, len(pieces)):
        text += pieces[i]
        if marker in text:
            return i + 1
    return index
