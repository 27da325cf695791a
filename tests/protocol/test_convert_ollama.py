"""Ollama wire models ↔ native types, without a server: requests, encoders, listings, the public surface."""

from __future__ import annotations

import json

import pytest

import kaiyuan.protocol as protocol
import kaiyuan.protocol.convert_ollama as conv
import kaiyuan.protocol.ollama as ol
from kaiyuan.errors import InvalidRequest, UnsupportedFeature
from kaiyuan.types import Chunk, CompletionRequest, Message, ModelInfo, ToolCall, ToolCallDelta, Usage


def test_public_names_are_sorted_and_exist() -> None:
    for module in (ol, conv, protocol):
        assert module.__all__ == sorted(module.__all__, key=lambda n: (not n.isupper(), n))
        assert all(hasattr(module, name) for name in module.__all__)


def chat(**kw) -> ol.ChatRequest:
    return ol.ChatRequest.model_validate(
        {"model": "m", "messages": [{"role": "user", "content": "hi"}], **kw}
    )


def test_chat_request_defaults_and_model_options() -> None:
    native, num_ctx = conv.chat_request_to_native(chat())
    assert native.stream is True and native.tools == [] and native.response_format is None and num_ctx is None
    assert native.sampling.temperature == 0.8 and native.reasoning_effort is None
    defaults = {"temperature": 0.2, "stop": ["<|im_end|>"], "num_ctx": 512, "not_an_option": 1}
    native, num_ctx = conv.chat_request_to_native(chat(options={"temperature": 0.7}), model_options=defaults)
    assert native.sampling.temperature == 0.7  # the request wins over the model's params layer
    assert native.sampling.stop == ["<|im_end|>"] and num_ctx == 512


@pytest.mark.parametrize(
    ("think", "effort", "kwargs"),
    [
        (None, None, {}),
        (True, None, {"enable_thinking": True}),
        (False, "none", {"enable_thinking": False}),
        ("high", "high", {"enable_thinking": True}),
    ],
)
def test_think(think, effort, kwargs) -> None:
    native, _ = conv.chat_request_to_native(chat(think=think))
    assert native.reasoning_effort == effort and native.chat_template_kwargs == kwargs


def test_bad_think_level_is_rejected_by_validation() -> None:
    with pytest.raises(ValueError, match="think"):
        chat(think="extreme")


def test_format() -> None:
    assert conv.response_format_from("json") == {"type": "json_object"}
    assert conv.response_format_from("") is None and conv.response_format_from(None) is None
    schema = {"type": "object"}
    assert conv.response_format_from(schema) == {
        "type": "json_schema",
        "json_schema": {"name": "format", "schema": schema},
    }
    with pytest.raises(InvalidRequest, match="format must be"):
        conv.response_format_from("xml")


def test_messages_tool_history() -> None:
    req = chat(
        messages=[
            {"role": "user", "content": "weather?"},
            {
                "role": "assistant",
                "content": "",
                "thinking": "call it",
                "tool_calls": [
                    {"id": "c1", "function": {"name": "w", "arguments": {"city": "Paris"}}},
                    {"function": {"name": "t", "arguments": '{"zone": "CET"}'}},
                ],
            },
            {"role": "tool", "tool_name": "w", "content": "sunny"},
            {"role": "tool", "tool_call_id": "given", "content": "12:00"},
        ]
    )
    native, _ = conv.chat_request_to_native(req)
    assistant, tool1, tool2 = native.messages[1:]
    assert assistant == Message(
        role="assistant",
        content=None,
        reasoning_content="call it",
        tool_calls=[ToolCall("w", '{"city": "Paris"}', "c1"), ToolCall("t", '{"zone": "CET"}', "")],
    )
    assert (tool1.tool_call_id, tool1.name) == ("c1", "w")  # matched by tool_name
    assert tool2.tool_call_id == "given"
    with pytest.raises(InvalidRequest, match="must be a JSON object"):
        conv.chat_request_to_native(
            chat(
                messages=[
                    {"role": "assistant", "tool_calls": [{"function": {"name": "w", "arguments": "[1]"}}]}
                ]
            )
        )


