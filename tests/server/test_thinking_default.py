"""Both skins over a reasoning model whose template treats an undefined ``enable_thinking`` as off (the R1 distill
template of llama.cpp's collection): it thinks unless the request turns thinking off — OpenAI
``reasoning_effort: "none"``, ``chat_template_kwargs.enable_thinking: false`` (what the web chat's switch sends),
Ollama ``think: false``."""

from __future__ import annotations

from typing import Any

import pytest

from kaiyuan.chat import ChatTemplate
from tests.chat.test_thinking_default import thinking_model
from tests.fixtures.tiny_gguf import template_text
from tests.server._support import post, run

R1 = "deepseek-ai-DeepSeek-R1-Distill-Qwen-32B"
MESSAGES = [{"role": "user", "content": "What is 2+2?"}]


@pytest.fixture
def app(fake_server) -> Any:
    app, _ = fake_server(thinking_model(ChatTemplate(template_text(R1)).dialect), template=R1)
    return app


@pytest.mark.parametrize(
    ("extra", "thinks"),
    [
        ({}, True),
        ({"reasoning_effort": "low"}, True),
        ({"chat_template_kwargs": {"enable_thinking": True}}, True),
        ({"reasoning_effort": "none"}, False),
        ({"chat_template_kwargs": {"enable_thinking": False}}, False),
    ],
)
def test_openai_chat(app: Any, extra: dict[str, Any], thinks: bool) -> None:
    body = {"model": "fake", "messages": MESSAGES, **extra}
    message = run(post(app, "/v1/chat/completions", body)).json()["choices"][0]["message"]
    assert message["content"].strip() == "Answer"
    assert message.get("reasoning_content") == ("Hmm" if thinks else None)


@pytest.mark.parametrize(("think", "thinks"), [(None, True), (True, True), ("low", True), (False, False)])
def test_ollama_chat(app: Any, think: Any, thinks: bool) -> None:
    body: dict[str, Any] = {"model": "fake", "messages": MESSAGES, "stream": False}
    if think is not None:
        body["think"] = think
    message = run(post(app, "/api/chat", body)).json()["message"]
    assert message["content"].strip() == "Answer"
    assert message.get("thinking") == ("Hmm" if thinks else None)
