"""read_gguf on the real bundled model, on tiny models written by the gguf package, and on hand-made bad files."""

from __future__ import annotations

import random
import struct
import time
from collections.abc import Callable
from pathlib import Path

import pytest

import kaiyuan.gguf
from kaiyuan.errors import InvalidModelFile
from kaiyuan.gguf import ArrayInfo, GGUFValueType, read_gguf
from tests.fixtures import tiny_gguf
from tests.fixtures.tiny_gguf import smollm2_path
from tests.gguf import gguf_bytes as gb

tiny_gguf_factory = tiny_gguf.tiny_gguf_factory  # the session fixture, made visible to this module


def _write(tmp_path: Path, data: bytes, name: str = "model.gguf") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def _error(path: Path, **kwargs: bool) -> str:
    with pytest.raises(InvalidModelFile) as caught:
        read_gguf(path, **kwargs)
    message = caught.value.message
    assert "\n" not in message, "errors are one line"
    assert str(path) in message, "errors name the file"
    return message


def test_public_names_are_sorted() -> None:
    assert kaiyuan.gguf.__all__ == sorted(kaiyuan.gguf.__all__)


# -- real files -------------------------------------------------------------------------------------------------


def test_bundled_smollm2_facts() -> None:
    info = read_gguf(smollm2_path())
    assert info.version == 3
    assert info.architecture == "llama"
    assert info.parameter_count == 134_515_008
    assert info.quantization == "Q4_1"
    assert info.context_length == 8192
    assert info.chat_template is not None and "<|im_start|>" in info.chat_template
    assert (info.bos_token, info.eos_token) == ("<|im_start|>", "<|im_end|>")
    assert info.get("general.license") == "apache-2.0"
    assert info.get("general.languages") == ["en"]  # short arrays are always loaded
    assert len(info.tensors) == 272
    assert info.file_size == smollm2_path().stat().st_size
    last = max(info.tensors, key=lambda t: t.offset)
    assert info.data_offset + last.offset + last.n_bytes <= info.file_size
    assert info.tensor("token_embd.weight") is not None


def test_vocabulary_arrays_are_skipped_unless_asked() -> None:
    lazy = read_gguf(smollm2_path())
    tokens = lazy.metadata["tokenizer.ggml.tokens"]
    assert isinstance(tokens, ArrayInfo)
    assert (tokens.item_type, len(tokens)) == (GGUFValueType.STRING, 49152)
    assert lazy.value_types["tokenizer.ggml.tokens"] == (GGUFValueType.ARRAY, GGUFValueType.STRING)

    full = read_gguf(smollm2_path(), load_arrays=True)
    loaded = full.metadata["tokenizer.ggml.tokens"]
    assert isinstance(loaded, list) and len(loaded) == 49152
    assert loaded[1] == "<|im_start|>" and loaded[2] == "<|im_end|>"
    assert len(full.metadata["tokenizer.ggml.merges"]) == len(lazy.metadata["tokenizer.ggml.merges"])


def test_reading_metadata_of_a_49k_vocabulary_is_fast() -> None:
    read_gguf(smollm2_path())  # warm the page cache
    start = time.perf_counter()
    read_gguf(smollm2_path())
    assert time.perf_counter() - start < 1.0


def test_tiny_model_written_by_the_gguf_package(tiny_gguf_factory: Callable[..., Path]) -> None:
    path = tiny_gguf_factory(
        arch="qwen3",
        chat_template="{{ messages }}",
        license={"id": "mit", "name": "MIT License", "link": "https://example.org/LICENSE"},
        base_models=[{"name": "Base", "organization": "Org", "repo_url": "https://example.org/base"}],
        n_ctx_train=1024,
    )
    info = read_gguf(path)
    assert info.architecture == "qwen3"
    assert info.context_length == 1024
    assert info.quantization == "Q4_0"
    assert info.chat_template == "{{ messages }}"
    assert info.get("general.license.link") == "https://example.org/LICENSE"
    assert info.get("general.base_model.0.organization") == "Org"
    assert info.parameter_count == sum(t.n_elements for t in info.tensors) > 0


