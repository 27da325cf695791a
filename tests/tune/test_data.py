"""Data files: the four formats are detected and normalised to chat messages; bad lines are all reported, with
their line numbers, before anything else happens."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kaiyuan.errors import InvalidDataset
from kaiyuan.tune import read_data_file


def _write(path: Path, records: list[object]) -> Path:
    path.write_text(
        "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records), encoding="utf-8"
    )
    return path


def test_chat_format_keeps_reasoning(tmp_path: Path) -> None:
    data = read_data_file(
        _write(
            tmp_path / "chat.jsonl",
            [
                {
                    "messages": [
                        {"role": "system", "content": "Be brief."},
                        {"role": "user", "content": "2+2?"},
                        {"role": "assistant", "content": "4", "reasoning_content": "two and two"},
                    ]
                },
                "",
                {
                    "messages": [
                        {"role": "user", "content": "hi"},
                        {"role": "assistant", "content": "hello", "reasoning": "greet"},
                    ]
                },
            ],
        )
    )
    assert data.format == "chat"
    assert [c.line for c in data.conversations] == [1, 3]
    assert data.conversations[0].messages[2] == {
        "role": "assistant",
        "content": "4",
        "reasoning_content": "two and two",
    }
    assert data.conversations[1].messages[1]["reasoning_content"] == "greet"
    assert data.digest.startswith("sha256-")


def test_prompt_alpaca_and_sharegpt_become_messages(tmp_path: Path) -> None:
    prompt = read_data_file(_write(tmp_path / "p.jsonl", [{"prompt": "Q", "completion": "A"}]))
    assert prompt.format == "prompt"
    assert prompt.conversations[0].messages == [
        {"role": "user", "content": "Q"},
        {"role": "assistant", "content": "A"},
    ]
    alpaca = read_data_file(
        _write(
            tmp_path / "a.jsonl",
            [{"instruction": "Translate", "input": "chat", "output": "cat", "system": "S"}],
        )
    )
    assert alpaca.format == "alpaca"
    assert alpaca.conversations[0].messages == [
        {"role": "system", "content": "S"},
        {"role": "user", "content": "Translate\n\nchat"},
        {"role": "assistant", "content": "cat"},
    ]
    share = read_data_file(
        _write(
            tmp_path / "s.jsonl",
            [{"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"}]}],
        )
    )
    assert share.format == "sharegpt"
    assert share.conversations[0].messages[1] == {"role": "assistant", "content": "hello"}


def test_every_bad_line_is_reported_with_its_number(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "bad.jsonl",
        [
            {"messages": [{"role": "user", "content": "ok"}, {"role": "assistant", "content": "fine"}]},
            "{not json",
            {"messages": [{"role": "user", "content": "no answer"}]},
            {"messages": [{"role": "wizard", "content": "x"}, {"role": "assistant", "content": "y"}]},
            {"prompt": "a", "completion": "b"},
            [1, 2],
            {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": 5}]},
        ],
    )
    with pytest.raises(InvalidDataset) as caught:
        read_data_file(path)
    message = caught.value.message
    assert "6 bad line(s)" in message
    for number in (2, 3, 4, 5, 6, 7):
        assert f"line {number}:" in message
    assert "line 1:" not in message
    assert "not valid JSON" in message and "no assistant message" in message
    assert "a prompt record in a chat file" in message


def test_missing_and_empty_files(tmp_path: Path) -> None:
    with pytest.raises(InvalidDataset, match="does not exist"):
        read_data_file(tmp_path / "nope.jsonl")
    with pytest.raises(InvalidDataset, match="holds no examples"):
        read_data_file(_write(tmp_path / "empty.jsonl", [""]))


def test_forced_format_must_match(tmp_path: Path) -> None:
    path = _write(tmp_path / "p.jsonl", [{"prompt": "Q", "completion": "A"}])
    with pytest.raises(InvalidDataset, match="--format"):
        read_data_file(path, expected_format="chat")
