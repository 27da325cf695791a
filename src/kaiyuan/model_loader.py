"""Turning a store model into a ready ``ChatModel``: the production loader of the server's ``ModelManager`` and of
``kaiyuan run``. It sits beside the server rather than inside it because loading a model is not HTTP: the CLI
needs it without importing FastAPI. Layer: like server/tune/export (it may import store, license, engine, chat).

Owns the steps of a load, in order: resolve the name in the store, check the license policy for serving, start
the engine (injectable ``engine_factory``; the default is llama.cpp via ``kaiyuan.engine.load_engine`` with the
server's settings), read the chat template and the BOS/EOS texts, and apply the per-model settings of
kaiyuan.toml (``[models."name:tag"] max_reasoning_tokens = …``). Must not know HTTP.

Models over the same model file share one engine (``SharedEngines``): an adapter model is its base's engine with
its LoRA files stamped on each request, so a base and any number of its adapters hold one copy of the weights and
one KV cache, and their requests are batched by one scheduler. The factory is called with the bare base manifest.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from typing import Any

from kaiyuan.chat import ChatModel, ChatTemplate
from kaiyuan.config import Settings
from kaiyuan.engine import Engine, SharedEngines
from kaiyuan.errors import ConfigError, MissingExtra
from kaiyuan.gguf import read_gguf
from kaiyuan.license import enforce_policy
from kaiyuan.store import Manifest, ModelStore, folder_special_tokens, read_chat_template, read_folder_config

__all__ = ["EngineFactory", "choose_engine", "default_engine_factory", "make_loader", "model_settings"]

log = logging.getLogger(__name__)

# (manifest, settings) -> a started engine for that model file
EngineFactory = Callable[[Manifest, Settings], Engine]


def default_engine_factory(manifest: Manifest, settings: Settings) -> Engine:
    """The engine ``settings.engine`` asks for (``choose_engine``), started with the server's settings: llama.cpp
    with its slots, context, threads, queue bound, flash attention and GPU layers, or vLLM with its options."""
    from kaiyuan.engine import load_engine, load_vllm_engine

    if choose_engine(manifest, settings) == "vllm":
        from kaiyuan.engine.vllm import VllmOptions

        options = VllmOptions(
            dtype=settings.dtype,
            gpu_memory_utilization=settings.gpu_memory_utilization,
            tensor_parallel_size=settings.tensor_parallel_size,
            pipeline_parallel_size=settings.pipeline_parallel_size,
            kv_cache_gib=settings.kv_cache_gib,
            cpu_threads=settings.threads,
            enable_lora=_has_adapter_models(manifest, settings),
        )
        return load_vllm_engine(
            str(manifest.model_path),
            n_ctx=settings.max_model_len or settings.ctx,
            n_parallel=settings.parallel,
            max_queue=settings.max_queue,
            options=options,
        )
    return load_engine(
        str(manifest.model_path),
        adapters=[str(p) for p in manifest.adapter_paths],
        n_ctx=settings.ctx,
        n_parallel=settings.parallel,
        n_threads=settings.threads,
        flash_attn=settings.flash_attn,
        max_queue=settings.max_queue,
        gpu_layers=settings.gpu_layers,
    )


def _has_adapter_models(manifest: Manifest, settings: Settings) -> bool:
    """Whether the store holds adapter models made on ``manifest`` (vLLM then starts with LoRA support)."""
    store = ModelStore.from_settings(settings)
    return any(other.base == manifest.full_name for other in store.list())


def choose_engine(manifest: Manifest, settings: Settings) -> str:
    """``llama.cpp`` or ``vllm`` for this model: GGUF files run on llama.cpp, Hugging Face folders on vLLM
    (``auto`` picks by format). A pairing that cannot run is a ``ConfigError`` that says what to do."""
    from kaiyuan.engine import vllm_available, vllm_extra

    is_gguf = manifest.format == "gguf"
    wanted = settings.engine
    if wanted == "auto":
        wanted = "llama.cpp" if is_gguf else "vllm"
    if wanted == "vllm" and is_gguf:
        raise ConfigError(
            f"{manifest.full_name} is a GGUF file; vLLM serves Hugging Face folders: convert it first "
            f"(kaiyuan convert {manifest.full_name} --to hf) or serve it with --engine llama.cpp"
        )
    if wanted == "llama.cpp" and not is_gguf:
        raise ConfigError(
            f"{manifest.full_name} is a Hugging Face folder; llama.cpp serves GGUF files: convert it first "
            f"(kaiyuan convert {manifest.full_name} --to gguf) or serve it with --engine vllm"
        )
    if wanted == "vllm" and not vllm_available():
        raise MissingExtra(vllm_extra(), feature=f"serving {manifest.full_name} on vLLM")
    return wanted


def model_settings(settings: Settings, full_name: str) -> dict[str, Any]:
    """The ``[models."name:tag"]`` table for a model (falling back to ``[models."name"]``), checked."""
    name = full_name.split(":", 1)[0]
    table = settings.models.get(full_name, settings.models.get(name, {}))
    if not isinstance(table, dict):
        raise ConfigError(f'kaiyuan.toml: [models."{full_name}"] must be a table')
    budget = table.get("max_reasoning_tokens")
    if budget is not None and (not isinstance(budget, int) or isinstance(budget, bool) or budget < 0):
        raise ConfigError(
            f'kaiyuan.toml: [models."{full_name}"] max_reasoning_tokens must be a whole number >= 0, got {budget!r}'
        )
    return table


def _special_tokens(manifest: Manifest) -> tuple[str, str]:
    """The BOS/EOS texts templates print (``bos_token``): the GGUF's tokenizer metadata, or a Hugging Face
    folder's ``tokenizer_config.json``."""
    if manifest.is_folder:
        return folder_special_tokens(manifest.model_path)
    info = read_gguf(manifest.model_path)
    return info.bos_token or "", info.eos_token or ""


