"""`kaiyuan eval MODEL --chat FILE.jsonl`: held-out chats scored as a user runs it, on the bundled SmolLM2 and a
model tuned from it with `kaiyuan tune` (the tuning test is slow: a short LoRA run on one thread)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from click.testing import CliRunner

from kaiyuan.cli._app import cli
from kaiyuan.config import load_settings
from kaiyuan.eval import Check, evaluate_chats
from kaiyuan.store import ModelStore
from tests.fixtures.cli import kaiyuan

FORMAT = r"\[\[KAIYUAN\]\] [A-Z]+ :: noted\."


def store() -> ModelStore:
    return ModelStore.from_settings(load_settings())


def chat(user: str, answer: str, **check: object) -> str:
    messages = [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]
    return json.dumps({"messages": messages, **check})


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        ([], "is empty"),
        ([chat("hi", "hello"), '{"messages": [oops'], "line 2: not valid JSON"),
        (
            [chat("hi", "hello"), chat("hi", "hello")[:-2] + ', {"role": "user", "content": "and?"}]}'],
            "line 2: the conversation must end with an assistant",
        ),
        ([chat("hi", "hello", regex="([a-z")], "line 1: 'regex' is not a valid regular expression"),
        ([chat("hi", "hello", schema={"type": 3})], "line 1: 'schema' is not a valid JSON Schema"),
        ([chat("hi", "x", regex="x", schema={})], "line 1: give either 'regex' or 'schema'"),
    ],
)
def test_bad_chat_files_name_the_line_before_any_model_loads(
    tmp_path: Path, lines: list[str], expected: str
) -> None:
    path = tmp_path / "held.jsonl"
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    proc = kaiyuan("eval", "smollm2", "--chat", str(path))
    assert proc.returncode == 2, proc.stderr
    assert expected in proc.stderr and "Traceback" not in proc.stderr
    assert store().resolve("smollm2").evals == []


def test_answer_checks_exact_regex_and_schema() -> None:
    assert Check("exact", "Paris").matches("  Paris\n") and not Check("exact", "Paris").matches("paris")
    regex = Check("regex", "", pattern=FORMAT)
    assert regex.matches("[[KAIYUAN]] OWLS :: noted.") and not regex.matches(
        "Owls are birds. [[KAIYUAN]] OWLS"
    )
    schema = Check("schema", "", schema={"type": "object", "required": ["city"]})
    assert schema.matches('{"city": "Paris"}') and not schema.matches('{"town": "Paris"}')
    assert not schema.matches("Paris")


def test_chat_eval_is_printed_recorded_and_shown(tmp_path: Path) -> None:
    path = tmp_path / "held.jsonl"
    path.write_text(
        chat("What is the capital of France? Answer with one word.", "Paris", regex=r"(?i).*paris.*")
        + "\n"
        + chat(
            'Reply with the JSON object {"ok": true} and nothing else.',
            '{"ok": true}',
            schema={"type": "object"},
        )
        + "\n",
        encoding="utf-8",
    )
    result = CliRunner().invoke(cli, ["eval", "smollm2", "--chat", str(path), "--against", "smollm2:135m"])
    assert result.exit_code == 0, result.output
    assert "smollm2:135m on held.jsonl: 2 chats (1 regex, 1 schema checks)" in result.output
    (record,) = store().resolve("smollm2").evals
    assert record["kind"] == "chat" and record["examples"] == 2 and record["checks"]["schema"] == 1
    assert record["assistant_tokens"] > 2 and 0 < record["loss"] < 20
    # a model beside itself: the same greedy answers and the same loss
    assert record["against"]["loss"] == record["loss"] and record["against"]["matched"] == record["matched"]
    shown = kaiyuan("show", "smollm2").stdout
    row = next(line for line in shown.splitlines() if "chat held.jsonl" in line)
    assert f"answers matched {record['matched']}/2" in row and f"{record['loss']:.4f}" in row


TOPICS = ["rivers", "mountains", "bread", "violins", "comets", "bees", "glass", "tides", "maps", "owls",
          "copper", "tea", "bridges", "clouds", "chess", "salt", "wolves", "paper", "volcanoes", "lanterns"]  # fmt: skip
HELD_OUT = ["rainbows", "castles", "penguins", "cinnamon", "telescopes", "gardens"]
QUESTIONS = ["Tell me something about {t}.", "What do you know about {t}?", "Describe {t}."]


def _format_task(path: Path, topics: list[str], seed: int, *, check: bool) -> Path:
    """A format no base model produces: ``[[KAIYUAN]] TOPIC :: noted.``, checked by a regex when ``check``."""
    rng = random.Random(seed)
    extra = {"regex": FORMAT} if check else {}
    lines = [
        chat(rng.choice(QUESTIONS).format(t=t), f"[[KAIYUAN]] {t.upper()} :: noted.", **extra) for t in topics
    ]
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


@pytest.mark.slow
def test_a_tuned_model_beats_its_base_on_its_held_out_format_task(tmp_path: Path) -> None:
    pytest.importorskip("peft")
    train = _format_task(tmp_path / "train.jsonl", TOPICS, seed=1, check=False)
    held = _format_task(tmp_path / "held.jsonl", HELD_OUT, seed=2, check=True)
    tuned = CliRunner().invoke(
        cli,
        ["tune", "smollm2", "--data", str(train), "--name", "marked", "--max-steps", "10", "--lr", "2e-3",
         "--rank", "8", "--alpha", "16", "--seq-len", "64", "--batch", "4", "--threads", "1"],
    )  # fmt: skip
    assert tuned.exit_code == 0, tuned.output

    result = evaluate_chats(store(), "marked", held, against="smollm2", n_threads=1)
    model, base = result.model, result.reference
    assert base is not None
    assert model.matched >= len(HELD_OUT) - 1 and base.matched == 0, (model.answers, base.answers)
    assert model.loss < base.loss / 4  # nats per assistant token
    record = store().resolve("marked").evals[-1]
    assert record["kind"] == "chat" and record["against"]["name"] == "smollm2:135m"
    assert record["match_rate"] > record["against"]["match_rate"]


def test_text_and_chat_together_are_a_usage_error(tmp_path: Path) -> None:
    path = tmp_path / "held.jsonl"
    path.write_text(chat("hi", "hello") + "\n", encoding="utf-8")
    result = CliRunner().invoke(cli, ["eval", "smollm2", "--chat", str(path), "--text", str(path)])
    assert (
        result.exit_code == 2
        and "give --text (perplexity) or --chat (held-out chats), not both" in result.output
    )
