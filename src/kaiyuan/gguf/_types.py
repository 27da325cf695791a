"""GGUF and ggml type tables: metadata value types, tensor types (block size, bytes per block) and file types.

Owns only constants taken from the GGUF spec and the ggml headers vendored in llama-cpp-python 0.3.36
(``ggml/include/ggml.h``, ``include/llama.h``). Knows nothing of files or the store.
"""

from __future__ import annotations

import enum

__all__ = ["FILE_TYPE_NAMES", "GGML_TYPES", "GGMLType", "GGUFValueType", "file_type_name", "ggml_type_name"]


class GGUFValueType(enum.IntEnum):
    """The type tag of a metadata value (GGUF spec ``gguf_metadata_value_type``)."""

    UINT8 = 0
    INT8 = 1
    UINT16 = 2
    INT16 = 3
    UINT32 = 4
    INT32 = 5
    FLOAT32 = 6
    BOOL = 7
    STRING = 8
    ARRAY = 9
    UINT64 = 10
    INT64 = 11
    FLOAT64 = 12


# struct format and size of each fixed-size value type (little endian).
SCALAR_FORMATS: dict[GGUFValueType, tuple[str, int]] = {
    GGUFValueType.UINT8: ("B", 1),
    GGUFValueType.INT8: ("b", 1),
    GGUFValueType.UINT16: ("H", 2),
    GGUFValueType.INT16: ("h", 2),
    GGUFValueType.UINT32: ("I", 4),
    GGUFValueType.INT32: ("i", 4),
    GGUFValueType.FLOAT32: ("f", 4),
    GGUFValueType.BOOL: ("?", 1),
    GGUFValueType.UINT64: ("Q", 8),
    GGUFValueType.INT64: ("q", 8),
    GGUFValueType.FLOAT64: ("d", 8),
}


class GGMLType:
    """A tensor element type: ``block_size`` elements are stored in ``type_size`` bytes."""

    __slots__ = ("block_size", "name", "type_size")

    def __init__(self, name: str, block_size: int, type_size: int) -> None:
        self.name = name
        self.block_size = block_size
        self.type_size = type_size

    def __repr__(self) -> str:
        return f"GGMLType({self.name!r}, {self.block_size}, {self.type_size})"


# ggml_type id -> (name, elements per block, bytes per block). Ids 4, 5, 31-33 and 36-38 were removed from ggml.
GGML_TYPES: dict[int, GGMLType] = {
    type_id: GGMLType(name, block, size)
    for type_id, (name, block, size) in {
        0: ("F32", 1, 4),
        1: ("F16", 1, 2),
        2: ("Q4_0", 32, 18),
        3: ("Q4_1", 32, 20),
        6: ("Q5_0", 32, 22),
        7: ("Q5_1", 32, 24),
        8: ("Q8_0", 32, 34),
        9: ("Q8_1", 32, 40),
        10: ("Q2_K", 256, 84),
        11: ("Q3_K", 256, 110),
        12: ("Q4_K", 256, 144),
        13: ("Q5_K", 256, 176),
        14: ("Q6_K", 256, 210),
        15: ("Q8_K", 256, 292),
        16: ("IQ2_XXS", 256, 66),
        17: ("IQ2_XS", 256, 74),
        18: ("IQ3_XXS", 256, 98),
        19: ("IQ1_S", 256, 50),
        20: ("IQ4_NL", 32, 18),
        21: ("IQ3_S", 256, 110),
        22: ("IQ2_S", 256, 82),
        23: ("IQ4_XS", 256, 136),
        24: ("I8", 1, 1),
        25: ("I16", 1, 2),
        26: ("I32", 1, 4),
        27: ("I64", 1, 8),
        28: ("F64", 1, 8),
        29: ("IQ1_M", 256, 56),
        30: ("BF16", 1, 2),
        34: ("TQ1_0", 256, 54),
        35: ("TQ2_0", 256, 66),
        39: ("MXFP4", 32, 17),
        40: ("NVFP4", 64, 36),
        41: ("Q1_0", 128, 18),
        42: ("Q2_0", 64, 18),
    }.items()
}

# general.file_type (llama_ftype) -> the name people use for the quantization ("Q4_K_M").
FILE_TYPE_NAMES: dict[int, str] = {
    0: "F32",
    1: "F16",
    2: "Q4_0",
    3: "Q4_1",
    7: "Q8_0",
    8: "Q5_0",
    9: "Q5_1",
    10: "Q2_K",
    11: "Q3_K_S",
    12: "Q3_K_M",
    13: "Q3_K_L",
    14: "Q4_K_S",
    15: "Q4_K_M",
    16: "Q5_K_S",
    17: "Q5_K_M",
    18: "Q6_K",
    19: "IQ2_XXS",
    20: "IQ2_XS",
    21: "Q2_K_S",
    22: "IQ3_XS",
    23: "IQ3_XXS",
    24: "IQ1_S",
    25: "IQ4_NL",
    26: "IQ3_S",
    27: "IQ3_M",
    28: "IQ2_S",
    29: "IQ2_M",
    30: "IQ4_XS",
    31: "IQ1_M",
    32: "BF16",
    36: "TQ1_0",
    37: "TQ2_0",
    38: "MXFP4_MOE",
    39: "NVFP4",
    40: "Q1_0",
    41: "Q2_0",
}

_FILE_TYPE_GUESSED = 1024  # llama.cpp sets this bit when the file type was inferred, not specified


def ggml_type_name(type_id: int) -> str:
    """``"Q4_1"`` for 3; ``"type-99"`` for an id this table does not know."""
    known = GGML_TYPES.get(type_id)
    return known.name if known else f"type-{type_id}"


def file_type_name(file_type: int) -> str | None:
    """The quantization name for a ``general.file_type`` value, or None when the value is unknown."""
    return FILE_TYPE_NAMES.get(file_type & ~_FILE_TYPE_GUESSED)