def test_generate_conversion() -> None:
    raw, _ = conv.generate_request_to_native(
        ol.GenerateRequest(model="m", prompt="P", raw=True, stream=False)
    )
    assert isinstance(raw, CompletionRequest) and raw.prompt == "P" and raw.stream is False
    templated, _ = conv.generate_request_to_native(ol.GenerateRequest(model="m", prompt="P", system="S"))
    assert [(m.role, m.content) for m in templated.messages] == [("system", "S"), ("user", "P")]
    with pytest.raises(UnsupportedFeature) as info:
        conv.generate_request_to_native(ol.GenerateRequest(model="m", prompt="P", suffix="x"))
    assert info.value.param == "suffix"


def test_chat_encoder_sends_each_tool_call_whole() -> None:
    enc = conv.ChatEncoder("m:latest", False)
    out = []
    for chunk in [
        Chunk(content="Let me check."),
        Chunk(tool_calls=[ToolCallDelta(0, "id0", "w", "")]),
        Chunk(tool_calls=[ToolCallDelta(0, None, None, '{"city": ')]),
        Chunk(tool_calls=[ToolCallDelta(0, None, None, '"Paris"}')]),
        Chunk(tool_calls=[ToolCallDelta(1, "id1", "w", '{"city": "Rome"}')]),
        Chunk(finish_reason="tool_calls"),
        Chunk(usage=Usage(prompt_tokens=7, completion_tokens=9)),
    ]:
        out.extend(json.loads(o.to_json()) for o in enc.encode(chunk))
    assert out[0]["message"] == {"role": "assistant", "content": "Let me check."}
    calls = [tc for o in out for tc in o["message"].get("tool_calls", [])]
    assert calls == [
        {"id": "id0", "function": {"index": 0, "name": "w", "arguments": {"city": "Paris"}}},
        {"id": "id1", "function": {"index": 1, "name": "w", "arguments": {"city": "Rome"}}},
    ]
    final = json.loads(enc.final(conv.Timings(total=5, load=1, prompt_eval=2, eval=2)).to_json())
    assert final["done"] is True and final["done_reason"] == "stop"
    assert (final["prompt_eval_count"], final["eval_count"], final["total_duration"]) == (7, 9, 5)


def test_listing_and_parameters() -> None:
    info = ModelInfo(
        name="tiny:latest",
        path="/x",
        architecture="llama",
        quantization="Q4_0",
        size=10,
        digest="sha256-" + "a" * 64,
        created=0.0,
        details={"family": "llama", "parameter_size": "1.0M", "quantization_level": "Q4_0"},
    )
    entry = json.loads(conv.list_model(info).to_json())
    assert entry["digest"] == "a" * 64 and entry["modified_at"] == "1970-01-01T00:00:00.000000Z"
    assert entry["details"]["families"] == ["llama"] and entry["license"] == "unknown"
    params = {"stop": ["<a>", "<b>"], "temperature": 0.2, "penalize_newline": True}
    assert conv.parameter_lines(params) == [
        ("penalize_newline", "true"),
        ("stop", '"<a>"'),
        ("stop", '"<b>"'),
        ("temperature", "0.2"),
    ]
    assert conv.format_parameters({}) is None


def test_embedding_vectors_truncate_and_normalise() -> None:
    assert conv.embedding_vectors([[3.0, 4.0, 12.0]], None) == [[3 / 13, 4 / 13, 12 / 13]]
    assert conv.embedding_vectors([[3.0, 4.0, 12.0]], 2) == [[0.6, 0.8]]
    with pytest.raises(InvalidRequest, match="dimensions 4 exceeds"):
        conv.embedding_vectors([[1.0]], 4)
