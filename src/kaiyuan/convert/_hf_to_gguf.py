"""Hugging Face folder → GGUF: a small converter for the dense llama, qwen2 and qwen3 architectures, on gguf-py.

Follows what llama.cpp's ``convert_hf_to_gguf.py`` writes for these models (``LlamaModel``, ``Qwen2Model``,
``Qwen3Model``): the hyper-parameters under ``<arch>.*``, a BPE vocabulary (``tokenizer.ggml.model = gpt2``, the
pre-tokenizer named by ``_pre_tokenizer``, token types, merges, special ids and the chat template through gguf-py's
``SpecialVocab``), tensor names through gguf-py's ``TensorNameMap``, and for llama the RoPE row permutation of
``q_proj``/``k_proj`` (``export.permute_qk_rows``). Tensors are streamed one at a time from the safetensors shards,
so memory stays near one tensor. The output is F32, F16 or BF16 ("auto" keeps the checkpoint's float type);
quantizing is llama.cpp's job afterwards (``export.quantize``).

Must not know: the store, names, license policy (the caller passes ``general.*`` metadata to write).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kaiyuan.convert._pre_tokenizer import pre_tokenizer_hash, pre_tokenizer_name
from kaiyuan.errors import ExportError, InvalidModelFile, MissingExtra
from kaiyuan.export import add_metadata, permute_qk_rows

__all__ = ["GGUF_OUTTYPES", "HF_ARCHITECTURES", "hf_architecture", "hf_to_gguf"]

#: Hugging Face ``architectures[0]`` -> GGUF ``general.architecture`` this converter writes.
HF_ARCHITECTURES: dict[str, str] = {
    "LlamaForCausalLM": "llama",
    "MistralForCausalLM": "llama",
    "Qwen2ForCausalLM": "qwen2",
    "Qwen3ForCausalLM": "qwen3",
}
#: Output float types; "auto" keeps the checkpoint's (bfloat16 -> BF16, float16 -> F16, else F32).
GGUF_OUTTYPES = ("auto", "F32", "F16", "BF16")
_PERMUTED = frozenset({"llama"})
_SKIPPED_SUFFIXES = ("rotary_emb.inv_freq",)  # buffers some old checkpoints saved; llama.cpp computes them

TensorDone = Callable[[int, int, str], None]  # (tensors written, total, GGUF name)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InvalidModelFile(
            f"{path.parent} has no {path.name}; it is not a Hugging Face model folder"
        ) from None
    except (OSError, ValueError) as exc:
        raise InvalidModelFile(f"cannot read {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise InvalidModelFile(f"{path} is not a JSON object")
    return data


def hf_architecture(config: Mapping[str, Any], where: Path | str = "config.json") -> str:
    """The GGUF architecture for a Hugging Face config, or ExportError naming it and the supported ones."""
    names = config.get("architectures") or []
    name = names[0] if isinstance(names, list) and names else config.get("model_type", "?")
    if name not in HF_ARCHITECTURES:
        supported = ", ".join(f"{hf} ({arch})" for hf, arch in HF_ARCHITECTURES.items())
        raise ExportError(
            f"{where}: architecture {name!r} cannot be converted to GGUF by kaiyuan; supported: {supported}"
        )
    return HF_ARCHITECTURES[str(name)]


@dataclass(frozen=True)
class _Shard:
    file: Path
    names: tuple[str, ...]


def _shards(folder: Path) -> list[_Shard]:
    """The safetensors files and their tensor names, in the order of the index (or of the file names)."""
    from safetensors import safe_open

    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise InvalidModelFile(f"{folder} has no *.safetensors weights (only safetensors folders convert)")
    shards = []
    for file in files:
        with safe_open(str(file), framework="pt") as handle:
            shards.append(_Shard(file, tuple(handle.keys())))
    return shards


def _rope_params(config: Mapping[str, Any]) -> dict[str, Any]:
    """transformers 5 keeps rope settings in ``rope_parameters``; older configs in ``rope_theta`` / ``rope_scaling``."""
    params = dict(config.get("rope_parameters") or config.get("rope_scaling") or {})
    params = dict(params.get("full_attention", params))
    if "rope_theta" not in params and config.get("rope_theta") is not None:
        params["rope_theta"] = config["rope_theta"]
    if "rope_type" not in params and params.get("type") is not None:
        params["rope_type"] = params["type"]
    return params


def _write_hparams(writer: Any, arch: str, config: Mapping[str, Any]) -> None:
    import gguf

    def need(key: str) -> Any:
        if config.get(key) is None:
            raise InvalidModelFile(f"config.json has no {key!r}; the model cannot be converted")
        return config[key]

    n_head = int(need("num_attention_heads"))
    writer.add_block_count(int(need("num_hidden_layers")))
    writer.add_context_length(int(need("max_position_embeddings")))
    writer.add_embedding_length(int(need("hidden_size")))
    writer.add_feed_forward_length(int(need("intermediate_size")))
    writer.add_head_count(n_head)
    writer.add_head_count_kv(int(config.get("num_key_value_heads") or n_head))
    writer.add_layer_norm_rms_eps(float(need("rms_norm_eps")))
    rope = _rope_params(config)
    if rope.get("rope_theta") is not None:
        writer.add_rope_freq_base(float(rope["rope_theta"]))
    rope_type, factor = rope.get("rope_type"), rope.get("factor")
    if rope_type == "linear" and factor is not None:
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(float(factor))
    elif rope_type == "yarn" and factor is not None:
        writer.add_rope_scaling_type(gguf.RopeScalingType.YARN)
        writer.add_rope_scaling_factor(float(factor))
        writer.add_rope_scaling_orig_ctx_len(int(rope["original_max_position_embeddings"]))
    elif rope_type not in (None, "default", "llama3"):
        raise ExportError(f"config.json: RoPE scaling {rope_type!r} is not supported by kaiyuan's converter")
    head_dim = config.get("head_dim")
    if head_dim is not None:
        writer.add_key_length(int(head_dim))
        writer.add_value_length(int(head_dim))
    if arch == "llama":
        writer.add_vocab_size(int(need("vocab_size")))
        writer.add_rope_dimension_count(int(head_dim or int(need("hidden_size")) // n_head))


def _llama3_rope_factors(config: Mapping[str, Any]) -> np.ndarray | None:
    """The ``rope_freqs`` tensor llama.cpp needs for Llama 3.1-style RoPE scaling (as convert_hf_to_gguf.py)."""
    rope = _rope_params(config)
    if str(rope.get("rope_type", "")).lower() != "llama3":
        return None
    base = float(rope.get("rope_theta", 10000.0))
    dim = int(config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"])
    factor = float(rope.get("factor", 8.0))
    low, high = float(rope.get("low_freq_factor", 1.0)), float(rope.get("high_freq_factor", 4.0))
    old_context = float(rope.get("original_max_position_embeddings", 8192))
    factors = []
    for i in range(0, dim, 2):
        wavelen = 2 * math.pi * base ** (i / dim)
        if wavelen < old_context / high:
            factors.append(1.0)
        elif wavelen > old_context / low:
            factors.append(factor)
        else:
            smooth = (old_context / wavelen - low) / (high - low)
            factors.append(1 / ((1 - smooth) / factor + smooth))
    return np.array(factors, dtype=np.float32)


def _write_vocab(writer: Any, folder: Path, vocab_size: int) -> None:
    """A BPE vocabulary as llama.cpp's ``_set_vocab_gpt2`` writes it."""
    import gguf
    from transformers import AutoTokenizer

    if not (folder / "tokenizer.json").is_file():
        raise InvalidModelFile(
            f"{folder} has no tokenizer.json; kaiyuan converts byte-level BPE tokenizers only "
            "(SentencePiece tokenizer.model files are not supported)"
        )
    try:
        tokenizer: Any = AutoTokenizer.from_pretrained(str(folder))
    except (OSError, ValueError) as exc:
        raise InvalidModelFile(f"cannot load the tokenizer of {folder}: {exc}") from exc
    pre = pre_tokenizer_name(tokenizer)
    if pre is None:
        raise ExportError(
            f"the tokenizer of {folder} uses a pre-tokenizer llama.cpp does not know "
            f"(hash {pre_tokenizer_hash(tokenizer)[:16]}…); it cannot be converted to GGUF"
        )
    vocab: dict[str, int] = tokenizer.get_vocab()
    if vocab and max(vocab.values()) >= vocab_size:
        vocab_size = max(vocab.values()) + 1
    reverse = {index: text for text, index in vocab.items()}
    added = tokenizer.get_added_vocab()
    decoder = tokenizer.added_tokens_decoder
    tokens: list[str] = []
    types: list[int] = []
    for i in range(vocab_size):
        text = reverse.get(i)
        if text is None:
            tokens.append(f"[PAD{i}]")
            types.append(int(gguf.TokenType.UNUSED))
            continue
        if text in added:
            if not decoder[i].normalized:
                text = tokenizer.decode(tokenizer.encode(text, add_special_tokens=False))
            special = decoder[i].special or (text.startswith("<|") and text.endswith("|>"))
            types.append(int(gguf.TokenType.CONTROL if special else gguf.TokenType.USER_DEFINED))
        else:
            types.append(int(gguf.TokenType.NORMAL))
        tokens.append(text)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    special_vocab = gguf.SpecialVocab(folder, load_merges=True)
    special_vocab.add_to_gguf(writer)
    if special_vocab.chat_template is None:
        template = _chat_template(folder)
        if template is not None:
            writer.add_chat_template(template)


