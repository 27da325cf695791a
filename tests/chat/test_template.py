"""ChatTemplate: Hugging Face rendering semantics, the sandbox, errors and the ChatML fallback."""

from __future__ import annotations

import datetime
import json
import logging
from pathlib import Path

import pytest

from kaiyuan.chat import CHATML_FALLBACK_TEMPLATE, ChatTemplate
from kaiyuan.errors import TemplateError
from kaiyuan.types import Message, ToolCall
from tests.chat._helpers import FIXTURES, TOOLS, template_text

USER = [Message(role="user", content="Hello")]


def render(source: str, messages: list[Message] = USER, **kwargs: object) -> str:
    return ChatTemplate(source, bos_token="<s>", eos_token="</s>").render(messages, **kwargs)  # type: ignore[arg-type]


# -- Hugging Face semantics -----------------------------------------------------------------------------------


def test_tojson_is_hugging_faces_no_html_escaping_non_ascii_kept_and_options() -> None:
    data = {"b": "<tag> & 'quote' 你好", "a": [1, 2]}
    assert render("{{ messages[0].content | tojson }}", [Message("user", "<é>")]) == '"<é>"'
    assert render("{{ x | tojson }}", x=data) == json.dumps(data, ensure_ascii=False)
    assert render("{{ x | tojson(indent=2) }}", x=data) == json.dumps(data, ensure_ascii=False, indent=2)
    assert render("{{ x | tojson(separators=(',', ':'), sort_keys=true) }}", x=data) == json.dumps(
        data, ensure_ascii=False, separators=(",", ":"), sort_keys=True
    )
    assert render("{{ x | tojson(ensure_ascii=true) }}", x="你") == '"\\u4f60"'


def test_tojson_writes_lazy_sequences_as_arrays() -> None:
    out = render("{{ tools | map(attribute='function') | map(attribute='name') | tojson }}", tools=TOOLS)
    assert json.loads(out) == ["get_weather"]


def test_strftime_now_and_bos_eos_and_extra_kwargs_reach_the_template() -> None:
    out = render(
        "{{ bos_token }}{{ strftime_now('%Y') }}|{{ enable_thinking }}{{ eos_token }}", enable_thinking=False
    )
    assert out == f"<s>{datetime.datetime.now().year}|False</s>"


def test_raise_exception_is_a_template_error_with_the_templates_message() -> None:
    with pytest.raises(TemplateError, match="roles must alternate") as info:
        render("{% if true %}\n{{ raise_exception('roles must alternate') }}\n{% endif %}")
    assert "line 2" in str(info.value)


def test_trim_and_lstrip_blocks_and_loop_controls() -> None:
    source = (
        "{% for m in messages %}\n"
        "    {% if loop.index > 2 %}{% break %}{% endif %}\n"
        "    {% if m.role == 'system' %}{% continue %}{% endif %}\n"
        "{{ m.content }};\n"
        "{% endfor %}\n"
    )
    messages = [Message("system", "S"), Message("user", "A"), Message("user", "B")]
    assert render(source, messages) == "A;\n"


def test_generation_block_renders_its_body() -> None:
    assert render("{% generation %}{{ messages[0].content }}{% endgeneration %}") == "Hello"


def test_add_generation_prompt_is_passed() -> None:
    source = "{% if add_generation_prompt %}GO{% else %}STOP{% endif %}"
    assert ChatTemplate(source).render(USER) == "GO"
    assert ChatTemplate(source).render(USER, add_generation_prompt=False) == "STOP"


