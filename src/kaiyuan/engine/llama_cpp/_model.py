"""One loaded llama.cpp model: weights, vocabulary (tokenize / pieces / detokenize) and LoRA adapters.

Owns the ``llama_model`` pointer and everything that only needs the model (not a context): the vocabulary
functions are read-only and safe to call from any thread. Wraps llama.cpp failures into ``InvalidModelFile`` /
``EngineError`` once, here. Knows nothing of contexts, batches or requests.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import os
import threading
from collections.abc import Sequence
from typing import Any

import llama_cpp
import llama_cpp._logger as llama_logger
from llama_cpp import llama_cpp as lib

from kaiyuan.errors import EngineError, InvalidModelFile, InvalidRequest

__all__ = ["Model"]

log = logging.getLogger(__name__)

_backend_lock = threading.Lock()
_backend_ready = False


def _init_backend() -> None:
    """Initialise llama.cpp once per process and keep its chatter out of stderr unless asked for."""
    global _backend_ready
    with _backend_lock:
        if _backend_ready:
            return
        if llama_logger.logger.level == logging.NOTSET:  # nobody chose: show llama.cpp errors only
            llama_logger.set_verbose(False)
        lib.llama_backend_init()
        _backend_ready = True


def _check_gguf_header(path: str) -> None:
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
    except OSError as exc:
        raise InvalidModelFile(f"cannot read model file {path}: {exc.strerror}") from exc
    if magic != b"GGUF":
        raise InvalidModelFile(f"{path} is not a GGUF file (it does not start with 'GGUF')")


class Model:
    """A llama.cpp model loaded from a GGUF file, with its vocabulary and any LoRA adapters loaded for it.
    ``vocab_only`` loads the vocabulary alone (no weights): enough to tokenize and detokenize."""

    def __init__(
        self, path: str, *, use_mmap: bool = True, vocab_only: bool = False, gpu_layers: int = 0
    ) -> None:
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise InvalidModelFile(f"model file not found: {path}")
        _check_gguf_header(path)
        _init_backend()
        params = lib.llama_model_default_params()
        params.use_mmap = use_mmap
        params.vocab_only = vocab_only
        # Extra buffer types (weights repacked for the CPU's SIMD, or for AMX) make Q4_0/Q4_K/Q8_0 models faster,
        # but on AMX CPUs the natively built llama.cpp of llama-cpp-python 0.3.36 dies in its AMX path at the first
        # decode (SIGSEGV in ggml_backend_amx_mul_mat, or SIGILL; llama-server the same without --no-repack).
        params.use_extra_bufts = not cpu_has_amx()
        params.n_gpu_layers = gpu_layers
        ptr = lib.llama_model_load_from_file(path.encode(), params)
        if not ptr:
            raise InvalidModelFile(
                f"llama.cpp could not load {path}: the file is damaged or its architecture is not supported "
                f"by llama.cpp {llama_cpp.__version__}"
            )
        self.path = path
        self.ptr = ptr
        self.vocab = lib.llama_model_get_vocab(ptr)
        self.n_vocab = int(lib.llama_vocab_n_tokens(self.vocab))
        self.n_ctx_train = int(lib.llama_model_n_ctx_train(ptr))
        self.n_embd = int(lib.llama_model_n_embd(ptr))
        self._pieces: dict[int, bytes] = {}
        self._adapters: dict[str, Any] = {}
        self._adapter_lock = threading.Lock()
        self._eog = [bool(lib.llama_vocab_is_eog(self.vocab, t)) for t in range(self.n_vocab)]

    # -- vocabulary --------------------------------------------------------------------------------
    def tokenize(self, text: str, *, add_special: bool = False, parse_special: bool = True) -> list[int]:
        data = text.encode("utf-8")
        n_max = len(data) + 8
        buf = (lib.llama_token * n_max)()
        n = lib.llama_tokenize(self.vocab, data, len(data), buf, n_max, add_special, parse_special)
        if n < 0:  # buffer too small: -n is the size needed
            n_max = -n
            buf = (lib.llama_token * n_max)()
            n = lib.llama_tokenize(self.vocab, data, len(data), buf, n_max, add_special, parse_special)
        if n < 0:
            raise EngineError(f"llama.cpp failed to tokenize a text of {len(data)} bytes")
        return list(buf[:n])

    def piece(self, token: int) -> bytes:
        """The bytes a token stands for, special tokens rendered (``<|im_end|>``), cached per token."""
        cached = self._pieces.get(token)
        if cached is not None:
            return cached
        if not 0 <= token < self.n_vocab:
            raise InvalidRequest(f"token id {token} is outside the vocabulary (0..{self.n_vocab - 1})")
        buf = ctypes.create_string_buffer(64)
        n = lib.llama_token_to_piece(self.vocab, token, buf, 64, 0, True)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = lib.llama_token_to_piece(self.vocab, token, buf, -n, 0, True)
        piece = buf.raw[:n]
        self._pieces[token] = piece
        return piece

    def token_text(self, token: int) -> str:
        return self.piece(token).decode("utf-8", errors="replace")

    def detokenize(self, tokens: Sequence[int]) -> str:
        return b"".join(self.piece(int(t)) for t in tokens).decode("utf-8", errors="replace")

    def is_eog(self, token: int) -> bool:
        return 0 <= token < self.n_vocab and self._eog[token]

    @property
    def add_bos(self) -> bool:
        return bool(lib.llama_vocab_get_add_bos(self.vocab))

    def meta(self, key: str) -> str | None:
        buf = ctypes.create_string_buffer(4096)
        n = lib.llama_model_meta_val_str(self.ptr, key.encode(), buf, len(buf))
        return None if n < 0 else buf.value.decode("utf-8", errors="replace")

    # -- contexts ----------------------------------------------------------------------------------
    def new_context(
        self,
        *,
        n_ctx: int,
        n_batch: int,
        n_ubatch: int,
        n_seq_max: int,
        n_threads: int,
        failure: str,
        **fields: Any,
    ) -> Any:
        """A llama.cpp context on this model (the caller frees it with ``llama_free``): sizes, threads for decode
        and batches alike, perf counters off, and any other ``llama_context_params`` ``fields`` (flash_attn_type,
        kv_unified, embeddings, pooling_type …). Raises ``EngineError(failure)`` when llama.cpp refuses."""
        params = lib.llama_context_default_params()
        params.n_ctx = n_ctx
        params.n_batch = n_batch
        params.n_ubatch = n_ubatch
        params.n_seq_max = n_seq_max
        params.n_threads = params.n_threads_batch = n_threads
        params.no_perf = True
        for name, value in fields.items():
            setattr(params, name, value)
        ctx = lib.llama_init_from_model(self.ptr, params)
        if not ctx:
            raise EngineError(failure)
        return ctx

    # -- LoRA adapters -----------------------------------------------------------------------------
    def adapter(self, path: str) -> Any:
        """The loaded adapter for ``path``, loading it on first use (once per model)."""
        key = os.path.realpath(path)
        with self._adapter_lock:
            found = self._adapters.get(key)
            if found is not None:
                return found
            if not os.path.isfile(key):
                raise InvalidModelFile(f"LoRA adapter not found: {path}")
            _check_gguf_header(key)
            ptr = lib.llama_adapter_lora_init(self.ptr, key.encode())
            if not ptr:
                raise InvalidModelFile(
                    f"llama.cpp could not load the LoRA adapter {path}: it is damaged or was made for another "
                    f"base model (its tensor shapes must match {os.path.basename(self.path)})"
                )
            self._adapters[key] = ptr
            return ptr

    def adapter_key(self, path: str) -> str:
        """The canonical name of an adapter file (its real path)."""
        return os.path.realpath(path)

    def close(self) -> None:
        with self._adapter_lock:
            for ptr in self._adapters.values():
                lib.llama_adapter_lora_free(ptr)
            self._adapters.clear()
        if self.ptr:
            lib.llama_model_free(self.ptr)
            self.ptr = None


@functools.cache
def cpu_has_amx() -> bool:
    """Whether this CPU has Intel AMX tiles (Linux: the ``amx_tile`` flag in /proc/cpuinfo)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            return any(line.startswith("flags") and " amx_tile" in line for line in f)
    except OSError:  # not Linux: no AMX code path in a CPU build there
        return False


def gpu_offload_supported() -> bool:
    """Whether this llama.cpp build has a GPU backend (CUDA, Metal, Vulkan …) that can hold layers."""
    _init_backend()
    return bool(lib.llama_supports_gpu_offload())


def default_gpu_layers() -> int:
    """All layers on the GPU when llama.cpp has a GPU backend, else none (llama.cpp caps the count itself)."""
    return ALL_LAYERS if gpu_offload_supported() else 0


ALL_LAYERS = 999  # more than any model has: llama.cpp offloads every layer (its own -ngl convention)
