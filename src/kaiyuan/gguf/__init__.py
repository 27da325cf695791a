"""Reading GGUF model files safely: header, metadata and tensor table, checked against the file's size.

Leaf package: imports nothing of kaiyuan but ``kaiyuan.errors``. See ``read_gguf``.
"""

from __future__ import annotations

from kaiyuan.gguf._reader import ArrayInfo, GGUFInfo, TensorInfo, read_gguf
from kaiyuan.gguf._types import GGUFValueType, file_type_name, ggml_type_name

__all__ = [
    "ArrayInfo",
    "GGUFInfo",
    "GGUFValueType",
    "TensorInfo",
    "file_type_name",
    "ggml_type_name",
    "read_gguf",
]