def _adapters_for_engine(manifest: Manifest, base: Manifest, settings: Settings) -> list[str]:
    """The adapter model's LoRA files in the form its engine loads: the stored GGUF LoRAs for llama.cpp; for vLLM,
    PEFT folders converted from them once (cached under ``adapters/peft/<digest>``; the GGUF stays the record)."""
    paths = [str(p) for p in manifest.adapter_paths]
    if not paths or base.format == "gguf" or choose_engine(base, settings) != "vllm":
        return paths
    from kaiyuan.export import base_shape_of, gguf_lora_to_peft

    shape = base_shape_of(base.model_path, read_folder_config(base.model_path))
    folders = []
    for ref, path in zip(manifest.adapters, manifest.adapter_paths, strict=True):
        folder = settings.adapters_dir / "peft" / ref.digest
        if not folder.is_dir():
            gguf_lora_to_peft(path, shape, folder, base_name=base.full_name)
        folders.append(str(folder))
    return folders


def make_loader(
    settings: Settings, store: ModelStore, engine_factory: EngineFactory = default_engine_factory
) -> Callable[[str], ChatModel]:
    """A ``ModelManager`` loader over ``store``: canonical name → ready ``ChatModel``. Closing a model's engine
    releases its share; the engine itself closes with the last model that uses its file."""
    engines = SharedEngines()

    def load(name: str) -> ChatModel:
        manifest = store.resolve(name)
        enforce_policy(manifest.to_dict(), settings.policy, "serve")  # LicenseDenied (403) when forbidden
        per_model = model_settings(settings, manifest.full_name)
        bos, eos = _special_tokens(manifest)
        template = ChatTemplate(read_chat_template(manifest), bos_token=bos, eos_token=eos)
        info = manifest.to_model_info()
        bare = dataclasses.replace(manifest, adapters=[])
        engine = engines.acquire(
            str(manifest.model_path),
            lambda: engine_factory(bare, settings),
            adapters=_adapters_for_engine(manifest, bare, settings),
        )
        log.info("loaded %s (dialect %s)", manifest.full_name, template.dialect.name)
        return ChatModel(
            manifest.full_name,
            engine,
            template,
            info=info,
            max_reasoning_tokens=per_model.get("max_reasoning_tokens"),
            default_system=manifest.system,
            default_options=dict(manifest.parameters_defaults),
        )

    return load