def test_messages_reach_the_template_in_hugging_face_shape() -> None:
    messages = [
        Message("developer", "Be brief."),
        Message("user", "Weather?"),
        Message(
            "assistant",
            None,
            reasoning_content="Need the tool.",
            tool_calls=[ToolCall("get_weather", '{"city": "Paris"}', id="call_1")],
        ),
        Message("tool", "sunny", tool_call_id="call_1", name="get_weather"),
        Message("assistant", "Sunny."),
    ]
    out = render("{{ messages | tojson }}", messages)
    assert json.loads(out) == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather?"},
        {
            "role": "assistant",
            "content": None,
            "reasoning_content": "Need the tool.",
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": {"city": "Paris"}},
                }
            ],
        },
        {"role": "tool", "content": "sunny", "tool_call_id": "call_1", "name": "get_weather"},
        {"role": "assistant", "content": "Sunny."},
    ]


def test_tool_call_arguments_work_as_mapping_and_as_string() -> None:
    call = Message("assistant", None, tool_calls=[ToolCall("f", '{"a": 1, "b": "x"}', id="c1")])
    source = (
        "{% set args = messages[0].tool_calls[0].function.arguments %}"
        "{% for k, v in args | items %}{{ k }}={{ v }};{% endfor %}|{{ 'args: ' + args }}|{{ args is mapping }}"
    )
    assert render(source, [call]) == 'a=1;b=x;|args: {"a": 1, "b": "x"}|True'
    not_json = Message("assistant", None, tool_calls=[ToolCall("f", "not json", id="c1")])
    assert render("{{ messages[0].tool_calls[0].function.arguments }}", [not_json]) == "not json"


def test_mistral_templates_get_nine_character_ids_consistently() -> None:
    messages = [
        Message("user", "Weather?"),
        Message(
            "assistant", None, tool_calls=[ToolCall("get_weather", '{"city": "Paris"}', id="call_0123456789")]
        ),
        Message("tool", "sunny", tool_call_id="call_0123456789"),
    ]
    out = render(template_text("mistralai-Mistral-Nemo-Instruct-2407.jinja"), messages, tools=TOOLS)
    call_ids = [c["id"] for c in json.loads(out.split("[TOOL_CALLS]")[1].split("</s>")[0])]
    assert len(call_ids) == 1 and len(call_ids[0]) == 9 and call_ids[0].isalnum()
    assert f'"call_id": "{call_ids[0]}"' in out


def test_null_content_next_to_tool_calls_follows_what_the_template_needs() -> None:
    messages = [
        Message("user", "Weather?"),
        Message("assistant", None, tool_calls=[ToolCall("get_weather", '{"city": "Paris"}', id="call_1")]),
        Message("tool", "sunny", tool_call_id="call_1"),
        Message("user", "Thanks"),
    ]
    # R1 distill (Llama) renders tool calls only when content is None
    r1 = render(template_text("deepseek-ai-DeepSeek-R1-Distill-Llama-8B.jinja"), messages)
    assert "get_weather" in r1 and "Paris" in r1
    # Qwen3 runs `'</think>' in content`, GLM would print "None": both get an empty string instead
    qwen3 = render(template_text("Qwen-Qwen3-0.6B.jinja"), messages, tools=TOOLS)
    glm = render(template_text("GLM-4.6.jinja"), messages, tools=TOOLS)
    assert "Paris" in qwen3 and "Paris" in glm and "None" not in glm


def test_callers_messages_and_tools_are_not_changed_by_a_template() -> None:
    messages = [Message("user", "Hello"), Message("assistant", "Hi")]
    tools = json.loads(json.dumps(TOOLS))
    source = (
        "{% set _ = messages.pop() %}{% set _ = tools.append(1) %}{{ messages | length }}{{ tools | length }}"
    )
    assert render(source, messages, tools=tools) == "12"
    assert len(messages) == 2 and tools == TOOLS


# -- errors ---------------------------------------------------------------------------------------------------


def test_syntax_error_names_the_line() -> None:
    with pytest.raises(TemplateError, match="line 3"):
        ChatTemplate("ok\n{{ 1 }}\n{% if %}\n")


def test_runtime_failure_is_a_template_error_naming_the_line() -> None:
    with pytest.raises(TemplateError, match=r"line 2.*TypeError"):
        render("{{ 1 }}\n{{ messages[0].content + 1 }}")


