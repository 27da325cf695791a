"""`kaiyuan eval` as a user runs it: the bundled SmolLM2, tiny random models of its vocabulary, real text files.

Windows are small (--ctx 64, one llama.cpp thread) so that each test scores two or three windows.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from kaiyuan.cli._app import cli, main
from kaiyuan.config import load_settings
from kaiyuan.errors import InvalidRequest
from kaiyuan.eval import DEFAULT_CORPUS, evaluate, min_tokens
from kaiyuan.eval._record import add_record
from kaiyuan.store import ModelStore
from tests.fixtures.cli import kaiyuan
from tests.fixtures.lora_gguf import random_lora
from tests.fixtures.tiny_gguf import smollm2_path

Factory = Callable[..., Path]
CTX = 64


def run_main(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """The command line in this process, errors mapped as for a user: (exit code, stdout, stderr)."""
    try:
        main(args)
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def text(tmp_path: Path) -> Path:
    """The first 120 words of the shipped corpus: about 150 SmolLM2 tokens, two windows of 64."""
    words = DEFAULT_CORPUS.read_text(encoding="utf-8").split(" ")[:120]
    path = tmp_path / "short.txt"
    path.write_text(" ".join(words), encoding="utf-8")
    return path


def store() -> ModelStore:
    return ModelStore.from_settings(load_settings())


def test_the_shipped_corpus_fills_two_windows_of_the_default_context() -> None:
    from kaiyuan.engine.llama_cpp._model import Model

    vocab = Model(str(smollm2_path()), vocab_only=True)
    try:
        tokens = vocab.tokenize(
            DEFAULT_CORPUS.read_text(encoding="utf-8"), add_special=True, parse_special=False
        )
    finally:
        vocab.close()
    assert len(tokens) >= min_tokens(512)
    assert (DEFAULT_CORPUS.parent / "README.md").read_text(encoding="utf-8").count("public domain") >= 1


def test_perplexity_is_printed_recorded_and_shown(text: Path) -> None:
    proc = kaiyuan("eval", "smollm2", "--text", str(text), "--ctx", str(CTX))
    assert proc.returncode == 0, proc.stderr
    assert "perplexity" in proc.stdout and "recorded on smollm2:135m" in proc.stdout

    shown = kaiyuan("show", "smollm2", "--json")
    assert shown.returncode == 0, shown.stderr
    (record,) = json.loads(shown.stdout)["evals"]
    assert record["kind"] == "perplexity" and record["n_ctx"] == CTX
    assert record["corpus"]["name"] == "short.txt" and record["corpus"]["digest"].startswith("sha256-")
    windows = record["corpus"]["tokens"] // CTX
    assert windows >= 2 and record["windows"] == windows
    assert record["tokens_scored"] == windows * (CTX // 2 - 1)
    assert math.isfinite(record["ppl"]) and record["ppl"] > 1
    assert f"{record['ppl']:.4f}" in proc.stdout

    lines = kaiyuan("show", "smollm2").stdout.splitlines()
    row = next(line for line in lines if line.strip().startswith("perplexity"))
    assert f"{record['ppl']:.4f}" in row and "short.txt" in row and f"ctx {CTX}" in row


def _independent_perplexity(path: Path, tokens: list[int], n_ctx: int) -> float:
    """llama-perplexity's method, written again on llama-cpp-python's high-level ``Llama`` (its own context,
    batches and logits buffer). SmolLM2 adds no BOS, so windows are the text's tokens as they are."""
    from llama_cpp import Llama

    llm = Llama(str(path), n_ctx=n_ctx, n_batch=n_ctx, logits_all=True, n_threads=1, verbose=False)
    nll: list[float] = []
    try:
        for start in range(0, len(tokens) - n_ctx + 1, n_ctx):
            window = tokens[start : start + n_ctx]
            llm.reset()
            llm.eval(window)
            logits = np.asarray(llm.scores[:n_ctx], dtype=np.float64)
            for j in range(n_ctx // 2, n_ctx - 1):
                row = logits[j]
                log_z = row.max() + math.log(np.exp(row - row.max()).sum())
                nll.append(log_z - row[window[j + 1]])
    finally:
        llm.close()
    return math.exp(sum(nll) / len(nll))


def test_perplexity_matches_the_method_written_independently(text: Path) -> None:
    result = evaluate(store(), "smollm2", text=text, n_ctx=CTX, n_threads=1, record=False)
    from llama_cpp import Llama

    vocab = Llama(str(smollm2_path()), vocab_only=True, verbose=False)
    tokens = vocab.tokenize(text.read_text(encoding="utf-8").encode(), add_bos=True, special=False)
    vocab.close()
    assert len(tokens) == result.tokens
    expected = _independent_perplexity(smollm2_path(), tokens, CTX)
    assert result.perplexity.ppl == pytest.approx(expected, rel=2e-3)


def test_a_model_against_itself_has_zero_kl_and_full_agreement(text: Path) -> None:
    result = CliRunner().invoke(
        cli,
        ["eval", "smollm2", "--against", "smollm2:135m", "--text", str(text), "--ctx", str(CTX), "--json"],
    )
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert record["kind"] == "against" and record["against"]["name"] == "smollm2:135m"
    assert record["kl"] == {"mean": 0.0, "median": 0.0, "p99": 0.0, "max": 0.0}
    assert record["top1_agreement"] == 1.0
    assert record["ppl_ratio"] == 1.0 and record["reference_ppl"] == record["ppl"]
    assert store().resolve("smollm2").evals == [record]


def test_a_different_model_of_the_same_vocabulary_diverges(text: Path, tiny_gguf_factory: Factory) -> None:
    models = store()
    models.import_gguf(tiny_gguf_factory(arch="llama", seed=3), "tiny:random")
    alone = evaluate(models, "smollm2", text=text, n_ctx=CTX, n_threads=1)
    done: list[int] = []
    result = evaluate(
        models,
        "tiny:random",
        text=text,
        n_ctx=CTX,
        n_threads=1,
        against="smollm2",
        progress=lambda d, t: done.append(d),
    )
    comparison = result.comparison
    assert comparison is not None and done == list(range(1, alone.perplexity.windows + 1))
    # the reference is scored on the very windows it was scored on alone
    assert comparison.reference.ppl == pytest.approx(alone.perplexity.ppl, rel=1e-9)
    # noise weights: a near-uniform guess over 49,152 tokens, far from the trained model
    assert comparison.model.ppl > 1000 and comparison.ppl_ratio > 10
    assert comparison.kl_mean > 0.5 and comparison.top1_agreement < 0.5
    assert comparison.kl_median <= comparison.kl_p99 <= comparison.kl_max
    evals = models.resolve("tiny:random").evals
    assert [r["kind"] for r in evals] == ["against"] and evals[0]["against"]["name"] == "smollm2:135m"


def test_models_of_different_vocabularies_are_refused_before_scoring(
    text: Path, tiny_gguf_factory: Factory
) -> None:
    models = store()
    models.import_gguf(
        tiny_gguf_factory(arch="llama", extra_special_tokens=["<|extra|>"]), "tiny:other-vocab"
    )
    done: list[int] = []
    with pytest.raises(InvalidRequest, match="vocabular") as caught:
        evaluate(
            models,
            "tiny:other-vocab",
            text=text,
            n_ctx=CTX,
            against="smollm2",
            progress=lambda d, t: done.append(d),
        )
    assert "49153" in caught.value.message and "49152" in caught.value.message
    assert done == [] and models.resolve("tiny:other-vocab").evals == []

    proc = kaiyuan("eval", "tiny:other-vocab", "--against", "smollm2", "--text", str(text), "--ctx", str(CTX))
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "vocabular" in proc.stderr


def test_a_text_shorter_than_two_windows_says_how_many_tokens_it_needs(tmp_path: Path) -> None:
    short = tmp_path / "short.txt"
    short.write_text("A river begins as rain that does not stay where it falls.", encoding="utf-8")
    proc = kaiyuan("eval", "smollm2", "--text", str(short), "--ctx", str(CTX))
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert f"needs at least {2 * CTX}" in proc.stderr and "--ctx" in proc.stderr


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"", "is empty"), (b" \n\n ", "is empty"), (b"\xff\xfe bytes", "not UTF-8"), (None, "not found")],
)
def test_bad_text_files_are_clear_errors(
    tmp_path: Path, content: bytes | None, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "corpus.txt"
    if content is not None:
        path.write_bytes(content)
    code, _, err = run_main(["eval", "smollm2", "--text", str(path)], capsys)
    assert code != 0 and message in err and err.startswith("Error: ")
    assert store().resolve("smollm2").evals == []


def test_a_repeated_measurement_replaces_its_record() -> None:
    def record(digest: str, n_ctx: int, ppl: float, against: str | None = None) -> dict[str, object]:
        entry: dict[str, object] = {
            "kind": "against" if against else "perplexity",
            "n_ctx": n_ctx,
            "ppl": ppl,
        }
        entry["corpus"] = {"name": "c.txt", "digest": digest}
        if against:
            entry["against"] = {"name": "ref", "digest": against}
        return entry

    records = [record("a", 512, 10.0), record("a", 128, 11.0), record("a", 512, 12.0, against="r")]
    updated = add_record(records, record("a", 512, 9.0))
    assert updated == [records[1], records[2], record("a", 512, 9.0)]
    assert add_record(updated, record("b", 512, 8.0))[-2:] == [record("a", 512, 9.0), record("b", 512, 8.0)]


def test_importing_the_package_loads_neither_llama_cpp_nor_the_store() -> None:
    code = "import sys, kaiyuan.eval; print(sorted({m.split('.')[0] for m in sys.modules} & {'llama_cpp'}))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    code = "import sys, kaiyuan.eval; print('kaiyuan.store' in sys.modules)"
    assert (
        subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        ).stdout.strip()
        == "False"
    )