def _chat_template(folder: Path) -> str | None:
    """``chat_template.jinja`` (transformers 5) or the ``chat_template`` of ``tokenizer_config.json``."""
    jinja = folder / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text(encoding="utf-8")
    config_file = folder / "tokenizer_config.json"
    if config_file.is_file():
        template = _read_json(config_file).get("chat_template")
        if isinstance(template, str):
            return template
    return None


def _out_type(requested: str, torch_dtype: Any) -> str:
    if requested != "auto":
        return requested
    import torch

    return {torch.bfloat16: "BF16", torch.float16: "F16"}.get(torch_dtype, "F32")


def _encode(array: np.ndarray, out_type: str) -> tuple[np.ndarray, Any]:
    """(data, raw GGML type or None) for a float32 array; 1-D tensors (norms, biases) stay F32 as llama.cpp keeps them."""
    import gguf

    if array.ndim < 2 or out_type == "F32":
        return array.astype(np.float32), None
    if out_type == "F16":
        return array.astype(np.float16), None
    return gguf.quants.quantize(array, gguf.GGMLQuantizationType.BF16), gguf.GGMLQuantizationType.BF16


def _ftype(out_type: str) -> Any:
    import gguf

    return {
        "F32": gguf.LlamaFileType.ALL_F32,
        "F16": gguf.LlamaFileType.MOSTLY_F16,
        "BF16": gguf.LlamaFileType.MOSTLY_BF16,
    }[out_type]


