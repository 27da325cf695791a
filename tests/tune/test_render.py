"""Loss masking with SmolLM2's own chat template and tokenizer: exactly the assistant tokens (content, thinking
block and end-of-turn token) are trained; prompts, system text and user turns are not."""

from __future__ import annotations

import functools
from typing import Any

import pytest

from kaiyuan.chat import ChatTemplate
from kaiyuan.tune import IGNORE_INDEX, Conversation, prepare_examples
from kaiyuan.types import Message
from tests.fixtures.tiny_gguf import template_text
from tests.tune.models import needs_tune, smollm2_path


@functools.cache
def _tokenizer() -> Any:
    needs_tune()
    import warnings

    from transformers import AutoTokenizer

    path = smollm2_path()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)


def _prepare(messages: list[dict[str, Any]], template: ChatTemplate, seq_len: int = 512) -> Any:
    tok = _tokenizer()

    def render(msgs: list[dict[str, Any]], gen: bool, thinking: bool) -> str:
        extra = {"enable_thinking": True} if thinking else {}
        return template.render([Message(**m) for m in msgs], add_generation_prompt=gen, **extra)

    def tokenize(text: str) -> tuple[list[int], list[tuple[int, int]]]:
        enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
        return enc["input_ids"], [tuple(o) for o in enc["offset_mapping"]]

    return prepare_examples([Conversation(messages=messages, line=1)], render, tokenize, seq_len)


def _trained_text(example: Any) -> str:
    tok = _tokenizer()
    return tok.decode([t for t in example.labels if t != IGNORE_INDEX])


def _smollm2_template() -> ChatTemplate:
    tok = _tokenizer()
    return ChatTemplate(tok.chat_template, bos_token=tok.bos_token, eos_token=tok.eos_token)


def test_only_assistant_tokens_are_trained() -> None:
    prepared = _prepare(
        [
            {"role": "system", "content": "You answer tersely."},
            {"role": "user", "content": "Name a colour."},
            {"role": "assistant", "content": "Blue."},
            {"role": "user", "content": "Another one?"},
            {"role": "assistant", "content": "Green."},
        ],
        _smollm2_template(),
    )
    assert len(prepared.examples) == 1  # SmolLM2's template extends each prompt: one chained example
    example = prepared.examples[0]
    assert _trained_text(example) == "Blue.<|im_end|>\nGreen.<|im_end|>\n"
    tok = _tokenizer()
    full = tok.decode(example.input_ids)
    assert full.startswith("<|im_start|>system\nYou answer tersely.")
    masked = tok.decode(
        [t for t, label in zip(example.input_ids, example.labels, strict=True) if label == IGNORE_INDEX]
    )
    assert "Name a colour." in masked and "Blue." not in masked and "<|im_start|>assistant\n" in masked


def test_reasoning_is_trained_as_a_think_block() -> None:
    prepared = _prepare(
        [
            {"role": "user", "content": "What is 6 times 7?"},
            {"role": "assistant", "content": "42", "reasoning_content": "6 x 7 = 42."},
        ],
        _smollm2_template(),
    )
    assert _trained_text(prepared.examples[0]) == "<think>\n6 x 7 = 42.\n</think>\n\n42<|im_end|>\n"


def test_r1_template_opens_think_in_the_prompt() -> None:
    template = ChatTemplate(
        template_text("deepseek-ai-DeepSeek-R1-Distill-Llama-8B"),
        bos_token="<｜begin▁of▁sentence｜>",
        eos_token="<｜end▁of▁sentence｜>",
    )
    tok = _tokenizer()

    def render(msgs: list[dict[str, Any]], gen: bool, thinking: bool) -> str:
        return template.render([Message(**m) for m in msgs], add_generation_prompt=gen)

    from kaiyuan.tune import conversation_segments

    parts = conversation_segments(
        [
            {"role": "user", "content": "2+2?"},
            {"role": "assistant", "content": "4", "reasoning_content": "2+2=4"},
        ],
        render,
    )
    assert len(parts) == 1
    masked, trained = parts[0]
    assert masked.text.endswith("<｜Assistant｜><think>\n") and not masked.train
    assert trained.train and trained.text == "2+2=4\n</think>\n\n4<｜end▁of▁sentence｜>"
    assert tok is not None


def test_truncation_is_counted_and_empty_examples_dropped() -> None:
    long_answer = " ".join(["word"] * 400)
    prepared = _prepare(
        [{"role": "user", "content": "Say many words."}, {"role": "assistant", "content": long_answer}],
        _smollm2_template(),
        seq_len=64,
    )
    assert prepared.truncated == 1 and len(prepared.examples[0].input_ids) == 64
    prompt_heavy = _prepare(
        [{"role": "user", "content": long_answer}, {"role": "assistant", "content": "ok"}],
        _smollm2_template(),
        seq_len=64,
    )
    assert prompt_heavy.dropped == 1 and not prompt_heavy.examples


@pytest.mark.parametrize("name", ["Qwen-Qwen3-0.6B", "meta-llama-Llama-3.1-8B-Instruct"])
def test_other_templates_mask_their_own_turn_markers(name: str) -> None:
    template = ChatTemplate(template_text(name), bos_token="<|begin_of_text|>", eos_token="<|eot_id|>")
    from kaiyuan.tune import conversation_segments

    def render(msgs: list[dict[str, Any]], gen: bool, thinking: bool) -> str:
        return template.render([Message(**m) for m in msgs], add_generation_prompt=gen)

    parts = conversation_segments(
        [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}], render
    )
    trained = "".join(s.text for s in parts[0] if s.train)
    assert trained.startswith(("hello", "<think>")) and "hello" in trained
    assert "user" not in trained
