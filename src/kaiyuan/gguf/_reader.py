"""A bounds-checked GGUF reader: header, metadata key/values and the tensor table, never tensor data.

GGUF files are untrusted input (downloads, user files). Every count, length and offset read from the file is checked
against the bytes that remain before anything is allocated or read, so a lying file costs a few reads, not gigabytes
of memory. A bad file raises ``InvalidModelFile`` with one line that names the problem and where it is. The checks
follow llama.cpp's own loader (``ggml/src/gguf.cpp``) so that what passes here also parses there.

Owns: the GGUF binary layout (versions 2 and 3, little endian). Must not know: the model store, llama.cpp, chat.
Reads with plain buffered file reads (no memory map), so a file that shrinks while it is read is an error, not a crash.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from kaiyuan.errors import InvalidModelFile
from kaiyuan.gguf._types import GGML_TYPES, SCALAR_FORMATS, GGUFValueType, file_type_name, ggml_type_name

__all__ = ["ArrayInfo", "GGUFInfo", "TensorInfo", "read_gguf"]

_MAGIC = b"GGUF"
_DEFAULT_ALIGNMENT = 32
_MAX_DIMS = 4  # GGML_MAX_DIMS
_MAX_TENSOR_NAME = 64  # GGML_MAX_NAME: names must be shorter
_INT64_MAX = 2**63 - 1
_CHUNK = 1 << 20  # bytes read from disk at a time
_U64 = struct.Struct("<Q")
# Arrays with at most this many items are always loaded; longer ones (tokenizer vocabularies, merges) only when
# ``load_arrays=True``, otherwise they are kept as an ``ArrayInfo`` (type, length, offset) and skipped.
INLINE_ARRAY_ITEMS = 64

# The fewest bytes one item can take, used to bound a claimed count by the bytes left in the file.
_MIN_KV_BYTES = 8 + 1 + 4 + 1  # key length, a 1-byte key, value type, a 1-byte value
_MIN_TENSOR_INFO_BYTES = 8 + 1 + 4 + 4 + 8  # name length, 1-byte name, n_dims, type, offset


@dataclass(frozen=True)
class ArrayInfo:
    """A metadata array that was skipped, not loaded: its item type, item count and file offset of the first item."""

    item_type: GGUFValueType
    length: int
    offset: int

    def __len__(self) -> int:
        return self.length


@dataclass(frozen=True)
class TensorInfo:
    """One entry of the tensor table. ``offset`` is relative to ``GGUFInfo.data_offset``."""

    name: str
    shape: tuple[int, ...]  # dimensions in ggml order (ne[0] first: the row length)
    type_id: int  # ggml_type
    offset: int  # bytes from the start of the data section
    n_elements: int
    n_bytes: int

    @property
    def type_name(self) -> str:
        return ggml_type_name(self.type_id)


@dataclass
class GGUFInfo:
    """What a GGUF file says about itself, checked for consistency with the file's size."""

    path: Path
    version: int
    metadata: dict[str, Any]  # key -> value; long arrays are ArrayInfo unless read with load_arrays=True
    value_types: dict[str, tuple[GGUFValueType, GGUFValueType | None]]  # key -> (type, array item type)
    tensors: list[TensorInfo]
    alignment: int
    data_offset: int  # file offset where tensor data starts
    file_size: int
    bos_token: str | None = None  # text of tokenizer.ggml.bos_token_id, when the file has both
    eos_token: str | None = None
    _by_name: dict[str, TensorInfo] = field(default_factory=dict, repr=False)

    def get(self, key: str, default: Any = None) -> Any:
        return self.metadata.get(key, default)

    @property
    def architecture(self) -> str | None:
        value = self.metadata.get("general.architecture")
        return value if isinstance(value, str) and value else None

    @property
    def kind(self) -> str:
        """``general.type``: "model" (the default) or "adapter" (a LoRA adapter file)."""
        value = self.metadata.get("general.type")
        return value if isinstance(value, str) and value else "model"

    @property
    def parameter_count(self) -> int:
        """Sum of the elements of all tensors (what Ollama and Hugging Face call the parameter count)."""
        return sum(t.n_elements for t in self.tensors)

    @property
    def quantization(self) -> str | None:
        """The file type named by ``general.file_type`` ("Q4_K_M"), else the tensor type holding most elements."""
        file_type = self.metadata.get("general.file_type")
        if isinstance(file_type, int) and not isinstance(file_type, bool):
            name = file_type_name(file_type)
            if name:
                return name
        totals: dict[int, int] = {}
        for tensor in self.tensors:
            totals[tensor.type_id] = totals.get(tensor.type_id, 0) + tensor.n_elements
        if not totals:
            return None
        return ggml_type_name(max(totals, key=lambda type_id: totals[type_id]))

    @property
    def context_length(self) -> int | None:
        """``<architecture>.context_length``: the context the model was trained for (tokens)."""
        arch = self.architecture
        value = self.metadata.get(f"{arch}.context_length") if arch else None
        return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None

    @property
    def chat_template(self) -> str | None:
        value = self.metadata.get("tokenizer.chat_template")
        return value if isinstance(value, str) and value else None

    def tensor(self, name: str) -> TensorInfo | None:
        if not self._by_name:
            self._by_name.update((t.name, t) for t in self.tensors)
        return self._by_name.get(name)


