"""The client side of serve_bench.py: OpenAI chat requests over HTTP (httpx, streaming SSE) and their timings.

Owns request bodies (greedy, end-of-generation tokens banned by ``logit_bias`` so every peer generates exactly
``max_tokens``), SSE parsing, per-token arrival times, and the four workloads: single stream, N concurrent streams,
cold/warm time-to-first-token on a long system prompt, and a ``max_tokens=1`` round trip. Must not know how the
servers are started.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx


@dataclass
class StreamResult:
    """One request: when it was sent, when each content delta arrived, what the usage said."""

    sent: float  # perf_counter() when the request was sent
    end: float = 0.0  # when the response was complete
    token_times: list[float] = field(default_factory=list)  # arrival of each chunk carrying content
    completion_tokens: int | None = None  # from usage, when the server reports it
    prompt_tokens: int | None = None
    cached_tokens: int | None = None  # usage.prompt_tokens_details.cached_tokens, when reported
    finish_reason: str | None = None
    error: str | None = None
    stale: bool = False  # failed on a dead kept-alive connection before any response: safe to send again

    @property
    def tokens(self) -> int:
        """Generated tokens: the usage count when reported, else the content chunks (one token each)."""
        return self.completion_tokens if self.completion_tokens is not None else len(self.token_times)

    @property
    def ttft(self) -> float | None:
        return self.token_times[0] - self.sent if self.token_times else None

    @property
    def decode_rate(self) -> float | None:
        """Tokens per second after the first token: (tokens - 1) / (last chunk - first chunk)."""
        if len(self.token_times) < 2:
            return None
        span = self.token_times[-1] - self.token_times[0]
        return (self.tokens - 1) / span if span > 0 else None


def chat_body(
    model: str,
    messages: Sequence[Mapping[str, str]],
    max_tokens: int,
    banned: Sequence[int],
    *,
    stream: bool = True,
) -> dict[str, Any]:
    """A greedy chat request; ``banned`` token ids get a -100 logit bias (the portable form of ignore_eos)."""
    body: dict[str, Any] = {
        "model": model,
        "messages": list(messages),
        "max_tokens": max_tokens,
        "temperature": 0.0,
        "stream": stream,
    }
    if banned:
        body["logit_bias"] = {str(t): -100 for t in banned}
    if stream:
        body["stream_options"] = {"include_usage": True}
    return body


def parse_sse_data(line: str) -> dict[str, Any] | None:
    """The JSON object of one ``data:`` line; None for other lines, blank lines and ``[DONE]``."""
    if not line.startswith("data:"):
        return None
    payload = line[5:].strip()
    if not payload or payload == "[DONE]":
        return None
    obj = json.loads(payload)
    return obj if isinstance(obj, dict) else None


def _apply_usage(result: StreamResult, usage: Mapping[str, Any] | None) -> None:
    if not usage:
        return
    result.completion_tokens = usage.get("completion_tokens", result.completion_tokens)
    result.prompt_tokens = usage.get("prompt_tokens", result.prompt_tokens)
    details = usage.get("prompt_tokens_details") or {}
    if isinstance(details, Mapping) and details.get("cached_tokens") is not None:
        result.cached_tokens = int(details["cached_tokens"])


def absorb_chunk(result: StreamResult, obj: Mapping[str, Any], now: float) -> None:
    """Record one streamed chat chunk: a content delta is a token arrival; usage and finish_reason are kept."""
    for choice in obj.get("choices") or []:
        delta = choice.get("delta") or {}
        text = delta.get("content") or delta.get("reasoning_content") or delta.get("reasoning")
        if text:
            result.token_times.append(now)
        if choice.get("finish_reason"):
            result.finish_reason = choice["finish_reason"]
    _apply_usage(result, obj.get("usage"))


# A kept-alive connection the server closed just as it was reused fails before any response; sent again once.
_STALE = (httpx.RemoteProtocolError, httpx.ConnectError)


async def stream_chat(client: httpx.AsyncClient, url: str, body: Mapping[str, Any]) -> StreamResult:
    """POST a streaming chat request and time every chunk; errors are recorded, not raised."""
    result = await _stream_once(client, url, body)
    if result.stale:
        result = await _stream_once(client, url, body)
    return result


async def _stream_once(client: httpx.AsyncClient, url: str, body: Mapping[str, Any]) -> StreamResult:
    result = StreamResult(sent=time.perf_counter())
    responded = False
    try:
        async with client.stream("POST", url, json=dict(body)) as response:
            responded = True
            if response.status_code != 200:
                text = (await response.aread()).decode(errors="replace")
                result.error = f"HTTP {response.status_code}: {text[:300]}"
                return result
            async for line in response.aiter_lines():
                obj = parse_sse_data(line)
                if obj is not None:
                    absorb_chunk(result, obj, time.perf_counter())
    except (httpx.HTTPError, json.JSONDecodeError) as exc:
        result.error = f"{type(exc).__name__}: {exc}"
        result.stale = isinstance(exc, _STALE) and not responded
    finally:
        result.end = time.perf_counter()
    return result


async def complete_chat(client: httpx.AsyncClient, url: str, body: Mapping[str, Any]) -> StreamResult:
    """POST a non-streaming chat request; the whole answer counts as arriving at the end."""
    result = await _complete_once(client, url, body)
    if result.stale:
        result = await _complete_once(client, url, body)
    return result


async def _complete_once(client: httpx.AsyncClient, url: str, body: Mapping[str, Any]) -> StreamResult:
    result = StreamResult(sent=time.perf_counter())
    try:
        response = await client.post(url, json=dict(body))
        result.end = time.perf_counter()
        if response.status_code != 200:
            result.error = f"HTTP {response.status_code}: {response.text[:300]}"
            return result
        obj = response.json()
        choices = obj.get("choices") or [{}]
        if (choices[0].get("message") or {}).get("content"):
            result.token_times.append(result.end)
        result.finish_reason = choices[0].get("finish_reason")
        _apply_usage(result, obj.get("usage"))
    except (httpx.HTTPError, json.JSONDecodeError) as exc:
        result.end = time.perf_counter()
        result.error = f"{type(exc).__name__}: {exc}"
        result.stale = isinstance(exc, _STALE)
    return result


@dataclass
class ConcurrentResult:
    """N streams started together."""

    streams: list[StreamResult]
    started: float
    ended: float

    @property
    def aggregate_rate(self) -> float | None:
        """All generated tokens / wall time from the first send to the last stream's end (prefill included)."""
        wall = self.ended - self.started
        if wall <= 0 or any(s.error for s in self.streams):
            return None
        return sum(s.tokens for s in self.streams) / wall

    @property
    def steady_rate(self) -> float | None:
        """Token chunks per second while every stream was generating (from the last first token to the first
        last token); None when the streams never all ran at once (a server that serves one at a time)."""
        if any(s.error or not s.token_times for s in self.streams):
            return None
        lo = max(s.token_times[0] for s in self.streams)
        hi = min(s.token_times[-1] for s in self.streams)
        if hi - lo <= 0:
            return None
        inside = sum(1 for s in self.streams for t in s.token_times if lo < t <= hi)
        return inside / (hi - lo) if inside else None


async def concurrent_chats(
    client: httpx.AsyncClient, url: str, bodies: Sequence[Mapping[str, Any]]
) -> ConcurrentResult:
    """Send every body at once as a streaming request and wait for all of them."""
    started = time.perf_counter()
    streams = await asyncio.gather(*(stream_chat(client, url, b) for b in bodies))
    return ConcurrentResult(list(streams), started, max(s.end for s in streams))


def first_error(results: Sequence[StreamResult]) -> str | None:
    return next((r.error for r in results if r.error), None)
