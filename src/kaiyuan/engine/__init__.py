"""Token side: the Engine protocol, the llama.cpp engine (continuous batching, prefix cache) and a fake engine.

The engine sees file paths and token ids; it knows nothing of HTTP, chat templates, model names or the store.
"""

from kaiyuan.engine._handle import GenerationHandle
from kaiyuan.engine._protocol import Engine, EngineStats, GenerationRequest, ThinkBudget, TokenEvent

__all__ = ["Engine", "EngineStats", "GenerationHandle", "GenerationRequest", "ThinkBudget", "TokenEvent"]
