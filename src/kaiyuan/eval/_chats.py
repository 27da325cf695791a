"""Held-out chats for ``kaiyuan eval --chat FILE.jsonl``: reading the file and checking an answer.

Owns the file's form: one JSON object a line, in any of the fine-tuning formats (``messages``, prompt/completion,
alpaca, sharegpt; read and validated by ``kaiyuan.tune``'s data reader, so a file that trains also evaluates),
whose last message is the assistant's reference answer, with an optional check of its own:

    {"messages": [...], "regex": "\\\\[\\\\[OK\\\\]\\\\] .+"}    the answer must match the regex (whole answer)
    {"messages": [...], "schema": {"type": "object", ...}}   the answer must be JSON valid against the schema
    {"messages": [...]}                                      the answer must equal the reference (whitespace trimmed)

Every problem names its line, before any model is loaded. Also owns the answer check itself (``Check.matches``).
Must not know: models, tokens or the store.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from kaiyuan.errors import InvalidDataset

__all__ = ["ChatCase", "ChatFile", "Check", "read_chat_file"]

_MAX_REPORTED = 10


@dataclass(frozen=True)
class Check:
    """How an answer is judged: equal to the reference, matching a regex, or JSON valid against a schema."""

    kind: Literal["exact", "regex", "schema"]
    reference: str  # the reference answer (whitespace trimmed)
    pattern: str | None = None
    schema: dict[str, Any] | None = None

    def matches(self, answer: str) -> bool:
        text = answer.strip()
        if self.kind == "regex":
            assert self.pattern is not None
            return re.fullmatch(self.pattern, text, flags=re.DOTALL) is not None
        if self.kind == "schema":
            import jsonschema

            try:
                jsonschema.validate(json.loads(text), self.schema or {})
            except (ValueError, jsonschema.ValidationError):
                return False
            return True
        return text == self.reference


@dataclass(frozen=True)
class ChatCase:
    messages: list[dict[str, Any]]  # the whole chat, the reference answer last
    line: int  # 1-based line in the file
    check: Check

    @property
    def answer(self) -> str:
        return str(self.messages[-1].get("content") or "")


@dataclass(frozen=True)
class ChatFile:
    name: str  # the file's name
    digest: str  # sha256-<hex> of its bytes
    cases: list[ChatCase] = field(default_factory=list)


def _check(record: dict[str, Any], reference: str) -> Check:
    """The record's check, or ValueError saying what is wrong with it."""
    regex, schema = record.get("regex"), record.get("schema")
    if regex is not None and schema is not None:
        raise ValueError("give either 'regex' or 'schema', not both")
    if regex is not None:
        if not isinstance(regex, str) or not regex:
            raise ValueError("'regex' must be a non-empty string")
        try:
            re.compile(regex)
        except re.error as exc:
            raise ValueError(f"'regex' is not a valid regular expression ({exc})") from None
        return Check("regex", reference, pattern=regex)
    if schema is not None:
        import jsonschema

        if not isinstance(schema, dict):
            raise ValueError("'schema' must be a JSON Schema object")
        try:
            jsonschema.validators.validator_for(schema).check_schema(schema)
        except jsonschema.SchemaError as exc:
            raise ValueError(f"'schema' is not a valid JSON Schema ({exc.message})") from None
        return Check("schema", reference, schema=schema)
    return Check("exact", reference)


def read_chat_file(path: Path) -> ChatFile:
    """The held-out chats in ``path``; ``InvalidDataset`` naming every bad line (or the empty file)."""
    from kaiyuan.tune._data import read_data_file

    path = Path(path)
    if path.is_file() and not path.read_bytes().strip():
        raise InvalidDataset(
            f"{path} is empty: write one chat a line, the assistant's reference answer last "
            '({"messages": [{"role": "user", ...}, {"role": "assistant", ...}]})'
        )
    data = read_data_file(path)  # messages, roles and JSON: line-numbered errors of its own
    raw_lines = path.read_text(encoding="utf-8").splitlines()
    errors: list[str] = []
    cases: list[ChatCase] = []
    for conversation in data.conversations:
        messages = conversation.messages
        number = conversation.line
        last = messages[-1]
        if last.get("role") != "assistant" or not str(last.get("content") or "").strip():
            errors.append(f"line {number}: the last message must be the assistant's reference answer")
            continue
        try:
            check = _check(json.loads(raw_lines[number - 1]), str(last["content"]).strip())
        except ValueError as exc:
            errors.append(f"line {number}: {exc}")
            continue
        cases.append(ChatCase(messages, number, check))
    if errors:
        shown = "\n  ".join(errors[:_MAX_REPORTED])
        more = f"\n  ... and {len(errors) - _MAX_REPORTED} more" if len(errors) > _MAX_REPORTED else ""
        raise InvalidDataset(f"{path}: {len(errors)} bad line(s); fix them and run again:\n  {shown}{more}")
    digest = "sha256-" + hashlib.sha256(path.read_bytes()).hexdigest()
    return ChatFile(path.name, digest, cases)
