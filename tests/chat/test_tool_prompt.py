"""Templates that cannot show tools get them described in a system message, in the call format the model's
tool-call parser reads; templates that show tools are rendered as they are."""

from __future__ import annotations

import json

from kaiyuan.chat import ChatTemplate
from kaiyuan.types import Message
from tests.fixtures.tiny_gguf import template_text

# ChatML without any tools branch, like SmolLM2-135M-Instruct's template
NO_TOOLS = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


def test_tools_go_into_the_system_message_when_the_template_cannot_show_them() -> None:
    template = ChatTemplate(NO_TOOLS)
    assert not template.shows_tools
    with_system = [
        Message(role="system", content="Be brief."),
        Message(role="user", content="Weather in Paris?"),
    ]
    prompt = template.render(with_system, tools=[WEATHER])
    system = prompt.split("<|im_end|>")[0]
    assert system.startswith("<|im_start|>system\nBe brief.\n\nYou can call these tools:")
    assert json.dumps(WEATHER["function"]) in system
    assert '{"name": <tool name>, "arguments": <arguments object>}' in system  # the generic dialect's format
    # no system message yet: one is put first
    alone = template.render([Message(role="user", content="Weather in Paris?")], tools=[WEATHER])
    assert alone.startswith("<|im_start|>system\nYou can call these tools:")
    # without tools nothing changes
    assert "tools" not in template.render([Message(role="user", content="Hi")])


def test_templates_that_show_tools_render_them_their_own_way() -> None:
    template = ChatTemplate(template_text("Qwen-Qwen2.5-7B-Instruct"))
    assert template.shows_tools
    prompt = template.render([Message(role="user", content="Weather in Paris?")], tools=[WEATHER])
    assert "Current weather for a city" in prompt and "You can call these tools:" not in prompt
