"""Conversations -> token ids with labels: the base model's own chat template, loss only on assistant tokens.

Owns the masking rule. HF-style ``{% generation %}`` masks are emulated without the template's help: for each
assistant turn ``i`` the prompt the model sees at inference, ``render(messages[:i], add_generation_prompt=True)``,
is masked, and what the template renders after it for ``messages[i]`` (its content, thinking and end-of-turn
token) is trained. Turns are chained into one example while each prompt extends the text before it; a template
that rewrites history (e.g. drops earlier thinking) starts a new example at that turn instead, so no token is ever
trained in a context the model would not see when served.

R1-style reasoning: an assistant ``reasoning_content`` is trained as the thinking block ``<think>\\n…\\n</think>``
before the answer. When the template renders the field itself, its rendering is used; when it ignores it (most
templates) the block is put where the model generates it, after a ``<think>`` the prompt already opened if so.

Knows nothing of torch or files: it gets a render function and a tokenizer with character offsets.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from kaiyuan.errors import InvalidDataset, TemplateError
from kaiyuan.tune._data import Conversation

__all__ = [
    "IGNORE_INDEX",
    "THINK_CLOSE",
    "THINK_OPEN",
    "PreparedData",
    "RenderFn",
    "Segment",
    "TokenizeFn",
    "TokenizedExample",
    "conversation_segments",
    "prepare_examples",
    "tokenize_segments",
]

IGNORE_INDEX = -100  # label of a token that is seen but not trained (PyTorch cross-entropy's ignore_index)
THINK_OPEN, THINK_CLOSE = "<think>", "</think>"  # default thinking markers (R1 style)

# (messages, add_generation_prompt, thinking) -> text; thinking: the turn carries reasoning (templates such as
# Qwen3 and the R1 distills take it as ``enable_thinking``)
RenderFn = Callable[[list[dict[str, Any]], bool, bool], str]
TokenizeFn = Callable[
    [str], tuple[list[int], list[tuple[int, int]]]
]  # text -> ids, (start, end) char offsets


@dataclass
class Segment:
    text: str
    train: bool  # True: the tokens that start inside this text are trained


@dataclass
class TokenizedExample:
    input_ids: list[int]
    labels: list[int]  # IGNORE_INDEX where not trained
    line: int  # source line, for messages

    @property
    def trained_tokens(self) -> int:
        return sum(1 for label in self.labels if label != IGNORE_INDEX)


@dataclass
class PreparedData:
    examples: list[TokenizedExample]
    truncated: int = 0  # examples cut to seq_len
    dropped: int = 0  # examples with no trained token left after truncation
    split_turns: int = 0  # conversations split into several examples (the template rewrites history)
    lines: list[int] = field(default_factory=list)  # source lines of the dropped examples

    @property
    def tokens(self) -> int:
        return sum(len(e.input_ids) for e in self.examples)

    @property
    def trained_tokens(self) -> int:
        return sum(e.trained_tokens for e in self.examples)


def _assistant_body(prompt: str, full: str, message: dict[str, Any], think: tuple[str, str]) -> str:
    """The text the model generates for ``message`` after ``prompt``, given the template's ``full`` rendering."""
    think_open_marker, think_close_marker = think
    if full.startswith(prompt):
        body = full[len(prompt) :]
        tail = ""
    else:
        common = _common_prefix(prompt, full)
        tail = prompt[common:]
        body = full[common:]
        # The generation prompt may open the thinking block itself (DeepSeek-R1, some Qwen3 variants); the history
        # rendering does not. Anything else means the template renders turns in a way we cannot align.
        # An empty block the prompt opens and closes (thinking switched off) is fine too.
        closed_empty = tail.strip().startswith(think_open_marker) and tail.strip().endswith(
            think_close_marker
        )
        if closed_empty and not tail.strip()[len(think_open_marker) : -len(think_close_marker)].strip():
            return body
        if tail.strip() != think_open_marker:
            raise TemplateError(
                "the chat template renders an assistant turn differently from its generation prompt "
                f"({tail[:40]!r} vs {body[:40]!r}); this template cannot be used for training"
            )
        if body.lstrip().startswith(think_open_marker):
            body = body.lstrip()[len(think_open_marker) :].lstrip("\n")
    reasoning = (message.get("reasoning_content") or "").strip()
    think_open = tail.strip() == think_open_marker or prompt.rstrip().endswith(think_open_marker)
    if reasoning and reasoning not in body:
        block = f"{reasoning}\n{think_close_marker}\n\n"
        body = block + body if think_open else f"{think_open_marker}\n{block}{body}"
    elif think_open and think_close_marker not in body:
        body = (
            f"\n{think_close_marker}\n\n" + body
        )  # the prompt opened a thinking block the answer must close
    return body


