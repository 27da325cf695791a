"""The native chat path on the deterministic FakeEngine with real chat templates: rendering, stop strings,
n choices, reasoning split and budget, tool calls and tool_choice, response_format grammars, usage, logprobs,
context overflow, cancellation, and raw-prompt completions."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator

import pytest

from kaiyuan.chat import (
    ChatModel,
    ChatTemplate,
    collect_chunks,
    complete_chat,
    complete_chat_sync,
    iter_chat,
    start_chat,
    start_completion,
    stream_chat,
)
from kaiyuan.engine import GenerationRequest
from kaiyuan.errors import ContextOverflow, InvalidRequest, Overloaded, UnsupportedFeature
from kaiyuan.testing import FakeEngine
from kaiyuan.types import ChatRequest, Chunk, CompletionRequest, Message, SamplingParams
from tests.fixtures.tiny_gguf import template_text

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather of a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


def make_model(script, template: str | None = "Qwen-Qwen2.5-7B-Instruct", **engine_kw) -> ChatModel:
    source = template_text(template) if template else None
    engine = FakeEngine(script, **engine_kw)
    return ChatModel("fake:1", engine, ChatTemplate(source, bos_token="<s>", eos_token="</s>"))


@pytest.fixture
def models() -> Iterator[list[ChatModel]]:
    made: list[ChatModel] = []
    yield made
    for model in made:
        model.engine.close()


@pytest.fixture
def model_factory(models: list[ChatModel]):
    def factory(script, template: str | None = "Qwen-Qwen2.5-7B-Instruct", **engine_kw) -> ChatModel:
        model = make_model(script, template, **engine_kw)
        models.append(model)
        return model

    return factory


def chat(text: str = "Hi", **kw) -> ChatRequest:
    sampling = kw.pop("sampling", SamplingParams())
    return ChatRequest(model="fake", messages=[Message(role="user", content=text)], sampling=sampling, **kw)


def text_of(chunks: list[Chunk], index: int = 0) -> str:
    return "".join(c.content for c in chunks if c.index == index and c.usage is None)


def test_plain_answer_usage_and_prompt(model_factory) -> None:
    model = model_factory(["Hello", ",", " world", "!"])
    chunks = list(iter_chat(model, chat("Hi there")))
    assert text_of(chunks) == "Hello, world!"
    assert chunks[-2].finish_reason == "stop"
    usage = chunks[-1].usage
    assert usage is not None and chunks[-1].finish_reason is None
    prompt = model.engine.requests[0].prompt
    rendered = model.engine.detokenize(prompt)
    assert rendered.endswith("<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n")
    assert usage.prompt_tokens == len(prompt) and usage.completion_tokens == 4 and usage.reasoning_tokens == 0


@pytest.mark.parametrize("cut", range(1, 12))
def test_stop_string_split_at_every_boundary_is_never_emitted(model_factory, cut: int) -> None:
    text = "Say STOP now"
    # one split point inside the stop string and characters around it, as two or three tokens
    pieces = [p for p in (text[:cut], text[cut:]) if p]
    model = model_factory(pieces)
    chunks = list(iter_chat(model, chat(sampling=SamplingParams(stop=["STOP"]))))
    assert text_of(chunks) == "Say "
    assert all("ST" not in c.content for c in chunks)
    finals = [c for c in chunks if c.finish_reason]
    assert [c.finish_reason for c in finals] == ["stop"]


def test_stop_string_split_into_single_characters(model_factory) -> None:
    model = model_factory(list("abc<END>def"))
    result = complete_chat_sync(model, chat(sampling=SamplingParams(stop=["<END>", "zzz"])))
    assert result.choices[0].message.content == "abc"
    assert result.choices[0].finish_reason == "stop"
    # the engine was told to stop: the slot is free again
    deadline = time.time() + 2
    while model.engine.stats().running and time.time() < deadline:
        time.sleep(0.01)
    assert model.engine.stats().running == 0


def test_held_back_stop_prefix_is_released_when_it_does_not_complete(model_factory) -> None:
    model = model_factory(["ab ST", "O", "P? no: STO", "RE"])
    chunks = list(iter_chat(model, chat(sampling=SamplingParams(stop=["STOP!"]))))
    assert text_of(chunks) == "ab STOP? no: STORE"
    assert chunks[-2].finish_reason == "stop"


def test_n_choices_are_separate_engine_requests_with_derived_seeds(model_factory) -> None:
    model = model_factory(["x", "y"])
    result = complete_chat_sync(model, chat(n=3, sampling=SamplingParams(seed=7)))
    assert [c.index for c in result.choices] == [0, 1, 2]
    assert all(c.message.content == "xy" for c in result.choices)
    assert [r.sampling.seed for r in model.engine.requests] == [7, 8, 9]
    assert result.usage.completion_tokens == 6
    assert result.usage.prompt_tokens == len(model.engine.requests[0].prompt)


def test_async_stream_interleaves_choices(model_factory) -> None:
    # 6 tokens 50 ms apart: both choices run for 0.3 s, so even a loaded machine (preparation hops to a worker
    # thread first) cannot deliver one choice whole before the other starts
    model = model_factory(list("abcdef"), delay=0.05)

    async def run() -> list[Chunk]:
        return [c async for c in stream_chat(model, chat(n=2))]

    chunks = asyncio.run(run())
    assert text_of(chunks, 0) == "abcdef" and text_of(chunks, 1) == "abcdef"
    order = [c.index for c in chunks if c.content]
    assert order != sorted(order)  # both choices streamed at once, not one after the other
    assert sum(1 for c in chunks if c.finish_reason) == 2
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 12


def test_reasoning_is_split_and_counted(model_factory) -> None:
    model = model_factory(
        ["<think>", "Let me", " think", "</think>", "\n\n", "Paris", "."], "Qwen-Qwen3-0.6B"
    )
    result = complete_chat_sync(model, chat())
    message = result.choices[0].message
    assert message.reasoning_content == "Let me think"
    assert message.content == "Paris."
    assert result.usage.reasoning_tokens == 4  # <think>, two thinking tokens, </think>
    assert result.usage.completion_tokens == 7


def test_prompt_opened_think_block_makes_output_reasoning(model_factory) -> None:
    model = model_factory(["Hmm", " ok", "</think>", "Answer"], "deepseek-ai-DeepSeek-R1-Distill-Qwen-32B")
    request = chat(chat_template_kwargs={"enable_thinking": True})
    result = complete_chat_sync(model, request)
    assert model.engine.detokenize(model.engine.requests[0].prompt).endswith("<think>\n")
    assert result.choices[0].message.reasoning_content == "Hmm ok"
    assert result.choices[0].message.content == "Answer"


def test_template_that_closes_thinking_leaves_output_as_content(model_factory) -> None:
    model = model_factory(["Just", " answer"], "deepseek-ai-DeepSeek-R1-Distill-Qwen-32B")
    result = complete_chat_sync(
        model, chat(reasoning_effort="low", chat_template_kwargs={"enable_thinking": False})
    )
    req = model.engine.requests[0]
    assert model.engine.detokenize(req.prompt).endswith("<think>\n</think>")
    assert req.think_budget is None  # the template closed the think block: nothing to budget
    assert result.choices[0].message.content == "Just answer"
    assert result.choices[0].message.reasoning_content is None


def test_reasoning_effort_none_closes_thinking_at_once(model_factory) -> None:
    """A template with a thinking switch is told enable_thinking=false and closes the block itself; one without
    gets its think block opened and a budget of 0 (the engine writes the end marker at once)."""
    model = model_factory(["Short", " answer"], "Qwen-Qwen3-0.6B")
    result = complete_chat_sync(model, chat(reasoning_effort="none"))
    req = model.engine.requests[0]
    assert model.engine.detokenize(req.prompt).endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    assert req.think_budget is None
    assert result.choices[0].message.content == "Short answer"
    assert not result.choices[0].message.reasoning_content

    script = ["<think>", "long", " thoughts", "</think>", "Short", " answer"]
    switchless = model_factory(script[1:], "deepseek-ai-DeepSeek-R1-Distill-Llama-8B")  # opens <think> itself
    result = complete_chat_sync(switchless, chat(reasoning_effort="none"))
    req = switchless.engine.requests[0]
    assert not switchless.template.has_thinking_switch
    assert switchless.engine.detokenize(req.prompt).endswith("<｜Assistant｜><think>\n")
    assert req.think_budget is not None and req.think_budget.max_tokens == 0
    assert req.think_budget.end_text == "</think>"
    assert result.choices[0].message.content == "Short answer"
    assert not result.choices[0].message.reasoning_content


def test_max_reasoning_tokens_request_beats_model_setting_and_respects_max_tokens(model_factory) -> None:
    model = model_factory(["x"], "Qwen-Qwen3-0.6B")
    model.max_reasoning_tokens = 100
    complete_chat_sync(model, chat())
    complete_chat_sync(model, chat(max_reasoning_tokens=5))
    complete_chat_sync(model, chat(sampling=SamplingParams(max_tokens=40)))
    budgets = [r.think_budget.max_tokens if r.think_budget else None for r in model.engine.requests]
    assert budgets == [100, 5, 30]


def test_tool_call_is_parsed_with_id_and_finish_reason(model_factory) -> None:
    call = '{"name": "get_weather", "arguments": {"city": "Paris"}}'
    model = model_factory(["<tool_call>", "\n", call[:20], call[20:], "\n", "</tool_call>"])
    chunks = list(iter_chat(model, chat("Weather in Paris?", tools=[WEATHER_TOOL])))
    rendered = model.engine.detokenize(model.engine.requests[0].prompt)
    assert "get_weather" in rendered  # tools rendered through the template
    result = collect_chunks(chunks)
    message = result.choices[0].message
    assert result.choices[0].finish_reason == "tool_calls"
    assert message.content is None
    assert len(message.tool_calls) == 1
    tool_call = message.tool_calls[0]
    assert tool_call.name == "get_weather" and json.loads(tool_call.arguments) == {"city": "Paris"}
    assert tool_call.id.startswith("call_")
    deltas = [d for c in chunks for d in c.tool_calls]
    assert deltas[0].id == tool_call.id and deltas[0].name == "get_weather"
    assert all(d.id is None and d.name is None for d in deltas[1:])
    assert model.engine.requests[0].grammar is None  # auto: no grammar


def test_parallel_tool_calls_false_keeps_only_the_first(model_factory) -> None:
    one = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "A"}}\n</tool_call>\n'
    two = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "B"}}\n</tool_call>'
    model = model_factory([one, two])
    both = complete_chat_sync(model, chat(tools=[WEATHER_TOOL]))
    first = complete_chat_sync(model, chat(tools=[WEATHER_TOOL], parallel_tool_calls=False))
    assert len(both.choices[0].message.tool_calls) == 2
    assert [json.loads(c.arguments)["city"] for c in first.choices[0].message.tool_calls] == ["A"]


def test_tool_choice_none_neither_renders_nor_parses_tools(model_factory) -> None:
    text = '<tool_call>\n{"name": "get_weather", "arguments": {}}\n</tool_call>'
    model = model_factory([text])
    result = complete_chat_sync(model, chat(tools=[WEATHER_TOOL], tool_choice="none"))
    assert "get_weather" not in model.engine.detokenize(model.engine.requests[0].prompt)
    assert result.choices[0].message.content == text
    assert result.choices[0].finish_reason == "stop"


@pytest.mark.parametrize("choice", ["required", {"type": "function", "function": {"name": "get_weather"}}])
def test_forced_tool_choice_constrains_with_a_grammar(model_factory, choice) -> None:
    model = model_factory(['<tool_call>\n{"name": "get_weather", "arguments": {"city": "X"}}\n</tool_call>'])
    result = complete_chat_sync(model, chat(tools=[WEATHER_TOOL], tool_choice=choice))
    grammar = model.engine.requests[0].grammar
    assert grammar and "root" in grammar and "get_weather" in grammar
    assert model.engine.requests[0].grammar_after is None  # no thinking: the grammar applies from the start
    assert result.choices[0].finish_reason == "tool_calls"


def test_response_format_grammar_applies_after_thinking(model_factory) -> None:
    model = model_factory(["plan", "</think>", '{"a": 1}'], "Qwen-Qwen3-0.6B")
    fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}, "strict": True}}
    result = complete_chat_sync(model, chat(response_format=fmt))
    req = model.engine.requests[0]
    assert req.grammar and req.grammar_after == "</think>"
    assert model.engine.detokenize(req.prompt).endswith("<think>")  # thinking opened so the trigger will come
    assert result.choices[0].message.reasoning_content == "plan"
    assert json.loads(result.choices[0].message.content or "") == {"a": 1}


def test_response_format_without_reasoning_applies_from_the_start(model_factory) -> None:
    model = model_factory(['{"a": 1}'])
    complete_chat_sync(model, chat(response_format={"type": "json_object"}))
    req = model.engine.requests[0]
    assert req.grammar and req.grammar_after is None


def test_response_format_with_auto_tools_is_refused(model_factory) -> None:
    model = model_factory(["x"])
    with pytest.raises(UnsupportedFeature) as info:
        start_chat(model, chat(tools=[WEATHER_TOOL], response_format={"type": "json_object"}))
    assert info.value.param == "response_format"


def test_logprobs_follow_the_emitted_tokens(model_factory) -> None:
    model = model_factory(["A", "B", "<E", "ND>", "C"])
    request = chat(sampling=SamplingParams(logprobs=True, top_logprobs=1, stop=["<END>"]))
    result = complete_chat_sync(model, request)
    lps = result.choices[0].logprobs
    assert [lp.token for lp in lps] == ["A", "B"]
    assert all(lp.logprob == 0.0 and lp.top == [(lp.token, 0.0)] for lp in lps)


def test_prompt_longer_than_context_is_an_error_with_counts(model_factory) -> None:
    model = model_factory(["x"], n_ctx=32)
    with pytest.raises(ContextOverflow) as info:
        start_chat(model, chat("a long question " * 10))
    assert info.value.context_length == 32 and info.value.prompt_tokens > 32
    assert str(info.value.prompt_tokens) in info.value.message and info.value.param == "messages"


def test_refused_choice_cancels_the_ones_already_queued(model_factory) -> None:
    model = model_factory(["x"] * 50, slots=1, max_queue=1, delay=0.01)
    with pytest.raises(Overloaded):
        start_chat(model, chat(n=3))
    deadline = time.time() + 2
    while (model.engine.stats().running or model.engine.stats().waiting) and time.time() < deadline:
        time.sleep(0.01)
    assert model.engine.stats().running == 0 and model.engine.stats().waiting == 0


def test_closing_the_stream_early_cancels_generation(model_factory) -> None:
    model = model_factory(["tok"] * 1000, delay=0.005)
    chunks = iter_chat(model, chat())
    next(chunks)
    chunks.close()
    deadline = time.time() + 2
    while model.engine.stats().running and time.time() < deadline:
        time.sleep(0.01)
    assert model.engine.stats().running == 0


def test_async_consumer_that_stops_cancels_generation(model_factory) -> None:
    model = model_factory(["tok"] * 1000, delay=0.005)

    async def run() -> None:
        stream = start_chat(model, chat(n=2))
        async for chunk in stream:
            if chunk.content:
                break
        await asyncio.sleep(0.1)

    asyncio.run(run())
    deadline = time.time() + 2
    while model.engine.stats().running and time.time() < deadline:
        time.sleep(0.01)
    assert model.engine.stats().running == 0


def test_complete_chat_async_matches_sync(model_factory) -> None:
    model = model_factory(["one", " two"])
    result = asyncio.run(complete_chat(model, chat()))
    assert result.choices[0].message.content == "one two"
    assert result.usage.completion_tokens == 2


def test_length_finish_reason(model_factory) -> None:
    model = model_factory(["a", "b", "c"])
    result = complete_chat_sync(model, chat(sampling=SamplingParams(max_tokens=2)))
    assert result.choices[0].message.content == "ab"
    assert result.choices[0].finish_reason == "length"


def test_completion_echo_stop_and_bos(model_factory) -> None:
    model = model_factory([" sat", " on", " the", " mat"])
    request = CompletionRequest(
        model="fake", prompt="The cat", echo=True, sampling=SamplingParams(stop=[" the"])
    )
    chunks = list(start_completion(model, request))
    result = collect_chunks(chunks)
    assert result.choices[0].message.content == "The cat sat on"
    assert result.choices[0].finish_reason == "stop"
    req: GenerationRequest = model.engine.requests[0]
    assert req.prompt[0] == 256  # BOS added for raw prompts
    assert result.usage.prompt_tokens == len(req.prompt)


def test_completion_context_overflow_names_prompt(model_factory) -> None:
    model = model_factory(["x"], n_ctx=8)
    with pytest.raises(ContextOverflow) as info:
        start_completion(model, CompletionRequest(model="fake", prompt="much too long for eight"))
    assert info.value.param == "prompt"


def test_model_without_template_uses_chatml_fallback(model_factory) -> None:
    model = model_factory(["ok"], None)
    complete_chat_sync(model, chat("Hello"))
    rendered = model.engine.detokenize(model.engine.requests[0].prompt)
    assert rendered == "<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n"


def test_chat_template_kwargs_cannot_replace_the_conversation(model_factory) -> None:
    model = model_factory(["x"])
    with pytest.raises(InvalidRequest) as info:
        start_chat(model, chat(chat_template_kwargs={"tools": [], "add_generation_prompt": False}))
    assert info.value.param == "chat_template_kwargs" and "add_generation_prompt, tools" in info.value.message


def test_default_system_applies_only_when_the_request_has_none(model_factory) -> None:
    model = model_factory(["x"])
    model.default_system = "Answer in French."
    complete_chat_sync(model, chat("Hi"))
    own = ChatRequest(
        model="fake",
        messages=[Message(role="system", content="Answer in Welsh."), Message(role="user", content="Hi")],
    )
    complete_chat_sync(model, own)
    first, second = (model.engine.detokenize(r.prompt) for r in model.engine.requests)
    assert "Answer in French." in first
    assert "Answer in Welsh." in second and "French" not in second


def test_structured_answer_after_thinking_gets_half_of_max_tokens(model_factory) -> None:
    model = model_factory(["x"], "Qwen-Qwen3-0.6B")
    fmt = {"type": "json_object"}
    complete_chat_sync(model, chat(response_format=fmt, sampling=SamplingParams(max_tokens=100)))
    complete_chat_sync(model, chat(response_format=fmt))
    complete_chat_sync(
        model, chat(response_format=fmt, max_reasoning_tokens=10, sampling=SamplingParams(max_tokens=100))
    )
    budgets = [r.think_budget.max_tokens if r.think_budget else None for r in model.engine.requests]
    assert budgets == [50, None, 10]


# -- preparing off the event loop ---------------------------------------------------------------------------------


def test_async_start_prepares_in_a_worker_thread(models: list[ChatModel]) -> None:
    import threading

    from kaiyuan.chat import start_chat_async

    seen: list[str] = []
    model = make_model(["Hi"])
    models.append(model)
    render = model.template.render

    def recording_render(*args, **kwargs):  # the real template, noting which thread renders
        seen.append(threading.current_thread().name)
        return render(*args, **kwargs)

    model.template.render = recording_render  # type: ignore[method-assign]

    async def go() -> str:
        stream = await start_chat_async(model, ChatRequest(model="m", messages=[Message("user", "hi")]))
        return "".join([c.content async for c in stream])

    assert asyncio.run(go()) == "Hi"
    assert seen and seen[0].startswith("kaiyuan-prepare") and seen[0] != threading.main_thread().name


def test_a_request_cancelled_while_preparing_frees_its_slot(models: list[ChatModel]) -> None:
    """The client goes away while the worker still prepares: the stream it then starts is cancelled at once."""
    import threading

    from kaiyuan.chat import ChatStream, _pipeline

    model = make_model(["a"] * 50, slots=1, max_queue=0, delay=0.2)
    models.append(model)
    request = ChatRequest(model="m", messages=[Message("user", "hi")])
    release = threading.Event()
    started: list[ChatStream] = []

    def slow_start() -> ChatStream:
        release.wait(10)
        started.append(start_chat(model, request))
        return started[-1]

    async def go() -> None:
        task = asyncio.ensure_future(_pipeline._off_loop(slow_start))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        release.set()
        while not started:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)  # the done-callback runs on the loop

    asyncio.run(go())
    assert all(handle.cancelled for handle in started[0]._handles)  # not left generating for nobody
