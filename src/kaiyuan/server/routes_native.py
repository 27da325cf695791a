"""kaiyuan's own endpoints: ``/health``, ``/metrics`` (Prometheus), ``/kaiyuan/ps`` (what ``kaiyuan ps`` shows)
and ``/kaiyuan/mcp/servers`` (the MCP servers a request may name, for the web chat's tools switch).

Thin routes over the runtime; ``/health`` and ``/metrics`` stay open when an API key is set, the ``/kaiyuan/…``
routes need the key like the API. Must not know llama.cpp.
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field

from kaiyuan import __version__
from kaiyuan.mcp import mcp_settings
from kaiyuan.server._errors import ApiRoute
from kaiyuan.server._metrics import CONTENT_TYPE
from kaiyuan.server._runtime import get_runtime

__all__ = ["router"]

router = APIRouter(tags=["kaiyuan"], route_class=ApiRoute)


class Health(BaseModel):
    status: str = Field(description="'ok' while the server accepts requests")
    version: str
    uptime_seconds: float
    models_loaded: int


class LoadedModelInfo(BaseModel):
    name: str = Field(description="name:tag")
    model_path: str
    context_length: int = Field(description="context window of one sequence slot (tokens)")
    loaded_at: float = Field(description="unix time the model was loaded")
    last_used: float = Field(description="unix time of the last request")
    active_requests: int = Field(description="HTTP requests using the model now")
    running: int = Field(description="sequences decoding now")
    waiting: int = Field(description="requests queued for a slot")
    slots: int
    kv_used_cells: int
    kv_total_cells: int
    size: int = Field(description="model file size (bytes)")


class ProcessList(BaseModel):
    models: list[LoadedModelInfo]


class McpServerInfo(BaseModel):
    name: str = Field(
        description="the server's label in kaiyuan.toml ([mcp.servers.NAME]), for Responses' mcp tools"
    )


class McpServerList(BaseModel):
    servers: list[McpServerInfo]


@router.get("/health", response_model=Health, summary="Liveness (no API key needed)")
async def health(request: Request) -> Any:
    runtime = get_runtime(request)
    return Health(
        status="ok",
        version=__version__,
        uptime_seconds=round(time.time() - runtime.started, 3),
        models_loaded=len(runtime.models.loaded()),
    )


@router.get(
    "/metrics",
    summary="Prometheus metrics (kaiyuan_*)",
    response_class=Response,
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
)
async def metrics(request: Request) -> Response:
    runtime = get_runtime(request)
    return Response(runtime.metrics.render(), media_type=CONTENT_TYPE)


@router.get("/kaiyuan/ps", response_model=ProcessList, summary="Models loaded now (kaiyuan ps)")
async def ps(request: Request) -> JSONResponse:
    runtime = get_runtime(request)
    return JSONResponse({"models": runtime.models.describe()})


@router.get(
    "/kaiyuan/mcp/servers",
    response_model=McpServerList,
    summary="The MCP servers configured in kaiyuan.toml, by name (never their command, URL or headers)",
)
async def mcp_servers(request: Request) -> McpServerList:
    # names only: a command line, a URL or headers can hold secrets, and a client only ever names a server
    settings = mcp_settings(get_runtime(request).settings.mcp)
    return McpServerList(servers=[McpServerInfo(name=name) for name in sorted(settings.servers)])
