"""Token side: the Engine protocol and the llama.cpp engine (continuous batching, prefix cache).

The engine sees file paths and token ids; it knows nothing of HTTP, chat templates, model names or the store.
``kaiyuan.engine`` imports no llama.cpp code; ``load_engine`` imports it when called.
"""

from kaiyuan.engine._handle import GenerationHandle
from kaiyuan.engine._load import load_engine, load_vllm_engine, vllm_available, vllm_extra
from kaiyuan.engine._protocol import Engine, EngineStats, GenerationRequest, ThinkBudget, TokenEvent
from kaiyuan.engine._shared import EngineShare, SharedEngines, describe_engine

__all__ = [
    "Engine",
    "EngineShare",
    "EngineStats",
    "GenerationHandle",
    "GenerationRequest",
    "SharedEngines",
    "ThinkBudget",
    "TokenEvent",
    "describe_engine",
    "load_engine",
    "load_vllm_engine",
    "vllm_available",
    "vllm_extra",
]
