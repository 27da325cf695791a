"""The server's one table from errors to HTTP responses, for the OpenAI routes (and a helper for other skins).

Owns: status code, OpenAI envelope ``{"error": {"message", "type", "param", "code"}}`` and headers
(``Retry-After`` for ``Overloaded``, ``WWW-Authenticate`` for 401) for every error a request can meet:

===============================  ======  =====================================================
error                            status  notes
===============================  ======  =====================================================
InvalidRequest (and subclasses)  400     ContextOverflow carries the token counts in its message
request body fails validation     400     OpenAI answers 400 (not FastAPI's 422); ``param`` names the field
body is not JSON                 400     ``param`` null
body nests past MAX_JSON_DEPTH   400     checked by the route classes below, before the body is parsed
AuthenticationError              401     ``WWW-Authenticate: Bearer``
LicenseDenied                    403     the policy's reasons are appended to the message
ModelNotFound                    404     close names are suggested in the message
unknown route / method           404/405
Overloaded                       429/503 ``Retry-After`` (seconds, rounded up)
MissingExtra                     501
other KaiyuanError               its ``http_status`` (EngineError, StoreError …: 500)
anything else                    500     "internal error", logged with its traceback, never sent; answered by
                                         the route classes, so the keep-alive connection stays open
===============================  ======  =====================================================

Statuses come from the ``http_status`` attributes the error tree defines (``errors.py``), so the CLI and the
server read one source. Must not know routes or models.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException

from kaiyuan.errors import (
    AuthenticationError,
    KaiyuanError,
    LicenseDenied,
    ModelNotFound,
    Overloaded,
    PullError,
)
from kaiyuan.protocol import openai as oa
from kaiyuan.server._body_depth import check_body_depth

__all__ = [
    "ApiRoute",
    "SkinRoute",
    "error_body",
    "error_message",
    "error_response",
    "error_status_and_headers",
    "install_error_handlers",
    "validation_message",
    "validation_param",
]

log = logging.getLogger(__name__)

# Parts of a pydantic error location that name a union member rather than a field: the tags of the
# discriminated unions (after an index into these lists) and the member types of plain unions.
_TAGGED_LISTS = {
    "messages": frozenset({"system", "developer", "user", "assistant", "tool", "function"}),
    "content": frozenset({"text", "image_url", "input_audio", "file", "refusal"}),
}
_TYPE_NAMES = frozenset({"str", "int", "float", "bool", "dict", "list", "none", "literal"})


def error_body(message: str, type_: str, param: str | None = None, code: str | None = None) -> bytes:
    body = oa.ErrorResponse(error=oa.ErrorDetail(message=message, type=type_, param=param, code=code))
    return body.model_dump_json().encode()


def error_message(exc: KaiyuanError) -> str:
    """The user-facing text of an error, with close model names or license reasons appended (both API skins)."""
    text = exc.message
    if isinstance(exc, ModelNotFound) and exc.suggestions and "did you mean" not in text:
        text += f" (did you mean: {', '.join(exc.suggestions)}?)"
    if isinstance(exc, LicenseDenied) and exc.reasons:
        text += " Reasons: " + "; ".join(exc.reasons)
    return text


def error_status_and_headers(exc: KaiyuanError) -> tuple[int, dict[str, str]]:
    """The status from the error tree and the headers it implies (Retry-After, WWW-Authenticate); server-side
    failures are logged here, once, whichever skin answers."""
    status = int(exc.http_status)
    headers: dict[str, str] = {}
    if isinstance(exc, Overloaded):
        headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after)))
    if isinstance(exc, AuthenticationError):
        headers["WWW-Authenticate"] = "Bearer"
    if isinstance(exc, PullError):  # a hub or the network failed, not kaiyuan: one line, no traceback
        log.warning("pull failed: %s", exc.message)
    elif status >= 500 and not isinstance(exc, Overloaded):
        log.error("request failed: %s", exc.message, exc_info=exc)
    return status, headers


def error_response(exc: KaiyuanError) -> Response:
    """The HTTP response for an error of kaiyuan's tree (OpenAI envelope)."""
    status, headers = error_status_and_headers(exc)
    body = error_body(error_message(exc), exc.error_type, exc.param, exc.code)
    return Response(body, status_code=status, headers=headers, media_type="application/json")


def validation_param(loc: Sequence[Any]) -> str | None:
    """``("body", "messages", 0, "user", "content")`` → ``"messages[0].content"``."""
    parts: list[str] = []
    field = ""
    after_index = False
    for item in loc:
        if isinstance(item, int):
            if parts:
                parts[-1] += f"[{item}]"
            after_index = True
            continue
        text = str(item)
        tagged = after_index and text in _TAGGED_LISTS.get(field, frozenset())
        after_index = False
        if not parts and text in ("body", "query", "path", "header"):
            continue
        if tagged or text in _TYPE_NAMES or not text.replace("_", "a").isalnum():
            continue  # a union member ("user", "str", "list[str]", "function-after[...]"), not a field
        parts.append(text)
        field = text
    return ".".join(parts) or None


