"""Fine-tuning data files: read JSONL, detect the format, validate every line up front, normalise to chat messages.

Owns the four accepted shapes (one per file, auto-detected from the first record) and their validation:

    chat          {"messages": [{"role": "user", "content": "..."}, {"role": "assistant", "content": "...",
                                  "reasoning_content": "..."}]}
    prompt        {"prompt": "...", "completion": "..."}     (or prompt/completion as message lists)
    alpaca        {"instruction": "...", "input": "...", "output": "...", "system": "..."}
    sharegpt      {"conversations": [{"from": "human", "value": "..."}, {"from": "gpt", "value": "..."}]}

Every problem is reported with its line number before any model is loaded, so a bad line never surfaces as a crash
in the middle of a run. Knows nothing of templates, tokenizers or torch.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kaiyuan.errors import InvalidDataset

if TYPE_CHECKING:
    from kaiyuan.types import Message

__all__ = ["FORMATS", "Conversation", "DataFile", "detect_format", "file_digest", "read_data_file"]

FORMATS = ("chat", "prompt", "alpaca", "sharegpt")
_ROLES = frozenset({"system", "developer", "user", "assistant", "tool"})
_SHAREGPT_ROLES = {
    "system": "system",
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "chatgpt": "assistant",
    "bing": "assistant",
    "tool": "tool",
    "observation": "tool",
    "function_response": "tool",
}
_MAX_REPORTED = 10  # errors listed in one InvalidDataset message


@dataclass
class Conversation:
    """One training example as chat messages (dicts with role/content and optional reasoning_content)."""

    messages: list[dict[str, Any]]
    line: int  # 1-based line in the source file, for messages about this example


@dataclass
class DataFile:
    """A validated data file."""

    path: Path
    format: str  # one of FORMATS
    conversations: list[Conversation]
    digest: str  # sha256-<hex> of the file's bytes


def file_digest(path: Path) -> str:
    """sha256-<hex> of a file, read in chunks."""
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return "sha256-" + h.hexdigest()


def detect_format(record: dict[str, Any]) -> str | None:
    """The format a record is written in, from its keys; None when it matches none."""
    if "messages" in record:
        return "chat"
    if "conversations" in record:
        return "sharegpt"
    if "instruction" in record and "output" in record:
        return "alpaca"
    if "prompt" in record and "completion" in record:
        return "prompt"
    return None


def read_data_file(path: Path, *, expected_format: str | None = None) -> DataFile:
    """Read and validate a JSONL file; raise ``InvalidDataset`` listing bad lines (with numbers) if any."""
    path = Path(path)
    if not path.is_file():
        raise InvalidDataset(f"data file {path} does not exist", param="data")
    if expected_format is not None and expected_format not in FORMATS:
        raise InvalidDataset(f"unknown data format {expected_format!r}; use one of {', '.join(FORMATS)}")
    errors: list[str] = []
    conversations: list[Conversation] = []
    fmt = expected_format
    fmt_line = 0
    with path.open("r", encoding="utf-8", errors="strict") as fh:
        try:
            lines = list(enumerate(fh, start=1))
        except UnicodeDecodeError as exc:
            raise InvalidDataset(f"{path} is not UTF-8 text: {exc}", param="data") from exc
    for number, raw in lines:
        if not raw.strip():
            continue
        try:
            record = json.loads(raw)
        except json.JSONDecodeError as exc:
            errors.append(f"line {number}: not valid JSON ({exc.msg} at column {exc.colno})")
            continue
        if not isinstance(record, dict):
            errors.append(f"line {number}: expected a JSON object, got {type(record).__name__}")
            continue
        found = detect_format(record)
        if found is None:
            errors.append(
                f"line {number}: unrecognised record with keys {sorted(record)[:6]}; expected 'messages', "
                "'conversations', 'instruction'+'output' or 'prompt'+'completion'"
            )
            continue
        if fmt is None:
            fmt, fmt_line = found, number
        elif found != fmt:
            where = f"line {fmt_line}" if fmt_line else "--format"
            errors.append(f"line {number}: a {found} record in a {fmt} file ({where} set the format)")
            continue
        try:
            messages = _normalise(fmt, record)
            _check_messages(messages)
        except _LineError as exc:
            errors.append(f"line {number}: {exc}")
            continue
        conversations.append(Conversation(messages=messages, line=number))
        if len(errors) > 200:  # the file is clearly not what we expect; stop reading
            break
    if errors:
        shown = "\n  ".join(errors[:_MAX_REPORTED])
        more = f"\n  ... and {len(errors) - _MAX_REPORTED} more" if len(errors) > _MAX_REPORTED else ""
        raise InvalidDataset(
            f"{path}: {len(errors)} bad line(s); fix them and run again:\n  {shown}{more}", param="data"
        )
    if not conversations:
        raise InvalidDataset(f"{path} holds no examples", param="data")
    assert fmt is not None
    return DataFile(path=path, format=fmt, conversations=conversations, digest=file_digest(path))


class _LineError(ValueError):
    """A problem with one record; the caller adds the line number."""


def _text(value: Any, what: str, *, allow_empty: bool = False) -> str:
    if not isinstance(value, str):
        raise _LineError(f"{what} must be a string, got {type(value).__name__}")
    if not allow_empty and not value.strip():
        raise _LineError(f"{what} is empty")
    return value


def _normalise(fmt: str, record: dict[str, Any]) -> list[dict[str, Any]]:
    if fmt == "chat":
        return _chat_messages(record["messages"], "messages")
    if fmt == "sharegpt":
        turns = record["conversations"]
        if not isinstance(turns, list):
            raise _LineError("'conversations' must be a list")
        messages = []
        for i, turn in enumerate(turns):
            if not isinstance(turn, dict) or "from" not in turn or "value" not in turn:
                raise _LineError(f"conversations[{i}] must be an object with 'from' and 'value'")
            role = _SHAREGPT_ROLES.get(str(turn["from"]).lower())
            if role is None:
                raise _LineError(
                    f"conversations[{i}].from {turn['from']!r} is not one of {sorted(_SHAREGPT_ROLES)}"
                )
            messages.append(
                {"role": role, "content": _text(turn["value"], f"conversations[{i}].value", allow_empty=True)}
            )
        if isinstance(record.get("system"), str) and record["system"].strip():
            messages.insert(0, {"role": "system", "content": record["system"]})
        return messages
    if fmt == "alpaca":
        instruction = _text(record["instruction"], "'instruction'")
        extra = record.get("input") or ""
        if not isinstance(extra, str):
            raise _LineError("'input' must be a string")
        user = f"{instruction}\n\n{extra}" if extra.strip() else instruction
        messages = [
            {"role": "user", "content": user},
            {"role": "assistant", "content": _text(record["output"], "'output'")},
        ]
        if isinstance(record.get("system"), str) and record["system"].strip():
            messages.insert(0, {"role": "system", "content": record["system"]})
        return messages
    # prompt / completion: plain strings, or TRL's conversational form (lists of messages)
    prompt, completion = record["prompt"], record["completion"]
    if isinstance(prompt, list) and isinstance(completion, list):
        return _chat_messages(prompt, "prompt") + _chat_messages(completion, "completion")
    return [
        {"role": "user", "content": _text(prompt, "'prompt'")},
        {"role": "assistant", "content": _text(completion, "'completion'")},
    ]


def _chat_messages(raw: Any, where: str) -> list[dict[str, Any]]:
    if not isinstance(raw, list) or not raw:
        raise _LineError(f"'{where}' must be a non-empty list of messages")
    messages = []
    for i, message in enumerate(raw):
        if not isinstance(message, dict):
            raise _LineError(f"{where}[{i}] must be an object")
        role = message.get("role")
        if role not in _ROLES:
            raise _LineError(f"{where}[{i}].role must be one of {sorted(_ROLES)}, got {role!r}")
        content = message.get("content")
        if content is None:
            content = ""
        if isinstance(content, list):  # OpenAI content parts: text only
            if not all(isinstance(p, dict) and p.get("type") == "text" for p in content):
                raise _LineError(f"{where}[{i}].content: only text parts can be trained")
            content = "".join(str(p.get("text", "")) for p in content)
        content = _text(content, f"{where}[{i}].content", allow_empty=True)
        out: dict[str, Any] = {"role": "system" if role == "developer" else role, "content": content}
        reasoning = message.get("reasoning_content", message.get("reasoning"))
        if reasoning is not None:
            if role != "assistant":
                raise _LineError(f"{where}[{i}]: only assistant messages can carry reasoning_content")
            out["reasoning_content"] = _text(reasoning, f"{where}[{i}].reasoning_content", allow_empty=True)
        if message.get("tool_calls"):
            if role != "assistant" or not isinstance(message["tool_calls"], list):
                raise _LineError(f"{where}[{i}].tool_calls must be a list on an assistant message")
            out["tool_calls"] = message["tool_calls"]
        for key in ("name", "tool_call_id"):
            if isinstance(message.get(key), str):
                out[key] = message[key]
        messages.append(out)
    return messages


def _check_messages(messages: list[dict[str, Any]]) -> None:
    assistants = [m for m in messages if m["role"] == "assistant"]
    if not assistants:
        raise _LineError("no assistant message: there is nothing to learn from this example")
    if messages[-1]["role"] != "assistant":
        raise _LineError("the conversation must end with an assistant message")
    last = messages[-1]
    if not (last["content"].strip() or last.get("reasoning_content", "").strip() or last.get("tool_calls")):
        raise _LineError("the last assistant message is empty")
    for i, message in enumerate(messages[1:], start=1):
        if message["role"] == "system":
            raise _LineError(f"message {i}: a system message may only come first")


def message_from_dict(m: dict[str, Any]) -> Message:
    """A normalised chat message (``role``, ``content``, ``reasoning_content``, OpenAI-style ``tool_calls`` …) as
    the chat layer's ``Message``, for rendering with the model's template; object arguments become JSON text."""
    from kaiyuan.types import Message, ToolCall

    calls = []
    for call in m.get("tool_calls") or []:
        fn = call.get("function", call) if isinstance(call, dict) else {}
        args = fn.get("arguments", "{}")
        calls.append(
            ToolCall(
                name=str(fn.get("name", "")),
                arguments=args if isinstance(args, str) else json.dumps(args, ensure_ascii=False),
                id=str(call.get("id", "")),
            )
        )
    return Message(
        role=m["role"],
        content=m.get("content"),
        reasoning_content=m.get("reasoning_content"),
        tool_calls=calls,
        tool_call_id=m.get("tool_call_id"),
        name=m.get("name"),
    )
