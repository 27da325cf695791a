"""The routers alive in this process, for the front's ``/metrics`` and ``EngineStats``.

A module of its own because Ray pickles a custom router's module *by value* (``RequestRouterConfig``): a
registry kept in ``_router.py`` would be copied into each unpickled class, and the front would read an empty
copy. The router imports this module at run time, so both sides see this one. Owns only the weak set.
"""

from __future__ import annotations

import threading
import weakref
from typing import Any

__all__ = ["add_router", "routers"]

_routers: weakref.WeakSet[Any] = weakref.WeakSet()
_lock = threading.Lock()


def add_router(router: Any) -> None:
    with _lock:
        _routers.add(router)


def routers(app_name: str | None = None) -> list[Any]:
    """The routers alive in this process (for ``app_name`` when given)."""
    with _lock:
        found = list(_routers)
    return [r for r in found if app_name is None or r.app_name == app_name]
