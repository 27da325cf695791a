"""Test doubles for code built on kaiyuan: ``FakeEngine``, a deterministic, scripted engine that implements the
``Engine`` protocol without a model (kaiyuan's own chat and server tests run on it).

Kept out of ``kaiyuan.engine`` so the product's engine package exports only what serves models. Imports the
engine layer only; nothing here is used by kaiyuan at run time.
"""

from kaiyuan.testing._fake_engine import FakeEngine

__all__ = ["FakeEngine"]