def hf_to_gguf(
    folder: Path,
    dest: Path,
    *,
    outtype: str = "auto",
    metadata: Mapping[str, str | int | float | bool] | None = None,
    on_tensor: TensorDone | None = None,
) -> Path:
    """Convert the Hugging Face model folder ``folder`` to the GGUF file ``dest``; returns ``dest``.

    ``outtype``: one of ``GGUF_OUTTYPES``. ``metadata``: extra ``general.*`` keys (name, license, base models).
    ``dest`` appears complete or not at all. Raises ExportError for an architecture outside ``HF_ARCHITECTURES``
    (naming it and the supported ones) and InvalidModelFile for a folder without config, tokenizer or weights.
    """
    if outtype not in GGUF_OUTTYPES:
        raise ExportError(f"unknown GGUF type {outtype!r}; choose one of {', '.join(GGUF_OUTTYPES)}")
    try:
        import gguf
        import torch
        from safetensors import safe_open
    except ImportError as exc:
        raise MissingExtra("tune", feature="converting a Hugging Face model to GGUF") from exc
    folder = Path(folder).expanduser().absolute()
    dest = Path(dest).expanduser().absolute()
    config = _read_json(folder / "config.json")
    if isinstance(config.get("text_config"), dict):
        config = {**config, **config["text_config"]}
    arch = hf_architecture(config, folder / "config.json")
    model_arch = next(key for key, value in gguf.MODEL_ARCH_NAMES.items() if value == arch)
    n_layer = int(config.get("num_hidden_layers") or 0)
    name_map = gguf.get_tensor_name_map(model_arch, n_layer)
    shards = _shards(folder)
    n_head = int(config.get("num_attention_heads") or 0)
    n_head_kv = int(config.get("num_key_value_heads") or n_head)

    # Plan every tensor (GGUF name, shape, type) before writing: the header lists them all up front.
    plan: list[tuple[_Shard, str, str]] = []
    first_dtype: Any = None
    for shard in shards:
        with safe_open(str(shard.file), framework="pt") as handle:
            for hf_name in shard.names:
                if hf_name.endswith(_SKIPPED_SUFFIXES):
                    continue
                gguf_name = name_map.get_name(hf_name, try_suffixes=(".weight", ".bias"))
                if gguf_name is None:
                    raise ExportError(
                        f"{shard.file.name}: tensor {hf_name!r} has no GGUF counterpart for {arch}"
                    )
                plan.append((shard, hf_name, gguf_name))
                if first_dtype is None:
                    first_dtype = handle.get_slice(hf_name).get_dtype()
    out_type = _out_type(outtype, {"BF16": torch.bfloat16, "F16": torch.float16}.get(str(first_dtype)))
    rope_factors = _llama3_rope_factors(config) if arch == "llama" else None

    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
    writer = gguf.GGUFWriter(str(tmp), arch)
    try:
        writer.add_type(gguf.GGUFType.MODEL)
        _write_hparams(writer, arch, config)
        writer.add_file_type(_ftype(out_type))
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
        add_metadata(writer, metadata or {})
        _write_vocab(writer, folder, int(config.get("vocab_size") or 0))

        def tensors() -> Iterator[tuple[str, np.ndarray]]:
            if rope_factors is not None:
                yield gguf.TENSOR_NAMES[gguf.MODEL_TENSOR.ROPE_FREQS] + ".weight", rope_factors
            current: tuple[Path, Any] | None = None
            for shard, hf_name, gguf_name in plan:
                if current is None or current[0] != shard.file:
                    current = (shard.file, safe_open(str(shard.file), framework="pt"))
                array = current[1].get_tensor(hf_name).to(torch.float32).numpy()
                if arch in _PERMUTED and hf_name.endswith(("q_proj.weight", "q_proj.bias")):
                    array = permute_qk_rows(array, n_head)
                elif arch in _PERMUTED and hf_name.endswith(("k_proj.weight", "k_proj.bias")):
                    array = permute_qk_rows(array, n_head_kv)
                yield gguf_name, array

        shapes = _shapes(shards, plan, rope_factors)
        for gguf_name, shape in shapes:
            kind = "F32" if len(shape) < 2 else out_type
            item = {"F32": 4, "F16": 2, "BF16": 2}[kind]
            raw = gguf.GGMLQuantizationType.BF16 if kind == "BF16" else None
            np_dtype = {"F32": np.float32, "F16": np.float16, "BF16": np.uint16}[kind]
            writer.add_tensor_info(
                gguf_name, list(shape), np.dtype(np_dtype), int(np.prod(shape)) * item, raw_dtype=raw
            )
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        total = len(shapes)
        for index, (gguf_name, array) in enumerate(tensors()):
            data, _raw = _encode(np.ascontiguousarray(array), out_type)
            writer.write_tensor_data(data)
            if on_tensor is not None:
                on_tensor(index + 1, total, gguf_name)
        writer.close()
        os.replace(tmp, dest)
    except BaseException:
        writer.close()
        tmp.unlink(missing_ok=True)
        raise
    return dest


def _shapes(
    shards: list[_Shard], plan: list[tuple[_Shard, str, str]], rope_factors: np.ndarray | None
) -> list[tuple[str, tuple[int, ...]]]:
    """(GGUF name, numpy shape) of every tensor in writing order, read from the safetensors headers."""
    from safetensors import safe_open

    shapes: list[tuple[str, tuple[int, ...]]] = []
    if rope_factors is not None:
        import gguf

        shapes.append((gguf.TENSOR_NAMES[gguf.MODEL_TENSOR.ROPE_FREQS] + ".weight", rope_factors.shape))
    handles: dict[Path, Any] = {}
    for shard in shards:
        handles[shard.file] = safe_open(str(shard.file), framework="pt")
    for shard, hf_name, gguf_name in plan:
        shapes.append((gguf_name, tuple(int(n) for n in handles[shard.file].get_slice(hf_name).get_shape())))
    return shapes
