"""Hand-made GGUF bytes for reader tests: valid small files and files that lie about counts, lengths or offsets.

Writes the GGUF v3 layout byte by byte (spec: header, key/values, tensor infos, aligned data), so a test can
state exactly which field is wrong. Imports nothing of kaiyuan.
"""

from __future__ import annotations

import struct

U8, I8, U16, I16, U32, I32, F32, BOOL, STRING, ARRAY, U64, I64, F64 = range(13)
F32_TYPE, Q4_0_TYPE = 0, 2  # ggml tensor types

_SCALARS = {
    U8: "B",
    I8: "b",
    U16: "H",
    I16: "h",
    U32: "I",
    I32: "i",
    F32: "f",
    BOOL: "?",
    U64: "Q",
    I64: "q",
    F64: "d",
}


def u32(value: int) -> bytes:
    return struct.pack("<I", value)


def u64(value: int) -> bytes:
    return struct.pack("<Q", value)


def string(text: str | bytes, *, claimed_length: int | None = None) -> bytes:
    raw = text.encode("utf-8") if isinstance(text, str) else text
    return u64(len(raw) if claimed_length is None else claimed_length) + raw


def value(value_type: int, item: object) -> bytes:
    if value_type == STRING:
        assert isinstance(item, str)
        return string(item)
    return struct.pack("<" + _SCALARS[value_type], item)


def kv(key: str, value_type: int, item: object) -> bytes:
    """One key/value; for ARRAY pass ``(item_type, [items])``."""
    if value_type == ARRAY:
        assert isinstance(item, tuple)
        item_type, items = item
        body = u32(item_type) + u64(len(items)) + b"".join(value(item_type, x) for x in items)
        return string(key) + u32(ARRAY) + body
    return string(key) + u32(value_type) + value(value_type, item)


def tensor_info(name: str, shape: tuple[int, ...], type_id: int, offset: int) -> bytes:
    return string(name) + u32(len(shape)) + b"".join(u64(d) for d in shape) + u32(type_id) + u64(offset)


def gguf_file(
    kvs: list[bytes],
    tensors: list[bytes],
    data: bytes = b"",
    *,
    version: int = 3,
    n_kv: int | None = None,
    n_tensors: int | None = None,
    alignment: int = 32,
) -> bytes:
    """Header + ``kvs`` + ``tensors`` + padding to ``alignment`` + ``data``; counts may be overridden to lie."""
    head = b"GGUF" + u32(version) + u64(len(tensors) if n_tensors is None else n_tensors)
    head += u64(len(kvs) if n_kv is None else n_kv)
    body = head + b"".join(kvs) + b"".join(tensors)
    if tensors:
        body += b"\0" * ((-len(body)) % alignment)
    return body + data


def small_model(**overrides: object) -> bytes:
    """A valid little file: 4 metadata keys, a 256-long token array, two F32 tensors (8 and 4x8 floats)."""
    kvs = [
        kv("general.architecture", STRING, "llama"),
        kv("general.name", STRING, "hand-made"),
        kv("llama.context_length", U32, 512),
        kv("tokenizer.ggml.tokens", ARRAY, (STRING, [f"tok{i}" for i in range(256)])),
        kv("tokenizer.ggml.eos_token_id", U32, 7),
    ]
    tensors = [
        tensor_info("norm.weight", (8,), F32_TYPE, 0),
        tensor_info("proj.weight", (8, 4), F32_TYPE, 32),
    ]
    data = struct.pack("<8f", *range(8)) + struct.pack("<32f", *range(32))
    return gguf_file(kvs, tensors, data, **overrides)  # type: ignore[arg-type]
