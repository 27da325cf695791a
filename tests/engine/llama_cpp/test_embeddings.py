"""Pooled embeddings from the llama.cpp engine."""

from __future__ import annotations

import math

import pytest

from kaiyuan.errors import ContextOverflow, InvalidRequest


def test_embeddings_shape_norm_and_determinism(engine) -> None:
    texts = ["The cat sat on the mat.", "A feline rested on the rug.", "Quarterly revenue grew by 4%."]
    first = engine.embed(texts)
    again = engine.embed(list(reversed(texts)))[::-1]
    assert len(first) == 3 and all(len(v) == 576 for v in first)  # SmolLM2-135M: n_embd 576
    for v in first:
        assert math.isclose(math.sqrt(sum(x * x for x in v)), 1.0, rel_tol=1e-6)
    for a, b in zip(first, again, strict=True):
        assert a == pytest.approx(b, abs=1e-5)  # batching order does not matter
    assert engine.embed([texts[0]])[0] == pytest.approx(first[0], abs=1e-5)

    def cos(a: list[float], b: list[float]) -> float:
        return sum(x * y for x, y in zip(a, b, strict=True))

    assert cos(first[0], first[1]) > cos(first[0], first[2])


def test_embedding_errors(engine) -> None:
    with pytest.raises(InvalidRequest):
        engine.embed([""])
    with pytest.raises(ContextOverflow):
        engine.embed(["word " * 600])
