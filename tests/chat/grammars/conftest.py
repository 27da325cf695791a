"""Fixtures for the grammar tests: llama.cpp's grammar engine with SmolLM2's vocabulary (see _llama_oracle)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

pytest.importorskip("llama_cpp")

from tests.chat.grammars._llama_oracle import GbnfEngine, smollm2_path


@pytest.fixture(scope="session")
def gbnf() -> Iterator[GbnfEngine]:
    engine = GbnfEngine(smollm2_path())
    yield engine
    engine.close()
