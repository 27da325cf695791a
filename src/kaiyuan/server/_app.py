"""The app factory: ``create_app(runtime)`` assembles the FastAPI application from its parts.

Owns the assembly only: error handlers (``_errors``), the API-key and accounting middleware (``_http``), CORS
(off unless ``Settings.cors_origins``), the route modules (kaiyuan's own, the OpenAI skin, and the Ollama skin
``routes_ollama`` when that module exists: it must expose ``router``), and the web UI in ``server/static``
mounted at ``/`` when present. Shutting the app down unloads the models. Must not know llama.cpp.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.staticfiles import StaticFiles
from starlette.routing import Match, Mount
from starlette.types import Scope

from kaiyuan import __version__
from kaiyuan.server import routes_anthropic, routes_native, routes_openai, routes_responses
from kaiyuan.server._errors import install_error_handlers
from kaiyuan.server._http import PROTECTED_PREFIXES, ApiMiddleware
from kaiyuan.server._runtime import Runtime

__all__ = ["STATIC_DIR", "create_app"]

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).with_name("static")

_DESCRIPTION = """\
kaiyuan serves open-weight models behind the OpenAI API (`/v1`), the Ollama API (`/api`) and a web chat (`/`).
Errors use OpenAI's envelope `{"error": {"message", "type", "param", "code"}}`; invalid requests are 400.
kaiyuan-only fields are marked *kaiyuan extension* in their descriptions.
"""


class _WebUIMount(Mount):
    """The web UI at ``/``, which never claims an API path: those keep their JSON 404/405 answers."""

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        path = scope.get("path", "")
        if path.startswith(PROTECTED_PREFIXES) or path in ("/v1", "/api", "/kaiyuan"):
            return Match.NONE, {}
        return super().matches(scope)


def create_app(runtime: Runtime) -> FastAPI:
    """A FastAPI app serving ``runtime``'s models. ``runtime.close()`` runs when the app shuts down."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await routes_responses.shutdown(app)
            runtime.close()

    app = FastAPI(
        title="kaiyuan",
        version=__version__,
        description=_DESCRIPTION,
        openapi_url="/openapi.json",
        docs_url="/docs",
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.runtime = runtime
    install_error_handlers(app)
    app.include_router(routes_native.router)
    app.include_router(routes_openai.router)
    app.include_router(routes_anthropic.router)
    app.include_router(routes_responses.router)
    if importlib.util.find_spec("kaiyuan.server.routes_ollama") is not None:
        ollama = importlib.import_module("kaiyuan.server.routes_ollama")
        app.include_router(ollama.router)

    app.add_middleware(ApiMiddleware, api_key=runtime.settings.api_key, count=runtime.metrics.count_request)
    if runtime.settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=runtime.settings.cors_origins,
            allow_methods=["GET", "POST", "DELETE", "OPTIONS"],
            allow_headers=[
                "Authorization",
                "Content-Type",
                "x-api-key",
                "anthropic-version",
                "anthropic-beta",
            ],
        )
    if (STATIC_DIR / "index.html").is_file():
        app.router.routes.append(
            _WebUIMount("/", app=StaticFiles(directory=STATIC_DIR, html=True), name="web")
        )
    return app
