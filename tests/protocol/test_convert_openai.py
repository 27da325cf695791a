"""OpenAI wire models ↔ native types: request conversion, chunk encoding, the error envelope, the public surface."""

from __future__ import annotations

import pytest

import kaiyuan.protocol.convert_openai as convert
import kaiyuan.protocol.openai as oa
from kaiyuan.errors import ContextOverflow, InvalidRequest, UnsupportedFeature
from kaiyuan.types import Chunk, Message, ModelInfo, TokenLogprob, ToolCall, ToolCallDelta, Usage


def chat_request(**kw) -> oa.ChatCompletionRequest:
    return oa.ChatCompletionRequest.model_validate(
        {"model": "m", "messages": [{"role": "user", "content": "hi"}], **kw}
    )


def dump(obj) -> dict:
    return obj.model_dump(mode="json", exclude_unset=True)


def test_public_names_are_sorted_and_exist() -> None:
    for module in (oa, convert):
        assert module.__all__ == sorted(module.__all__, key=lambda n: (not n.isupper(), n))
        assert all(hasattr(module, name) for name in module.__all__)


def test_defaults_when_fields_are_absent() -> None:
    native = convert.chat_request_to_native(chat_request())
    s = native.sampling
    assert (native.n, native.stream, native.tool_choice, native.parallel_tool_calls) == (1, False, None, True)
    assert (s.temperature, s.top_p, s.max_tokens, s.stop, s.seed, s.logprobs) == (
        0.8,
        0.95,
        None,
        [],
        None,
        False,
    )


def test_every_supported_field_is_carried() -> None:
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    req = chat_request(
        messages=[
            {"role": "developer", "content": "be brief"},
            {
                "role": "user",
                "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
                "name": "ann",
            },
            {
                "role": "assistant",
                "content": None,
                "reasoning": "thought",
                "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
                ],
            },
            {"role": "tool", "tool_call_id": "c1", "content": [{"type": "text", "text": "42"}]},
        ],
        max_tokens=5,
        max_completion_tokens=7,
        stop="X",
        n=2,
        stream=True,
        tools=tools,
        tool_choice={"type": "function", "function": {"name": "f"}},
        parallel_tool_calls=False,
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "s", "schema": {"type": "object"}, "strict": True},
        },
        reasoning_effort="low",
        max_reasoning_tokens=100,
        chat_template_kwargs={"enable_thinking": False},
        logprobs=True,
        top_logprobs=2,
        user="u",
    )
    native = convert.chat_request_to_native(req)
    assert [m.role for m in native.messages] == ["developer", "user", "assistant", "tool"]
    assert native.messages[1] == Message(role="user", content="ab", name="ann")
    assert native.messages[2].reasoning_content == "thought" and native.messages[2].content is None
    assert native.messages[2].tool_calls == [ToolCall(name="f", arguments="{}", id="c1")]
    assert native.messages[3] == Message(role="tool", content="42", tool_call_id="c1")
    assert native.sampling.max_tokens == 7  # max_completion_tokens wins over the deprecated max_tokens
    assert native.sampling.stop == ["X"] and native.sampling.top_logprobs == 2
    assert (
        native.tool_choice == {"type": "function", "function": {"name": "f"}}
        and not native.parallel_tool_calls
    )
    assert native.response_format == {
        "type": "json_schema",
        "json_schema": {"name": "s", "schema": {"type": "object"}, "strict": True},
    }
    assert (native.reasoning_effort, native.max_reasoning_tokens) == ("low", 100)
    assert native.chat_template_kwargs == {"enable_thinking": False} and native.user == "u"
    assert native.tools == tools


def test_text_response_format_means_no_constraint() -> None:
    assert (
        convert.chat_request_to_native(chat_request(response_format={"type": "text"})).response_format is None
    )


@pytest.mark.parametrize(
    ("part", "param"),
    [
        ({"type": "image_url", "image_url": {"url": "http://x/y.png"}}, "messages[0].content[1]"),
        ({"type": "input_audio", "input_audio": {"data": "AA", "format": "wav"}}, "messages[0].content[1]"),
        ({"type": "file", "file": {"file_id": "f"}}, "messages[0].content[1]"),
    ],
)
def test_non_text_parts_are_rejected(part, param) -> None:
    req = chat_request(messages=[{"role": "user", "content": [{"type": "text", "text": "see"}, part]}])
    with pytest.raises(UnsupportedFeature) as info:
        convert.chat_request_to_native(req)
    assert info.value.param == param


