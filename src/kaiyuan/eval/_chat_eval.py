"""``kaiyuan eval MODEL --chat FILE.jsonl [--against BASE]``: a tuned model on held-out chats, beside its base.

Owns the two measures and their order. **Loss on assistant tokens**: each chat is rendered with the model's own
chat template and masked exactly as ``kaiyuan tune`` trains (``tune._render.conversation_segments``: the prompt
of each assistant turn is context, the turn's text and end-of-turn token are scored), each segment tokenized by
llama.cpp, and the mean negative log-likelihood of the assistant tokens is reported (nats per token; lower is
better). **Answer match**: the prompt of the last assistant turn is continued greedily (the most likely token each
step, up to the reference's length plus ``ANSWER_SLACK`` tokens) and the answer is checked as the chat's line asks
(equal to the reference, a regex, or a JSON schema; ``_chats``). A reasoning model's thinking block is not part
of the answer. Models are scored one after the other, so only one is in memory. Must not know: the command line.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from kaiyuan.eval._chats import ChatCase, ChatFile, read_chat_file
from kaiyuan.eval._record import add_record
from kaiyuan.eval._sides import Side
from kaiyuan.tune._data import message_from_dict

if TYPE_CHECKING:
    from kaiyuan.chat import ChatTemplate
    from kaiyuan.store import Manifest, ModelStore

__all__ = ["ANSWER_SLACK", "ChatEvalResult", "ChatScore", "evaluate_chats"]

ANSWER_SLACK = 32  # tokens an answer may run past the reference's length before it is cut (and judged)
Progress = Callable[[str, int, int], None]  # (model, chats done, chats in all)


@dataclass(frozen=True)
class ChatScore:
    """One model on the held-out chats."""

    name: str
    loss: float  # mean negative log-likelihood of the assistant tokens, nats per token
    assistant_tokens: int
    matched: int  # answers that passed their check
    examples: int
    answers: list[str] = field(default_factory=list)  # the greedy answers, in file order

    @property
    def match_rate(self) -> float:
        return self.matched / self.examples if self.examples else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "loss": self.loss,
            "assistant_tokens": self.assistant_tokens,
            "matched": self.matched,
            "examples": self.examples,
            "match_rate": self.match_rate,
        }


@dataclass(frozen=True)
class ChatEvalResult:
    model: ChatScore
    reference: ChatScore | None  # with --against
    chats: ChatFile
    record: dict[str, Any]


def _template(manifest: Manifest) -> ChatTemplate:
    from kaiyuan.chat import ChatTemplate
    from kaiyuan.gguf import read_gguf
    from kaiyuan.store import read_chat_template

    info = read_gguf(manifest.model_path)
    return ChatTemplate(
        read_chat_template(manifest), bos_token=info.bos_token or "", eos_token=info.eos_token or ""
    )


class _ChatScorer:
    """One model's template, tokenizer and llama.cpp context, turning chats into scores."""

    def __init__(self, side: Side, template: ChatTemplate, n_ctx: int, n_threads: int | None) -> None:
        from kaiyuan.eval._sides import open_side
        from kaiyuan.tune._render import THINK_CLOSE, THINK_OPEN

        self.template = template
        dialect = template.dialect
        start, end = dialect.reasoning_start, dialect.reasoning_end
        self.think = (start, end) if dialect.has_reasoning and start and end else (THINK_OPEN, THINK_CLOSE)
        self.scorer = open_side(side, n_ctx, n_threads)

    def render(self, messages: list[dict[str, Any]], generation_prompt: bool, thinking: bool) -> str:
        extra: dict[str, Any] = {"enable_thinking": True} if thinking else {}
        return str(
            self.template.render(
                [message_from_dict(m) for m in messages], add_generation_prompt=generation_prompt, **extra
            )
        )

    def tokens(self, text: str, *, first: bool) -> list[int]:
        """Template text as tokens: special-token text parsed, BOS put first when the model wants one and the
        template did not write it."""
        ids = self.scorer.model.tokenize(text, add_special=False, parse_special=True)
        bos = self.scorer.bos
        if first and bos is not None and (not ids or ids[0] != bos):
            ids = [bos, *ids]
        return ids

    def loss(self, case: ChatCase) -> tuple[float, int]:
        """Summed negative log-likelihood of the chat's assistant tokens, and their count."""
        from kaiyuan.tune._render import conversation_segments

        total, count = 0.0, 0
        for segments in conversation_segments(case.messages, self.render, self.think):
            ids: list[int] = []
            trained: list[bool] = []
            for segment in segments:
                part = self.tokens(segment.text, first=not ids)
                ids += part
                trained += [segment.train] * len(part)
            ids, trained = ids[: self.scorer.n_ctx], trained[: self.scorer.n_ctx]
            logits = self.scorer.logits(ids, 0).astype(np.float64)
            for j in range(len(ids) - 1):
                if trained[j + 1]:
                    row = logits[j]
                    top = row.max()
                    total += float(top + np.log(np.exp(row - top).sum()) - row[ids[j + 1]])
                    count += 1
        return total, count

    def answer(self, case: ChatCase) -> str:
        prompt = self.tokens(self.render(case.messages[:-1], True, False), first=True)
        limit = len(self.tokens(case.answer, first=False)) + ANSWER_SLACK
        room = self.scorer.n_ctx - len(prompt) - 1
        if room <= 0:
            return ""
        text = self.scorer.model.detokenize(self.scorer.greedy(prompt, min(limit, room)))
        close = self.think[1]
        return text.split(close, 1)[1] if close in text else text  # the answer follows the thinking

    def close(self) -> None:
        self.scorer.close()