def test_hand_made_file_reads_back(tmp_path: Path) -> None:
    info = read_gguf(_write(tmp_path, gb.small_model()))
    assert info.architecture == "llama"
    assert info.eos_token == "tok7"
    assert [(t.name, t.shape, t.type_name, t.n_bytes) for t in info.tensors] == [
        ("norm.weight", (8,), "F32", 32),
        ("proj.weight", (8, 4), "F32", 128),
    ]
    assert info.quantization == "F32"  # no general.file_type: the dominant tensor type
    assert info.data_offset % 32 == 0


# -- files that are not GGUF or lie -------------------------------------------------------------------------------


def test_text_file_is_not_gguf(tmp_path: Path) -> None:
    message = _error(_write(tmp_path, b"hello, I am a text file\n" * 10, "notes.gguf"))
    assert "not a GGUF file (bad magic" in message


@pytest.mark.parametrize("data", [b"", b"GG"])
def test_tiny_files_are_not_gguf(tmp_path: Path, data: bytes) -> None:
    assert "not a GGUF file" in _error(_write(tmp_path, data))


def test_missing_file(tmp_path: Path) -> None:
    assert "no such file" in _error(tmp_path / "absent.gguf")


def test_metadata_count_that_lies(tmp_path: Path) -> None:
    message = _error(_write(tmp_path, gb.small_model(n_kv=1_000_000)))
    assert "the header claims 1000000 metadata keys" in message and "the count lies" in message


def test_metadata_count_slightly_too_high_reads_into_tensor_table(tmp_path: Path) -> None:
    # One key more than there is: the reader runs into the tensor table and must fail cleanly, not crash.
    _error(_write(tmp_path, gb.small_model(n_kv=6)))


def test_tensor_count_that_lies(tmp_path: Path) -> None:
    assert "claims 1000000000000 tensors" in _error(_write(tmp_path, gb.small_model(n_tensors=10**12)))


def test_string_length_that_lies(tmp_path: Path) -> None:
    lying = gb.string("general.name") + gb.u32(gb.STRING) + gb.string("x", claimed_length=4 * 10**9)
    data = gb.gguf_file([gb.kv("general.architecture", gb.STRING, "llama"), lying], [])
    message = _error(_write(tmp_path, data))
    assert "truncated: metadata key 1 ('general.name') claims a 4.0 GB string at offset" in message


def test_array_length_that_lies(tmp_path: Path) -> None:
    lying = gb.string("tokenizer.ggml.tokens") + gb.u32(gb.ARRAY) + gb.u32(gb.STRING) + gb.u64(2**40)
    message = _error(_write(tmp_path, gb.gguf_file([lying], [])))
    assert "claims an array of 1099511627776 string items" in message


def test_tensor_data_past_the_end(tmp_path: Path) -> None:
    tensors = [gb.tensor_info("w", (1 << 28,), gb.F32_TYPE, 0)]
    message = _error(_write(tmp_path, gb.gguf_file([], tensors, b"\0" * 32)))
    assert "tensor 'w' data" in message and "past the end of the file" in message


def test_truncated_tensor_data(tmp_path: Path) -> None:
    data = gb.small_model()
    message = _error(_write(tmp_path, data[:-1]))
    assert "truncated: tensor 'proj.weight'" in message


def test_every_truncation_of_a_valid_file_is_a_clean_error(tmp_path: Path) -> None:
    data = gb.small_model()
    path = tmp_path / "cut.gguf"
    cuts = sorted({*range(0, 200), *range(200, len(data), 5), *range(len(data) - 300, len(data))})
    for cut in cuts:
        path.write_bytes(data[:cut])
        with pytest.raises(InvalidModelFile):
            read_gguf(path)


