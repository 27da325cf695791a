"""Dialect detection and what a dialect knows (families are covered end to end in test_families.py)."""

from __future__ import annotations

import re

import pytest

from kaiyuan.chat import DIALECTS, ChatTemplate, detect_dialect, dialect_by_name
from kaiyuan.types import Message
from tests.chat._helpers import FIXTURES, template_text


@pytest.mark.parametrize(
    ("template", "name", "markers"),
    [
        ("google-gemma-2-2b-it.jinja", "generic", None),
        ("microsoft-Phi-3.5-mini-instruct.jinja", "generic", None),
        ("mistralai-Ministral-3-14B-Reasoning-2512.jinja", "mistral", ("[THINK]", "[/THINK]")),
        ("Kimi-K2-Instruct.jinja", "kimi-k2", None),
        ("Kimi-K2-Thinking.jinja", "kimi-k2", ("<think>", "</think>")),
        ("Qwen-Qwen2.5-7B-Instruct.jinja", "hermes", None),
        ("Qwen3-Coder.jinja", "qwen3-coder", None),
        ("tencent-Hy3.jinja", "hunyuan", ("<think:opensource>", "</think:opensource>")),
    ],
)
def test_detection_and_reasoning_markers(template: str, name: str, markers: tuple[str, str] | None) -> None:
    dialect = detect_dialect(template_text(template))
    assert dialect.name == name
    assert (dialect.reasoning_start, dialect.reasoning_end) == (markers or (None, None))


def test_no_template_is_generic() -> None:
    assert detect_dialect(None).name == "generic" and detect_dialect("").name == "generic"


def test_every_fixture_gets_a_catalogue_dialect() -> None:
    for path in FIXTURES.glob("*.jinja"):
        assert detect_dialect(path.read_text(encoding="utf-8")).name in DIALECTS


@pytest.mark.parametrize(
    ("template", "kwargs", "opened"),
    [
        ("Qwen-Qwen3-0.6B.jinja", {}, False),
        ("Qwen-Qwen3-0.6B.jinja", {"enable_thinking": False}, False),
        ("Qwen-QwQ-32B.jinja", {"enable_thinking": True}, True),
        ("deepseek-ai-DeepSeek-R1-Distill-Llama-8B.jinja", {}, True),
        ("deepseek-ai-DeepSeek-V3.1.jinja", {}, False),
        ("deepseek-ai-DeepSeek-V3.1.jinja", {"thinking": True}, True),
        ("tencent-Hy3.jinja", {}, False),
        ("tencent-Hy3.jinja", {"reasoning_effort": "low"}, True),
        ("GLM-4.7-Flash.jinja", {}, True),
        ("GLM-4.7-Flash.jinja", {"enable_thinking": False}, False),
    ],
)
def test_think_opened_in_prompt_reads_the_rendered_prompt(
    template: str, kwargs: dict[str, object], opened: bool
) -> None:
    chat = ChatTemplate(template_text(template))
    prompt = chat.render([Message("user", "Hi")], **kwargs)
    assert chat.dialect.think_opened_in_prompt(prompt) is opened


def test_dialect_without_reasoning_never_starts_in_reasoning() -> None:
    assert not dialect_by_name("llama3").think_opened_in_prompt("<think>")


def test_tool_call_ids() -> None:
    assert re.fullmatch(r"call_[A-Za-z0-9]{24}", dialect_by_name("hermes").new_tool_call_id())
    assert re.fullmatch(r"[A-Za-z0-9]{9}", dialect_by_name("mistral").new_tool_call_id())
    assert dialect_by_name("qwen3").new_tool_call_id() != dialect_by_name("qwen3").new_tool_call_id()


def test_unknown_dialect_name_lists_the_known_ones() -> None:
    with pytest.raises(KeyError, match="hermes"):
        dialect_by_name("klingon")


def test_public_names_are_sorted() -> None:
    import kaiyuan.chat
    import kaiyuan.chat.tool_call_parsers

    for module in (kaiyuan.chat, kaiyuan.chat.tool_call_parsers):
        names = module.__all__

        # ruff's isort-style order: CONSTANTS, then Classes, then functions
        def key(n: str) -> tuple[int, str]:
            return (0 if n.isupper() else 1 if n[0].isupper() else 2, n)

        assert names == sorted(names, key=key)
        assert all(hasattr(module, n) for n in names)