def read_gguf(path: str | Path, *, load_arrays: bool = False) -> GGUFInfo:
    """Read and check a GGUF file's header, metadata and tensor table (not the tensor data).

    Raises ``InvalidModelFile`` (one line: the file, the problem, the offset) when the file is missing, not GGUF,
    truncated, or claims counts, lengths or tensor ranges that do not fit in it.
    """
    path = Path(path)
    try:
        with path.open("rb") as handle:
            size = _file_size(handle)
            return _Parser(path, handle, size, load_arrays).parse()
    except FileNotFoundError as exc:
        raise InvalidModelFile(f"{path}: no such file") from exc
    except IsADirectoryError as exc:
        raise InvalidModelFile(f"{path}: is a directory, not a GGUF file") from exc
    except PermissionError as exc:
        raise InvalidModelFile(f"{path}: permission denied") from exc
    except OSError as exc:
        raise InvalidModelFile(f"{path}: cannot read: {exc.strerror or exc}") from exc


def _file_size(handle: BinaryIO) -> int:
    handle.seek(0, 2)
    size = handle.tell()
    handle.seek(0)
    return size


def _human_bytes(n: int) -> str:
    """``"4.0 GB"``, ``"12 bytes"``: sizes in error messages."""
    if n < 1000:
        return "1 byte" if n == 1 else f"{n} bytes"
    value = float(n)
    units = ("kB", "MB", "GB", "TB", "PB")
    for unit in units:
        value /= 1000
        if value < 1000 or unit == units[-1]:
            return f"{value:.1f} {unit}"
    raise AssertionError("unreachable")  # pragma: no cover


class _Bad(Exception):
    """A problem found in the file; becomes ``InvalidModelFile`` with the file's path in front."""


