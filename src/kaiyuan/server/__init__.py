"""HTTP server: the app factory, the runtime it serves, and the model manager.

``create_app(runtime)`` builds the FastAPI app (OpenAI API under ``/v1``, Ollama API under ``/api`` when that
skin is present, ``/health``, ``/metrics``, ``/kaiyuan/ps``, the web UI at ``/``). ``Runtime.from_settings``
is the production runtime; tests build one around a ``ModelManager`` whose loader returns fake engines.
"""

from kaiyuan.model_loader import default_engine_factory, make_loader
from kaiyuan.server._app import create_app
from kaiyuan.server._models import LoadedModel, ModelLease, ModelManager
from kaiyuan.server._runtime import Runtime, get_runtime

__all__ = [
    "LoadedModel",
    "ModelLease",
    "ModelManager",
    "Runtime",
    "create_app",
    "default_engine_factory",
    "get_runtime",
    "make_loader",
]
