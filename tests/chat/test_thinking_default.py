"""Reasoning models think by default, with every real template that has a thinking switch (``enable_thinking``) —
also those that treat an undefined switch as off (the R1 distills in llama.cpp's collection, DeepSeek V3.1+, QwQ,
Bielik, Reka, Laguna XS) — and stop only when the request says so: ``reasoning_effort: "none"`` or
``chat_template_kwargs: {"enable_thinking": false}``.

The engine stands in for a reasoning model: it thinks ("Hmm") when its think block is open at the end of the
prompt or it opens one itself, and answers at once when the prompt closed the block."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from kaiyuan.chat import ChatModel, ChatTemplate, Dialect, complete_chat_sync
from kaiyuan.engine import GenerationRequest
from kaiyuan.testing import FakeEngine
from kaiyuan.types import ChatRequest, Message
from tests.fixtures.tiny_gguf import template_text

_TEMPLATES = Path(__file__).resolve().parents[1] / "fixtures" / "templates"


def _switch_templates() -> list[str]:
    """Fixture templates of reasoning models that read ``enable_thinking``."""
    names = []
    for path in sorted(_TEMPLATES.glob("*.jinja")):
        template = ChatTemplate(path.read_text(encoding="utf-8"))
        if template.has_thinking_switch and template.dialect.has_reasoning:
            names.append(path.stem)
    return names


SWITCHED = _switch_templates()


def thinking_model(dialect: Dialect) -> Any:
    """A script that behaves like a reasoning model given the rendered prompt (FakeEngine's ids < 256 are bytes)."""
    start, end = dialect.reasoning_start, dialect.reasoning_end
    assert start and end

    def script(request: GenerationRequest) -> list[str]:
        prompt = bytes(t for t in request.prompt if t < 256).decode("utf-8", "replace")
        if dialect.think_opened_in_prompt(prompt):
            return ["Hmm", end, "Answer"]
        if prompt.rstrip().endswith(end):
            return ["Answer"]  # the template closed the think block: no thinking
        return [start, "Hmm", end, "Answer"]  # the model opens its think block itself

    return script


def ask(name: str, **request: Any) -> tuple[str | None, str | None]:
    template = ChatTemplate(template_text(name), bos_token="<s>", eos_token="</s>")
    engine = FakeEngine(thinking_model(template.dialect))
    try:
        model = ChatModel("fake:1", engine, template)
        messages = [Message(role="user", content="What is 2+2?")]
        message = (
            complete_chat_sync(model, ChatRequest(model="fake:1", messages=messages, **request))
            .choices[0]
            .message
        )
    finally:
        engine.close()
    return message.reasoning_content, (message.content or "").strip()


def test_the_class_of_templates_is_covered() -> None:
    # The example and the other templates that treat an undefined enable_thinking as off.
    for name in ("deepseek-ai-DeepSeek-R1-Distill-Qwen-32B", "deepseek-ai-DeepSeek-V3.1", "Qwen-QwQ-32B"):
        assert name in SWITCHED
        template = ChatTemplate(template_text(name))
        messages = [Message(role="user", content="x")]
        assert template.render(messages) == template.render(messages, enable_thinking=False)


@pytest.mark.parametrize("name", SWITCHED)
def test_thinks_by_default(name: str) -> None:
    assert ask(name) == ("Hmm", "Answer")


@pytest.mark.parametrize("name", SWITCHED)
@pytest.mark.parametrize(
    "request_off",
    [{"reasoning_effort": "none"}, {"chat_template_kwargs": {"enable_thinking": False}}],
    ids=["reasoning_effort-none", "enable_thinking-false"],
)
def test_thinking_is_off_only_when_asked(name: str, request_off: dict[str, Any]) -> None:
    reasoning, content = ask(name, **request_off)
    assert not reasoning and content == "Answer"


@pytest.mark.parametrize("name", ["deepseek-ai-DeepSeek-R1-Distill-Qwen-32B", "Qwen-Qwen3-0.6B"])
def test_the_request_switch_wins(name: str) -> None:
    assert ask(name, chat_template_kwargs={"enable_thinking": True}) == ("Hmm", "Answer")
    assert ask(name, reasoning_effort="low") == ("Hmm", "Answer")  # a budget still thinks


def test_deepseek_own_switch_is_not_overridden() -> None:
    # DeepSeek V3.1+ read ``thinking`` before ``enable_thinking``; the default must not turn a "thinking: false" on
    name = "deepseek-ai-DeepSeek-V3.1"
    assert ask(name, chat_template_kwargs={"thinking": False}) == (None, "Answer")
    assert ask(name, chat_template_kwargs={"thinking": True}) == ("Hmm", "Answer")