def validation_message(errors: Sequence[Any]) -> tuple[str | None, str]:
    """The param and the message of a failed validation (the first problem, and how many more there are)."""
    first = errors[0] if errors else {}
    param = validation_param(first.get("loc", ()))
    message = str(first.get("msg", "invalid value"))
    if param:
        message = f"{param}: {message}"
    if len(errors) > 1:
        message += f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})"
    return param, message


def _validation_response(exc: RequestValidationError) -> Response:
    errors = list(exc.errors())
    if not errors:
        return Response(
            error_body("invalid request", "invalid_request_error"),
            status_code=400,
            media_type="application/json",
        )
    first = errors[0]
    if first.get("type") == "json_invalid":
        message = f"the request body is not valid JSON: {first.get('ctx', {}).get('error', first.get('msg'))}"
        return Response(
            error_body(message, "invalid_request_error", None, "invalid_json"),
            status_code=400,
            media_type="application/json",
        )
    param, message = validation_message(errors)
    return Response(
        error_body(message, "invalid_request_error", param, "invalid_value"),
        status_code=400,
        media_type="application/json",
    )


def _allowed_methods(request: Request) -> list[str]:
    """Every method some route serves at the request's path (routes may share a path: GET and DELETE)."""
    methods: set[str] = set()
    for route in request.app.router.routes:
        regex = getattr(route, "path_regex", None)
        if regex is not None and regex.match(request.url.path) and getattr(route, "methods", None):
            methods |= set(route.methods)
    return sorted(methods)


class SkinRoute(APIRoute):
    """An ``APIRoute`` that answers every error (validation, FastAPI's own refusals, kaiyuan's tree, anything
    unexpected) in its API skin's envelope instead of the app's OpenAI one. Subclasses set ``envelope`` and may
    word validation errors their skin's way (``validation_text``)."""

    @staticmethod
    def envelope(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
        raise NotImplementedError

    def validation_text(self, exc: RequestValidationError) -> str:
        errors = list(exc.errors())
        if errors and errors[0].get("type") == "json_invalid":
            return "the request body is not valid JSON"
        return validation_message(errors)[1]

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                await check_body_depth(request)
                return await handler(request)
            except RequestValidationError as exc:
                return self.envelope(400, self.validation_text(exc))
            except StarletteHTTPException as exc:  # FastAPI: a body it cannot decode (not UTF-8 …)
                message = str(exc.detail)
                if "parsing the body" in message:
                    message = "the request body is not valid JSON (send UTF-8 JSON)"
                return self.envelope(exc.status_code, message, dict(exc.headers or {}))
            except KaiyuanError as exc:
                status, headers = error_status_and_headers(exc)
                return self.envelope(status, error_message(exc), headers)
            except Exception:
                log.exception("internal error on %s %s", request.method, request.url.path)
                return self.envelope(500, "internal error; the server log has the details")

        return route


class ApiRoute(APIRoute):
    """An ``APIRoute`` for the routes that answer in the app's OpenAI envelope: the body's nesting is bounded
    (a 400), and an unexpected exception is answered here as the 500 envelope. Left to the app-wide handler for
    ``Exception``, it would run in Starlette's ``ServerErrorMiddleware``, which sends the 500 and then re-raises,
    so that uvicorn drops the keep-alive connection and the client's next request on it fails."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                await check_body_depth(request)
                return await handler(request)
            except (KaiyuanError, RequestValidationError, StarletteHTTPException):
                raise  # the app's handlers answer these (in Starlette's ExceptionMiddleware: no re-raise)
            except Exception as exc:
                return _unexpected(request, exc)

        return route


def _unexpected(request: Request, exc: Exception) -> Response:
    log.error("internal error on %s %s", request.method, request.url.path, exc_info=exc)
    return Response(
        error_body("internal error; the server log has the details", "server_error", None, "internal_error"),
        status_code=500,
        media_type="application/json",
    )


def install_error_handlers(app: FastAPI) -> None:
    """Route every error through the table above."""

    async def on_kaiyuan_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, KaiyuanError)
        return error_response(exc)

    async def on_validation_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        return _validation_response(exc)

    async def on_http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        kind = "not_found" if exc.status_code == 404 else "invalid_request_error"
        message = str(exc.detail)
        if exc.status_code == 404:
            message = f"no route {request.method} {request.url.path}; see /openapi.json for the API"
        elif exc.status_code == 405:
            message = f"method {request.method} is not allowed on {request.url.path}"
        headers = dict(exc.headers or {})
        if exc.status_code == 405:  # Starlette names only the first matching route's methods
            headers["Allow"] = ", ".join(_allowed_methods(request))
        return Response(
            error_body(message, kind, None, str(exc.status_code)),
            status_code=exc.status_code,
            headers=headers,
            media_type="application/json",
        )

    async def on_unexpected(request: Request, exc: Exception) -> Response:
        return _unexpected(request, exc)

    app.add_exception_handler(KaiyuanError, on_kaiyuan_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(Exception, on_unexpected)
