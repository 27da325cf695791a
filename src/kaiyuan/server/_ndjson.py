"""HTTP plumbing of the Ollama skin: NDJSON streams, the ``{"error": "..."}`` envelope, and a route class that
answers every error of an ``/api`` route in that envelope with Ollama's status codes.

Owns: ``NDJSONResponse`` (``application/x-ndjson`` that always runs its ``on_close``, also when the client goes
away, so the generation or pull behind it is cancelled), ``ndjson_lines`` (objects → one JSON line each; an
error mid-stream becomes one ``{"error": ...}`` line, which the ``ollama`` client raises as ``ResponseError``),
``ollama_error_response`` (the error tree → status + envelope, reading the same ``http_status`` attributes as
the OpenAI table in ``_errors.py``) and ``OllamaRoute`` (an ``APIRoute`` whose handler maps errors, including
body validation errors, so the app-wide OpenAI handlers never see them). Must not know models or routes.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Any

from fastapi.exceptions import RequestValidationError
from starlette.responses import Response

from kaiyuan.errors import KaiyuanError
from kaiyuan.server._errors import SkinRoute, error_message, error_status_and_headers, validation_param
from kaiyuan.server._http import ClosingStreamResponse

__all__ = [
    "NDJSONResponse",
    "OllamaRoute",
    "error_line",
    "json_response",
    "ndjson_lines",
    "ollama_error_response",
]

log = logging.getLogger(__name__)

_INTERNAL = "internal error; the server log has the details"


def _body(message: str) -> bytes:
    return json.dumps({"error": message}, ensure_ascii=False).encode()


def error_line(message: str) -> bytes:
    return _body(message) + b"\n"


def ollama_error_response(exc: KaiyuanError) -> Response:
    """``{"error": "..."}`` with the status the error tree assigns (404 unknown model, 400 bad request …)."""
    status, headers = error_status_and_headers(exc)
    return Response(
        _body(error_message(exc)), status_code=status, headers=headers, media_type="application/json"
    )


def _validation_message(exc: RequestValidationError) -> str:
    errors = list(exc.errors())
    if not errors:
        return "invalid request"
    first = errors[0]
    if first.get("type") == "json_invalid":
        return f"invalid JSON in the request body: {first.get('ctx', {}).get('error', first.get('msg'))}"
    loc = tuple(first.get("loc", ()))
    if first.get("type") == "missing" and loc == ("body",):
        return "missing request body"
    param = validation_param(loc)
    message = str(first.get("msg", "invalid value")).removeprefix("Value error, ")
    if param and first.get("type") == "missing":
        return f"{param} is required"
    return f"{param}: {message}" if param else message


def json_response(obj: Any, status_code: int = 200) -> Response:
    """A response object of ``protocol.ollama`` as JSON (empty fields omitted, as Ollama does)."""
    return Response(obj.to_json(), status_code=status_code, media_type="application/json")


class OllamaRoute(SkinRoute):
    """An ``APIRoute`` that answers errors in Ollama's envelope instead of the app's OpenAI one."""

    @staticmethod
    def envelope(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
        return Response(_body(message), status_code=status, headers=headers, media_type="application/json")

    def validation_text(self, exc: RequestValidationError) -> str:
        return _validation_message(exc)


class NDJSONResponse(ClosingStreamResponse):
    """``application/x-ndjson`` (Ollama's streaming), closed exactly once like every generation stream."""

    media_type = "application/x-ndjson"


async def ndjson_lines(objects: AsyncIterator[Any]) -> AsyncIterator[bytes]:
    """One JSON line per object (``to_json()``); an error mid-stream ends it with one ``{"error": ...}`` line."""
    try:
        async for obj in objects:
            yield obj.to_json().encode() + b"\n"
    except KaiyuanError as exc:
        log.warning("stream ended by an error: %s", exc.message)
        yield error_line(error_message(exc))
    except Exception:
        log.exception("stream failed")
        yield error_line(_INTERNAL)
