"""Fixtures for server tests (helpers live in ``_support.py``)."""

from __future__ import annotations

from tests.server._support import fake_server, store_server

__all__ = ["fake_server", "store_server"]
