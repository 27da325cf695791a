"""The nesting bound on JSON request bodies, checked before a route parses the body into its wire model.

Owns: reading the body once (Starlette caches it and its parsed JSON, so the route's own parsing reuses both)
and refusing one nested deeper than ``protocol``'s ``MAX_JSON_DEPTH`` with ``InvalidRequest``, which each skin
answers as a 400 in its envelope. Must not know routes or models.
"""

from __future__ import annotations

from starlette.requests import Request

from kaiyuan.protocol._json_depth import check_depth, too_deep

__all__ = ["check_body_depth"]


async def check_body_depth(request: Request) -> None:
    """Raise ``InvalidRequest`` for a JSON body nested deeper than ``MAX_JSON_DEPTH``; anything that is not
    JSON is left to the route, which says what is wrong in its own words."""
    if request.method not in ("POST", "PUT", "PATCH"):
        return
    body = await request.body()
    if body.lstrip()[:1] not in (b"{", b"["):
        return
    try:
        value = await request.json()
    except RecursionError:  # deeper than Python's json module goes (~1000 levels): far past the bound
        raise too_deep("the request body", None) from None
    except ValueError:
        return
    check_depth(value)