def test_error_envelope() -> None:
    exc = ContextOverflow("too long: 5000 > 4096", prompt_tokens=5000, context_length=4096)
    assert dump(convert.error_response(exc)) == {
        "error": {
            "message": "too long: 5000 > 4096",
            "type": "invalid_request_error",
            "param": "messages",
            "code": "context_length_exceeded",
        }
    }


def test_stream_encoder_tool_call_and_reasoning_deltas() -> None:
    enc = convert.ChatStreamEncoder(id="x", model="m", created=1, reasoning_field="reasoning")
    out = enc.encode(Chunk(reasoning="hmm"))
    out += enc.encode(Chunk(tool_calls=[ToolCallDelta(index=0, id="call_1", name="f", arguments="")]))
    out += enc.encode(Chunk(tool_calls=[ToolCallDelta(index=0, arguments='{"a"')]))
    out += enc.encode(
        Chunk(tool_calls=[ToolCallDelta(index=0, arguments=": 1}")], finish_reason="tool_calls")
    )
    out += enc.encode(Chunk(usage=Usage(1, 2)))
    deltas = [dump(c)["choices"][0]["delta"] for c in out]
    assert deltas == [
        {"role": "assistant", "content": ""},
        {"reasoning": "hmm"},
        {
            "tool_calls": [
                {"index": 0, "id": "call_1", "type": "function", "function": {"name": "f", "arguments": ""}}
            ]
        },
        {"tool_calls": [{"index": 0, "function": {"arguments": '{"a"'}}]},
        {"tool_calls": [{"index": 0, "function": {"arguments": ": 1}"}}]},
        {},
    ]
    assert dump(out[-1])["choices"][0]["finish_reason"] == "tool_calls"
    assert all("usage" not in dump(c) for c in out)  # include_usage off: no usage key, no usage chunk


def test_stream_encoder_usage_chunk() -> None:
    enc = convert.ChatStreamEncoder(id="x", model="m", created=1, include_usage=True)
    (usage_chunk,) = enc.encode(
        Chunk(usage=Usage(prompt_tokens=3, completion_tokens=4, reasoning_tokens=1, cached_tokens=2))
    )
    assert dump(usage_chunk) == {
        "id": "x",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "m",
        "choices": [],
        "usage": {
            "prompt_tokens": 3,
            "completion_tokens": 4,
            "total_tokens": 7,
            "prompt_tokens_details": {"cached_tokens": 2},
            "completion_tokens_details": {"reasoning_tokens": 1},
        },
    }


def test_completion_request_conversion_and_refusals() -> None:
    req = oa.CompletionRequest.model_validate(
        {"model": "m", "prompt": "p", "logprobs": 3, "stop": ["a", "b"]}
    )
    native = convert.completion_request_to_native(req)
    assert native.prompt == "p" and native.sampling.max_tokens == 16
    assert (
        native.sampling.logprobs and native.sampling.top_logprobs == 3 and native.sampling.stop == ["a", "b"]
    )
    with pytest.raises(InvalidRequest):
        convert.completion_request_to_native(
            oa.CompletionRequest.model_validate({"model": "m", "prompt": [[1, 2]]})
        )


def test_chat_completion_from_native_shapes_logprobs_and_tool_calls() -> None:
    from kaiyuan.chat import ChoiceResult

    message = Message(
        role="assistant", content=None, tool_calls=[ToolCall(name="f", arguments="{}", id="call_9")]
    )
    lp = TokenLogprob(token="é", logprob=-0.5, bytes=None, top=[("é", -0.5), ("e", -1.0)])
    resp = convert.chat_completion_from_native(
        id="i",
        created=2,
        model="m",
        choices=[ChoiceResult(0, message, "tool_calls", [lp])],
        usage=Usage(1, 1),
        logprobs=True,
    )
    choice = dump(resp)["choices"][0]
    assert choice["message"] == {
        "role": "assistant",
        "content": None,
        "refusal": None,
        "tool_calls": [{"id": "call_9", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
    }
    assert choice["logprobs"]["content"][0] == {
        "token": "é",
        "logprob": -0.5,
        "bytes": [195, 169],
        "top_logprobs": [
            {"token": "é", "logprob": -0.5, "bytes": [195, 169]},
            {"token": "e", "logprob": -1.0, "bytes": [101]},
        ],
    }


def test_model_object_falls_back_to_the_store_license() -> None:
    info = ModelInfo(name="a:b", path="/x", created=5.9, context_length=0)
    obj = dump(convert.model_object(info, loaded=False))
    assert obj["license"]["id"] == "unknown" and obj["created"] == 5 and obj["context_length"] is None


def test_unknown_fields_are_kept_not_fatal() -> None:
    req = chat_request(some_future_field={"x": 1})
    assert req.model_extra == {"some_future_field": {"x": 1}}