def _score(
    side: Side,
    template: ChatTemplate,
    chats: ChatFile,
    n_ctx: int,
    n_threads: int | None,
    progress: Progress | None,
) -> ChatScore:
    scorer = _ChatScorer(side, template, n_ctx, n_threads)
    try:
        total, count, matched, answers = 0.0, 0, 0, []
        for done, case in enumerate(chats.cases, 1):
            nll, tokens = scorer.loss(case)
            total, count = total + nll, count + tokens
            answer = scorer.answer(case)
            answers.append(answer)
            matched += case.check.matches(answer)
            if progress is not None:
                progress(side.name, done, len(chats.cases))
    finally:
        scorer.close()
    return ChatScore(
        side.name, total / count if count else float("nan"), count, matched, len(chats.cases), answers
    )


def evaluate_chats(
    store: ModelStore,
    model: str,
    chats: Path,
    *,
    against: str | None = None,
    n_ctx: int = 2048,
    n_threads: int | None = None,
    progress: Progress | None = None,
    record: bool = True,
) -> ChatEvalResult:
    """``model`` (and ``against``, usually its base) on the held-out chats in ``chats``; the result is added to
    ``model``'s manifest when ``record``."""
    from kaiyuan.eval._eval import _gguf, engine_name, side_of

    data = read_chat_file(chats)  # every bad line named before a model is loaded
    manifest = _gguf(store.resolve(model))
    reference = _gguf(store.resolve(against)) if against is not None else None
    score = _score(side_of(manifest), _template(manifest), data, n_ctx, n_threads, progress)
    base = None
    if reference is not None:
        base = _score(side_of(reference), _template(reference), data, n_ctx, n_threads, progress)
    entry: dict[str, Any] = {
        "kind": "chat",
        "corpus": {"name": data.name, "digest": data.digest, "examples": len(data.cases)},
        "n_ctx": n_ctx,
        **score.to_json(),
        "checks": {
            kind: sum(c.check.kind == kind for c in data.cases) for kind in ("exact", "regex", "schema")
        },
        "engine": engine_name(),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    if reference is not None and base is not None:
        entry["against"] = {"name": reference.full_name, "digest": reference.blob.digest, **base.to_json()}
    if record:
        current = store.resolve(manifest.full_name)  # read again: the manifest may have changed meanwhile
        current.evals = add_record(current.evals, entry)
        store.write_manifest(current)
    return ChatEvalResult(score, base, data, entry)