# -- sandbox --------------------------------------------------------------------------------------------------

ESCAPES = [
    # CVE-2024-34359 (llama-cpp-python): the published payload, then variants through other globals
    "{{ self.__init__.__globals__.__builtins__.__import__('os').system('touch {target}') }}",
    "{% for x in ().__class__.__base__.__subclasses__() %}{% if 'warning' in x.__name__ %}"
    "{{ x()._module.__builtins__['__import__']('os').popen('touch {target}') }}{% endif %}{% endfor %}",
    "{{ cycler.__init__.__globals__.os.popen('touch {target}').read() }}",
    "{{ joiner.__init__.__globals__.os.system('touch {target}') }}",
    "{{ namespace.__init__.__globals__.os.system('touch {target}') }}",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}{{ lipsum }}",
    "{{ ''.__class__ }}",
    "{{ ('' | attr('__class__')).__mro__ }}",
    "{{ '{0.__class__.__mro__}'.format('') }}",
    "{{ raise_exception.__globals__['os'].system('touch {target}') }}",
    "{{ strftime_now.__globals__.__builtins__.__import__('os').system('touch {target}') }}",
    "{{ messages.__class__.__base__.__subclasses__() }}",
    "{% set _ = messages[0].update({'role': 'system'}) %}",
]


@pytest.mark.parametrize("payload", ESCAPES)
def test_sandbox_escape_is_refused_and_nothing_runs(payload: str, tmp_path: Path) -> None:
    target = tmp_path / "pwned"
    template = ChatTemplate(payload.replace("{target}", str(target)))
    with pytest.raises(TemplateError, match="sandbox") as info:
        template.render(USER, tools=TOOLS)
    assert not target.exists()
    assert "malicious" in str(info.value)


@pytest.mark.parametrize(
    "payload",
    ["{{ 'x' * 10**12 }}", "{{ [0] * 2000000 }}", "{{ 10 ** 100000 }}", "{{ (2 ** 1000) ** 1000 }}"],
)
def test_templates_cannot_exhaust_memory_with_arithmetic(payload: str) -> None:
    with pytest.raises(TemplateError, match="too large"):
        ChatTemplate(payload).render(USER)
    assert render("{{ 'ab' * 3 }}{{ 2 ** 10 }}{{ 3 * 4 }}") == "ababab102412"


def test_every_fixture_template_compiles_in_the_sandbox() -> None:
    for path in sorted(FIXTURES.glob("*.jinja")):
        ChatTemplate(path.read_text(encoding="utf-8"))  # raises on a syntax error or unknown tag


# -- fallback -------------------------------------------------------------------------------------------------


def test_no_template_falls_back_to_chatml_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="kaiyuan.chat._template"):
        template = ChatTemplate(None)
    assert template.is_fallback and template.source == CHATML_FALLBACK_TEMPLATE
    assert "ChatML fallback" in caplog.text
    assert ChatTemplate("  \n").is_fallback
    prompt = template.render(
        [Message("system", "Be kind."), Message("user", "Hi"), Message("assistant", "Hello!")]
    )
    assert prompt == (
        "<|im_start|>system\nBe kind.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
        "<|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>assistant\n"
    )
    assert template.dialect.name == "generic" and not template.dialect.has_reasoning


def test_fallback_renders_tools_calls_and_results_the_hermes_way() -> None:
    template = ChatTemplate(None)
    messages = [
        Message("user", "Weather?"),
        Message("assistant", None, tool_calls=[ToolCall("get_weather", '{"city": "Paris"}', id="call_1")]),
        Message("tool", "sunny", tool_call_id="call_1"),
    ]
    prompt = template.render(messages, tools=TOOLS)
    assert prompt.startswith("<|im_start|>system\n")
    assert json.dumps(TOOLS[0]) in prompt
    assert '<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>' in prompt
    assert "<tool_response>sunny</tool_response>" in prompt
    assert prompt.endswith("<|im_start|>assistant\n")