def test_random_corruption_never_escapes_as_another_exception(tmp_path: Path) -> None:
    data = gb.small_model()
    header_end = len(data) - 160  # corrupt only the header, metadata and tensor table
    rng = random.Random(1234)
    path = tmp_path / "bad.gguf"
    for _ in range(400):
        corrupt = bytearray(data)
        for _ in range(rng.randint(1, 4)):
            corrupt[rng.randrange(4, header_end)] = rng.randrange(256)
        path.write_bytes(bytes(corrupt))
        try:
            read_gguf(path)
        except InvalidModelFile as exc:
            assert "\n" not in exc.message


@pytest.mark.parametrize(
    ("kvs", "tensors", "expected"),
    [
        ([gb.string("k") + gb.u32(99) + gb.u32(0)], [], "unknown value type 99"),
        (
            [gb.string("k") + gb.u32(gb.ARRAY) + gb.u32(gb.ARRAY) + gb.u64(0)],
            [],
            "nested arrays are not supported",
        ),
        ([gb.kv("k", gb.U32, 1), gb.kv("k", gb.U32, 2)], [], "'k' appears twice"),
        ([gb.kv("", gb.U32, 1)], [], "is empty"),
        ([gb.kv("general.alignment", gb.U32, 24)], [], "not a power of 2"),
        ([gb.kv("general.alignment", gb.U64, 32)], [], "must be a uint32"),
        ([], [gb.tensor_info("w", (1, 1, 1, 1, 1), gb.F32_TYPE, 0)], "has 5 dimensions"),
        ([], [gb.tensor_info("w", (8,), 4, 0)], "unknown tensor type 4"),
        ([], [gb.tensor_info("w", (8,), gb.Q4_0_TYPE, 0)], "not a multiple of the Q4_0 block size 32"),
        ([], [gb.tensor_info("w", (8,), gb.F32_TYPE, 8)], "not aligned to 32 bytes"),
        (
            [],
            [gb.tensor_info("a", (8,), gb.F32_TYPE, 32), gb.tensor_info("b", (8,), gb.F32_TYPE, 0)],
            "tensor 'a' data starts at offset 32, expected 0",
        ),
        (
            [],
            [gb.tensor_info("a", (8,), gb.F32_TYPE, 0), gb.tensor_info("b", (8,), gb.F32_TYPE, 64)],
            "tensor 'b' data starts at offset 64, expected 32",
        ),
        ([], [gb.tensor_info("w", (2**64 - 1,), gb.F32_TYPE, 0)], "negative dimension"),
        ([], [gb.tensor_info("w", (2**40, 2**40), gb.F32_TYPE, 0)], "overflows"),
        ([], [gb.tensor_info("x" * 64, (8,), gb.F32_TYPE, 0)], "the limit is 63"),
        (
            [],
            [gb.tensor_info("w", (8,), gb.F32_TYPE, 0), gb.tensor_info("w", (8,), gb.F32_TYPE, 32)],
            "'w' appears twice",
        ),
    ],
)
def test_malformed_fields(tmp_path: Path, kvs: list[bytes], tensors: list[bytes], expected: str) -> None:
    data = gb.gguf_file(kvs, tensors, b"\0" * 64)
    assert expected in _error(_write(tmp_path, data))


@pytest.mark.parametrize(
    ("version", "expected"),
    [
        (1, "version 1 is no longer supported"),
        (7, "unsupported GGUF version 7"),
        (struct.unpack("<I", struct.pack(">I", 3))[0], "big-endian"),
    ],
)
def test_versions(tmp_path: Path, version: int, expected: str) -> None:
    assert expected in _error(_write(tmp_path, gb.small_model(version=version)))


def test_version_2_is_read(tmp_path: Path) -> None:
    assert read_gguf(_write(tmp_path, gb.small_model(version=2))).version == 2
