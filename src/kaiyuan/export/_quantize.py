"""Quantizing a GGUF through llama.cpp's own quantizer (``llama_model_quantize``), from F32/F16 to a named type.

Owns the names users type (``Q8_0``, ``Q4_K_M`` ...) and their llama.cpp file-type numbers, and running the C call
in a worker thread so that the main thread stays responsive to Ctrl-C (the caller removes the half file).
Knows nothing of adapters or the store.
"""

from __future__ import annotations

import ctypes
import logging
import threading
from pathlib import Path

from kaiyuan.errors import ExportError

__all__ = ["FILE_TYPES", "QUANT_CHOICES", "file_type_name", "quantize"]

# name -> llama_ftype (llama.h)
FILE_TYPES: dict[str, int] = {
    "F32": 0,
    "F16": 1,
    "Q4_0": 2,
    "Q4_1": 3,
    "Q8_0": 7,
    "Q5_0": 8,
    "Q5_1": 9,
    "Q4_K_M": 15,
    "Q5_K_M": 17,
    "Q6_K": 18,
    "BF16": 32,
}
QUANT_CHOICES = ("Q8_0", "Q4_K_M", "Q4_1", "Q4_0", "Q5_K_M", "Q6_K", "F16", "F32")


def file_type_name(ftype: int | None) -> str | None:
    """``general.file_type`` number -> our name, None when it is not one we can produce."""
    for name, number in FILE_TYPES.items():
        if number == ftype:
            return name
    return None


def quantize(source: Path, dest: Path, quant: str, *, threads: int) -> None:
    """Quantize ``source`` (F32/F16 GGUF) to ``dest`` as ``quant``; raises ExportError when llama.cpp fails."""
    if quant not in FILE_TYPES:
        raise ExportError(f"unknown quantization {quant!r}; choose one of {', '.join(QUANT_CHOICES)}")
    import llama_cpp

    quiet = logging.getLogger("llama-cpp-python")
    if quiet.level == logging.NOTSET:  # llama.cpp prints every tensor otherwise
        quiet.setLevel(logging.ERROR)
    params = llama_cpp.llama_model_quantize_default_params()
    params.nthread = max(1, threads)
    params.ftype = FILE_TYPES[quant]
    params.allow_requantize = False
    result: list[int] = []

    def work() -> None:
        result.append(
            int(
                llama_cpp.llama_model_quantize(str(source).encode(), str(dest).encode(), ctypes.byref(params))
            )
        )

    worker = threading.Thread(target=work, name="kaiyuan-quantize", daemon=True)
    worker.start()
    while worker.is_alive():
        worker.join(0.2)  # short joins keep KeyboardInterrupt deliverable to the main thread
    if not result or result[0] != 0:
        raise ExportError(
            f"llama.cpp could not quantize {source.name} to {quant} (code {result[0] if result else '?'})"
        )