class _Cursor:
    """Sequential reads from a file through a buffer, each checked against the file's size first."""

    def __init__(self, handle: BinaryIO, size: int) -> None:
        self._handle = handle
        self.size = size
        self.pos = 0
        self._buf = b""
        self._buf_start = 0

    @property
    def remaining(self) -> int:
        return self.size - self.pos

    def take(self, n: int, what: str) -> bytes:
        if n > self.size - self.pos:
            raise _Bad(
                f"truncated: {what} needs {_human_bytes(n)} at offset {self.pos}, "
                f"but the file ends after {_human_bytes(self.size - self.pos)}"
            )
        start = self.pos - self._buf_start
        if start < 0 or start + n > len(self._buf):
            self._handle.seek(self.pos)
            self._buf = self._handle.read(max(n, _CHUNK))
            self._buf_start = self.pos
            start = 0
            if len(self._buf) < n:
                raise _Bad(f"truncated: the file shrank while being read (at offset {self.pos})")
        self.pos += n
        return self._buf[start : start + n]

    def skip(self, n: int, what: str) -> None:
        if n > self.size - self.pos:
            raise _Bad(
                f"truncated: {what} claims {_human_bytes(n)} at offset {self.pos}, "
                f"but the file ends after {_human_bytes(self.size - self.pos)}"
            )
        self.pos += n

    def u32(self, what: str) -> int:
        value: int = struct.unpack("<I", self.take(4, what))[0]
        return value

    def u64(self, what: str) -> int:
        value: int = struct.unpack("<Q", self.take(8, what))[0]
        return value

    def string_length(self, what: str) -> int:
        at = self.pos
        n = self.u64(what)
        if n > self.size - self.pos:
            raise _Bad(
                f"truncated: {what} claims a {_human_bytes(n)} string at offset {at}, "
                f"but the file ends after {_human_bytes(self.size - self.pos)}"
            )
        return n

    def string(self, what: str) -> str:
        n = self.string_length(what)
        return self.take(n, what).decode("utf-8", "replace")

    def skip_strings(self, count: int, what: str) -> None:
        # The hot loop of reading a vocabulary: length prefixes are read straight from the buffer when they are in it.
        unpack = _U64.unpack_from
        for _ in range(count):
            start = self.pos - self._buf_start
            if start >= 0 and start + 8 <= len(self._buf):
                n = unpack(self._buf, start)[0]
                self.pos += 8
                if n > self.size - self.pos:
                    self.pos -= 8
                    self.string_length(what)  # raises with the full message
            else:
                n = self.string_length(what)  # moves pos past the length first
            self.pos += n

    def strings(self, count: int, what: str) -> Iterator[str]:
        for _ in range(count):
            yield self.string(what)