def _common_prefix(a: str, b: str) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def _history_view(messages: Sequence[dict[str, Any]], upto: int) -> list[dict[str, Any]]:
    """messages[:upto] as history: earlier assistant turns lose their reasoning (what a server sends back)."""
    view = []
    for m in messages[:upto]:
        if m["role"] == "assistant" and "reasoning_content" in m:
            m = {k: v for k, v in m.items() if k != "reasoning_content"}
        view.append(m)
    return view


def conversation_segments(
    messages: Sequence[dict[str, Any]], render: RenderFn, think: tuple[str, str] = (THINK_OPEN, THINK_CLOSE)
) -> list[list[Segment]]:
    """Split one conversation into examples of (masked, trained) text segments."""
    examples: list[list[Segment]] = []
    current: list[Segment] = []
    text_so_far = ""
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        history = _history_view(messages, i)
        thinking = bool((message.get("reasoning_content") or "").strip())
        prompt = render(history, True, thinking)
        full = render([*history, message], False, thinking)
        body = _assistant_body(prompt, full, message, think)
        if current and prompt.startswith(text_so_far):
            current.append(Segment(prompt[len(text_so_far) :], train=False))
        else:
            if current:
                examples.append(current)
            current = [Segment(prompt, train=False)]
        current.append(Segment(body, train=True))
        text_so_far = prompt + body
    if current:
        examples.append(current)
    return examples


def tokenize_segments(segments: Sequence[Segment], tokenize: TokenizeFn) -> tuple[list[int], list[int]]:
    """Tokenize the joined text once (as inference would) and label tokens by the segment they start in."""
    text = "".join(s.text for s in segments)
    ids, offsets = tokenize(text)
    spans: list[tuple[int, int]] = []
    pos = 0
    for s in segments:
        if s.train and s.text:
            spans.append((pos, pos + len(s.text)))
        pos += len(s.text)
    labels = []
    for token, (start, _end) in zip(ids, offsets, strict=True):
        trained = any(a <= start < b for a, b in spans)
        labels.append(token if trained else IGNORE_INDEX)
    return ids, labels


def prepare_examples(
    conversations: Sequence[Conversation],
    render: RenderFn,
    tokenize: TokenizeFn,
    seq_len: int,
    think: tuple[str, str] = (THINK_OPEN, THINK_CLOSE),
) -> PreparedData:
    """Render, tokenize, mask and truncate every conversation; count what was cut or dropped."""
    prepared = PreparedData(examples=[])
    for conv in conversations:
        try:
            parts = conversation_segments(conv.messages, render, think)
        except TemplateError as exc:
            raise InvalidDataset(f"line {conv.line}: {exc.message}") from exc
        if len(parts) > 1:
            prepared.split_turns += 1
        for segments in parts:
            ids, labels = tokenize_segments(segments, tokenize)
            if len(ids) > seq_len:
                prepared.truncated += 1
                ids, labels = ids[:seq_len], labels[:seq_len]
            example = TokenizedExample(input_ids=ids, labels=labels, line=conv.line)
            if example.trained_tokens == 0:
                prepared.dropped += 1
                prepared.lines.append(conv.line)
                continue
            prepared.examples.append(example)
    return prepared
