"""What every API skin's converter shares: the native result shape, ids, logprob entries and the model's default
options.

Owns: ``NativeChoice`` (the structural view of the chat layer's finished choice that every skin reads), ``new_id``
(OpenAI-style object ids), ``logprob_entries`` (native logprobs → any skin's entry objects), and a model's default
options: a manifest's ``params`` are Ollama-named (``temperature``, ``num_predict``, ``stop`` …), and every skin
applies them under a request's own settings (``with_model_options``; ``SAMPLING_OF_OPTION`` is the one table from
Ollama options to ``SamplingParams`` fields). The skins' own converters are ``convert_openai.py``,
``convert_ollama.py``, ``convert_anthropic.py`` and ``convert_responses.py``.

Must not know the engine, the chat layer, HTTP or the store (protocol → leaf + pydantic only).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any, Protocol, TypeVar

from kaiyuan.errors import InvalidRequest
from kaiyuan.protocol import ollama as ol
from kaiyuan.types import Message, SamplingParams, TokenLogprob

__all__ = [
    "SAMPLING_OF_OPTION",
    "NativeChoice",
    "log_ignored_options",
    "logprob_entries",
    "new_id",
    "options_dict",
    "sampling_fields",
    "with_model_options",
]

_E = TypeVar("_E")
_MAX_STOPS = 16


class NativeChoice(Protocol):
    """What the chat layer's finished choice offers (``kaiyuan.chat.ChoiceResult`` satisfies it)."""

    @property
    def index(self) -> int: ...

    @property
    def message(self) -> Message: ...

    @property
    def finish_reason(self) -> str | None: ...

    @property
    def logprobs(self) -> list[TokenLogprob]: ...


def new_id(prefix: str) -> str:
    """An OpenAI-style object id: ``chatcmpl-…``, ``cmpl-…``, ``call_…``."""
    sep = "_" if prefix == "call" else "-"
    return f"{prefix}{sep}{uuid.uuid4().hex[:24]}"


def logprob_entries(
    items: Sequence[TokenLogprob], entry: Callable[..., _E], top: Callable[..., Any]
) -> list[_E]:
    """Native logprobs as wire objects: both APIs use the same fields (token, logprob, bytes, top_logprobs of
    token/logprob/bytes); only the model classes differ."""
    return [
        entry(
            token=lp.token,
            logprob=lp.logprob,
            bytes=lp.bytes if lp.bytes is not None else list(lp.token.encode("utf-8")),
            top_logprobs=[
                top(token=tok, logprob=val, bytes=list(tok.encode("utf-8"))) for tok, val in lp.top
            ],
        )
        for lp in items
    ]


def options_dict(
    options: ol.Options | None, model_defaults: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The options in force: the model's defaults (an Ollama ``params`` layer) under the request's own."""
    merged: dict[str, Any] = {}
    for key, value in (model_defaults or {}).items():
        if key in ol.Options.model_fields:
            merged[key] = value
    if options is not None:
        merged.update(options.model_dump(exclude_none=True))
    return merged


def with_model_options(
    sampling: SamplingParams, unset: Iterable[str], model_options: Mapping[str, Any]
) -> SamplingParams:
    """``sampling`` with the fields in ``unset`` (those a request left out) taken from the model's default options
    (Ollama-named: ``temperature``, ``num_predict``, ``stop`` ...), as Ollama applies a model's parameters on its
    OpenAI-compatible endpoints too."""
    options = options_dict(None, model_options)
    log_ignored_options(options)
    wanted = set(unset)
    chosen = {name: value for name, value in sampling_fields(options).items() if name in wanted}
    return replace(sampling, **chosen) if chosen else sampling


# Ollama option -> the SamplingParams field it sets
SAMPLING_OF_OPTION = {
    "temperature": "temperature", "top_p": "top_p", "top_k": "top_k", "min_p": "min_p", "num_predict": "max_tokens",
    "stop": "stop", "seed": "seed", "presence_penalty": "presence_penalty", "frequency_penalty": "frequency_penalty",
    "repeat_penalty": "repetition_penalty",
}  # fmt: skip


def sampling_fields(opts: Mapping[str, Any]) -> dict[str, Any]:
    """The SamplingParams fields that Ollama options set; an option that is absent or null sets nothing.

    ``num_predict`` -1 (infinite) and -2 (fill the context) mean no limit; a negative ``seed`` means random."""
    fields: dict[str, Any] = {}
    for option, name in SAMPLING_OF_OPTION.items():
        value = opts.get(option)
        if value is None:
            continue
        if option in ("num_predict", "seed"):
            value = int(value) if value >= 0 else None
        elif option == "stop":
            stops = [value] if isinstance(value, str) else list(value)
            if len(stops) > _MAX_STOPS:
                raise InvalidRequest(
                    f"at most {_MAX_STOPS} stop sequences are supported, got {len(stops)}",
                    param="options.stop",
                )
            value = [s for s in stops if s]
        fields[name] = value
    return fields


def log_ignored_options(opts: Mapping[str, Any]) -> None:
    for name in ol.IGNORED_OPTIONS:
        if opts.get(name) is not None:
            ol.log_once(
                ("option", name),
                "Ollama option %r is accepted but has no effect in kaiyuan (logged once)",
                name,
            )