@pytest.mark.slow
def test_the_bundled_q4_1_against_its_f32_dequantization(text: Path) -> None:
    """The quantization cost of the bundled Q4_1 against an F32 GGUF of the same weights (Q4_1 → HF float32 →
    GGUF F32 with kaiyuan convert): the weights are equal, so what differs is llama.cpp's Q4_1 arithmetic (its
    dot products quantize activations to 8 bits), a small but non-zero divergence (docs/eval.md)."""
    pytest.importorskip("transformers")
    from kaiyuan.convert import convert_model

    models, settings = store(), load_settings()
    convert_model(models, settings, "smollm2", "hf", dtype="float32", name="smollm2:f32-hf")
    f32 = convert_model(models, settings, "smollm2:f32-hf", "gguf", quant="F32", name="smollm2:f32")
    assert f32.quantization == "F32"

    result = evaluate(models, "smollm2", text=text, n_ctx=CTX, n_threads=1, against="smollm2:f32")
    comparison = result.comparison
    assert comparison is not None
    assert 0 < comparison.kl_mean < 0.01 and comparison.kl_p99 < 0.05
    assert comparison.top1_agreement >= 0.9
    assert 0.97 < comparison.ppl_ratio < 1.03


def test_an_adapter_model_is_scored_with_its_adapter(text: Path, tmp_path: Path) -> None:
    lora = random_lora(smollm2_path(), tmp_path / "lora.gguf", scale=0.2)
    proc = kaiyuan("import", str(lora), "--base", "smollm2", "--name", "smollm2:tuned")
    assert proc.returncode == 0, proc.stderr
    result = evaluate(store(), "smollm2:tuned", text=text, n_ctx=CTX, n_threads=1, against="smollm2")
    comparison = result.comparison
    assert comparison is not None
    assert comparison.kl_mean > 1e-3  # the adapter changes the distributions; without it KL would be 0
    assert comparison.reference.ppl != comparison.model.ppl


def test_a_context_longer_than_the_model_was_trained_for_is_refused(
    text: Path, tiny_gguf_factory: Factory, capsys: pytest.CaptureFixture[str]
) -> None:
    store().import_gguf(tiny_gguf_factory(arch="llama", n_ctx_train=32), "tiny:short-ctx")
    code, _, err = run_main(["eval", "tiny:short-ctx", "--text", str(text), "--ctx", str(CTX)], capsys)
    assert code != 0 and f"--ctx {CTX} is longer than tiny:short-ctx was trained for (32 tokens)" in err
    code, _, err = run_main(["eval", "smollm2", "--text", str(text), "--ctx", "8"], capsys)
    assert code != 0 and "8" in err and "16" in err