class _Parser:
    def __init__(self, path: Path, handle: BinaryIO, size: int, load_arrays: bool) -> None:
        self.path = path
        self.cur = _Cursor(handle, size)
        self.load_arrays = load_arrays
        self.token_arrays: dict[str, ArrayInfo] = {}

    def parse(self) -> GGUFInfo:
        try:
            return self._parse()
        except _Bad as exc:
            raise InvalidModelFile(f"{self.path}: {exc}") from None

    def _parse(self) -> GGUFInfo:
        cur = self.cur
        if cur.size < 4:
            raise _Bad(f"not a GGUF file (only {_human_bytes(cur.size)} long)")
        magic = cur.take(4, "magic")
        if magic != _MAGIC:
            raise _Bad(f"not a GGUF file (bad magic {magic!r}, expected b'GGUF')")
        version = cur.u32("version")
        if version not in (2, 3):
            if version & 0xFFFF == 0 and (version >> 24) in (2, 3):
                raise _Bad("big-endian GGUF files are not supported; convert the model to little endian")
            if version == 1:
                raise _Bad(
                    "GGUF version 1 is no longer supported; re-convert the model with a current llama.cpp"
                )
            raise _Bad(f"unsupported GGUF version {version} (kaiyuan reads versions 2 and 3)")
        n_tensors = cur.u64("tensor count")
        n_kv = cur.u64("metadata count")
        if n_kv * _MIN_KV_BYTES > cur.remaining:
            raise _Bad(
                f"the header claims {n_kv} metadata keys, but only {_human_bytes(cur.remaining)} follow it "
                f"(the file is truncated or the count lies)"
            )
        if n_tensors * _MIN_TENSOR_INFO_BYTES > cur.remaining:
            raise _Bad(
                f"the header claims {n_tensors} tensors, but only {_human_bytes(cur.remaining)} follow it "
                f"(the file is truncated or the count lies)"
            )

        metadata: dict[str, Any] = {}
        value_types: dict[str, tuple[GGUFValueType, GGUFValueType | None]] = {}
        for index in range(n_kv):
            self._read_kv(index, metadata, value_types)

        alignment = self._alignment(metadata, value_types)
        tensors = self._read_tensor_infos(n_tensors)
        data_offset = cur.pos
        if tensors:
            data_offset += (-data_offset) % alignment
        self._check_tensor_data(tensors, data_offset, alignment)

        info = GGUFInfo(
            path=self.path,
            version=version,
            metadata=metadata,
            value_types=value_types,
            tensors=tensors,
            alignment=alignment,
            data_offset=data_offset,
            file_size=cur.size,
        )
        info.bos_token = self._token_text(metadata, "tokenizer.ggml.bos_token_id")
        info.eos_token = self._token_text(metadata, "tokenizer.ggml.eos_token_id")
        return info

    # -- metadata ---------------------------------------------------------------------------------------------

    def _read_kv(
        self,
        index: int,
        metadata: dict[str, Any],
        value_types: dict[str, tuple[GGUFValueType, GGUFValueType | None]],
    ) -> None:
        cur = self.cur
        key = cur.string(f"metadata key {index}")
        if not key:
            raise _Bad(f"metadata key {index} is empty (at offset {cur.pos})")
        if key in metadata:
            raise _Bad(f"metadata key {index} {key!r} appears twice")
        what = f"metadata key {index} ({key!r})"
        at = cur.pos
        raw_type = cur.u32(what)
        value_type = self._value_type(raw_type, what, at)
        if value_type is GGUFValueType.ARRAY:
            at = cur.pos
            item_type = self._value_type(cur.u32(what), what, at)
            if item_type is GGUFValueType.ARRAY:
                raise _Bad(f"{what}: nested arrays are not supported (at offset {at})")
            metadata[key] = self._read_array(key, item_type, what)
            value_types[key] = (value_type, item_type)
        else:
            metadata[key] = self._read_scalar(value_type, what)
            value_types[key] = (value_type, None)

    @staticmethod
    def _value_type(raw: int, what: str, at: int) -> GGUFValueType:
        try:
            return GGUFValueType(raw)
        except ValueError:
            raise _Bad(f"{what} has unknown value type {raw} (at offset {at})") from None

    def _read_scalar(self, value_type: GGUFValueType, what: str) -> Any:
        if value_type is GGUFValueType.STRING:
            return self.cur.string(what)
        fmt, size = SCALAR_FORMATS[value_type]
        return struct.unpack("<" + fmt, self.cur.take(size, what))[0]

    def _read_array(self, key: str, item_type: GGUFValueType, what: str) -> Any:
        cur = self.cur
        at = cur.pos
        count = cur.u64(what)
        item_size = 8 if item_type is GGUFValueType.STRING else SCALAR_FORMATS[item_type][1]
        if count * item_size > cur.remaining:
            raise _Bad(
                f"truncated: {what} claims an array of {count} {item_type.name.lower()} items at offset {at}, "
                f"but the file ends after {_human_bytes(cur.remaining)}"
            )
        offset = cur.pos
        load = self.load_arrays or count <= INLINE_ARRAY_ITEMS
        if item_type is GGUFValueType.STRING:
            if load:
                return list(cur.strings(count, what))
            cur.skip_strings(count, what)
        else:
            fmt, size = SCALAR_FORMATS[item_type]
            if load:
                return list(struct.unpack(f"<{count}{fmt}", cur.take(count * size, what)))
            cur.skip(count * size, what)
        skipped = ArrayInfo(item_type, count, offset)
        if key == "tokenizer.ggml.tokens":
            self.token_arrays[key] = skipped
        return skipped

    def _alignment(
        self, metadata: dict[str, Any], value_types: dict[str, tuple[GGUFValueType, GGUFValueType | None]]
    ) -> int:
        if "general.alignment" not in metadata:
            return _DEFAULT_ALIGNMENT
        if value_types["general.alignment"][0] is not GGUFValueType.UINT32:
            raise _Bad("general.alignment must be a uint32")
        alignment = int(metadata["general.alignment"])
        if alignment == 0 or alignment & (alignment - 1):
            raise _Bad(f"general.alignment {alignment} is not a power of 2")
        return alignment

    def _token_text(self, metadata: dict[str, Any], id_key: str) -> str | None:
        """The text of a special token, read from the vocabulary (walking a skipped array up to that id)."""
        token_id = metadata.get(id_key)
        tokens = metadata.get("tokenizer.ggml.tokens")
        if not isinstance(token_id, int) or isinstance(token_id, bool) or token_id < 0 or tokens is None:
            return None
        if isinstance(tokens, list):
            text = tokens[token_id] if token_id < len(tokens) else None
            return text if isinstance(text, str) else None
        if not isinstance(tokens, ArrayInfo) or tokens.item_type is not GGUFValueType.STRING:
            return None
        if token_id >= tokens.length:
            return None
        cur = self.cur
        saved = cur.pos
        try:
            cur.pos = tokens.offset
            cur.skip_strings(token_id, "tokenizer.ggml.tokens")
            return cur.string("tokenizer.ggml.tokens")
        finally:
            cur.pos = saved

    # -- tensors ----------------------------------------------------------------------------------------------

    def _read_tensor_infos(self, n_tensors: int) -> list[TensorInfo]:
        cur = self.cur
        tensors: list[TensorInfo] = []
        seen: set[str] = set()
        for index in range(n_tensors):
            name = cur.string(f"tensor {index} name")
            if len(name.encode("utf-8")) >= _MAX_TENSOR_NAME:
                raise _Bad(
                    f"tensor {index} name is {len(name)} characters (the limit is {_MAX_TENSOR_NAME - 1})"
                )
            if name in seen:
                raise _Bad(f"tensor name {name!r} appears twice")
            seen.add(name)
            what = f"tensor {index} ({name!r})"
            n_dims = cur.u32(what)
            if n_dims > _MAX_DIMS:
                raise _Bad(f"{what} has {n_dims} dimensions (at most {_MAX_DIMS})")
            shape = tuple(cur.u64(what) for _ in range(n_dims))
            n_elements = 1
            for dim in shape:
                if dim > _INT64_MAX:
                    raise _Bad(f"{what} has a negative dimension {dim - 2**64}")
                n_elements *= dim
            if n_elements > _INT64_MAX:
                raise _Bad(f"{what} shape {list(shape)} overflows 64-bit element counts")
            type_id = cur.u32(what)
            ggml_type = GGML_TYPES.get(type_id)
            if ggml_type is None:
                raise _Bad(f"{what} has unknown tensor type {type_id} (a newer or corrupt file)")
            row = shape[0] if shape else 1
            if row % ggml_type.block_size:
                raise _Bad(
                    f"{what} rows of {row} elements are not a multiple of the {ggml_type.name} "
                    f"block size {ggml_type.block_size}"
                )
            n_bytes = n_elements // ggml_type.block_size * ggml_type.type_size
            offset = cur.u64(what)
            tensors.append(TensorInfo(name, shape, type_id, offset, n_elements, n_bytes))
        return tensors

    def _check_tensor_data(self, tensors: list[TensorInfo], data_offset: int, alignment: int) -> None:
        size = self.cur.size
        expected = 0  # llama.cpp requires the data of tensor i to follow tensor i-1's (padded) data exactly
        for tensor in tensors:
            if tensor.offset % alignment:
                raise _Bad(
                    f"tensor {tensor.name!r} data offset {tensor.offset} is not aligned to {alignment} bytes"
                )
            if tensor.offset != expected:
                raise _Bad(
                    f"tensor {tensor.name!r} data starts at offset {tensor.offset}, expected {expected} "
                    f"(tensor data must follow the tensor table's order without gaps)"
                )
            expected += tensor.n_bytes + (-tensor.n_bytes) % alignment
            start = data_offset + tensor.offset
            end = start + tensor.n_bytes
            if end > size:
                raise _Bad(
                    f"truncated: tensor {tensor.name!r} data [{start}, {end}) lies past the end of the file "
                    f"({size} bytes)"
                )
