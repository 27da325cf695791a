"""From kaiyuan's ``SamplingParams`` and grammar to vLLM's ``SamplingParams`` for one phase of a request.

A kaiyuan request may run as several vLLM requests in turn (``_phases.py``): a phase knows its token cap and
whether the grammar applies. This module only translates; it decides nothing about phases. vLLM detokenizes
nothing for us (``detokenize=False``): the engine decodes token ids itself, so that vLLM's stop-string and
special-token handling never changes the text the chat layer sees.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from vllm import SamplingParams as VllmSamplingParams
from vllm.sampling_params import RequestOutputKind, StructuredOutputsParams

from kaiyuan.types import SamplingParams

__all__ = ["after_trigger_grammar", "grammar_for_vllm", "vllm_params"]

# Whitespace allowed between ``grammar_after`` (e.g. "</think>") and the grammar's root, as on llama.cpp: bounded,
# or a small model writes whitespace until max_tokens and the structured answer never starts.
_TRIGGER_WS = 4
_ANSWER_RULE = "kaiyuan-answer"
# GBNF split into string literals, character classes, comments, rule names and anything else (one char).
_GBNF_PIECES = re.compile(r'<\[\d+\]>|"(?:\\.|[^"\\])*"|\[(?:\\.|[^\]\\])*\]|#[^\n]*|[A-Za-z0-9_-]+|.', re.S)
_TOKEN_REF = re.compile(r"<\[(\d+)\]>")


def grammar_for_vllm(grammar: str, token_text: Callable[[int], str]) -> str:
    """llama.cpp's GBNF as xgrammar reads it: token elements ``<[id]>`` (a llama.cpp extension kaiyuan uses to
    spell markers and budgeted text in the model's own tokens) become the token's text as a string literal."""
    out: list[str] = []
    for piece in _GBNF_PIECES.finditer(grammar):
        text = piece.group(0)
        ref = _TOKEN_REF.fullmatch(text)
        out.append(_literal(token_text(int(ref.group(1)))) if ref else text)
    return "".join(out)


def _literal(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")
    return '"' + escaped.replace("\t", "\\t") + '"'


def after_trigger_grammar(grammar: str) -> str:
    """``grammar`` with a new root that allows a little whitespace first (the text after ``</think>``)."""
    return f"root ::= [ \\t\\n\\r]{{0,{_TRIGGER_WS}}} {_ANSWER_RULE}\n{_rename_root(grammar)}"


def _rename_root(grammar: str) -> str:
    """Every reference to the rule ``root`` renamed, outside string literals and character classes."""
    out: list[str] = []
    for piece in _GBNF_PIECES.finditer(grammar):
        text = piece.group(0)
        out.append(_ANSWER_RULE if text == "root" else text)
    return "".join(out)


def vllm_params(
    sampling: SamplingParams, *, max_tokens: int, grammar: str | None, seed_offset: int = 0
) -> VllmSamplingParams:
    """vLLM sampling for one phase: at most ``max_tokens`` tokens, ``grammar`` (GBNF) constraining all of them."""
    top_logprobs = sampling.top_logprobs if sampling.logprobs else 0
    kwargs: dict[str, Any] = {
        "n": 1,
        "temperature": max(sampling.temperature, 0.0),
        "top_p": sampling.top_p if 0.0 < sampling.top_p <= 1.0 else 1.0,
        "top_k": sampling.top_k if sampling.top_k > 0 else 0,
        "min_p": min(max(sampling.min_p, 0.0), 1.0),
        "presence_penalty": sampling.presence_penalty,
        "frequency_penalty": sampling.frequency_penalty,
        "repetition_penalty": sampling.repetition_penalty if sampling.repetition_penalty > 0 else 1.0,
        "seed": None if sampling.seed is None else sampling.seed + seed_offset,
        "max_tokens": max_tokens,
        "logprobs": top_logprobs if sampling.logprobs else None,
        "logit_bias": {int(k): float(v) for k, v in sampling.logit_bias.items()} or None,
        # The engine decodes token ids itself and handles stop strings in the chat layer.
        "detokenize": False,
        "skip_special_tokens": False,
        "output_kind": RequestOutputKind.DELTA,
    }
    if grammar:
        kwargs["structured_outputs"] = StructuredOutputsParams(grammar=grammar)
    return VllmSamplingParams(**kwargs)
