"""Schemathesis against /openapi.json, in process on FakeEngine: generated requests (valid and invalid) never get
a 5xx, and every response matches the schema, status codes and content types the API documents."""

from __future__ import annotations

import tempfile

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import positive_data_acceptance

from kaiyuan.config import load_settings
from kaiyuan.server import ModelManager, Runtime, create_app
from kaiyuan.store import ModelStore
from tests.server._support import FakeModels

pytestmark = pytest.mark.slow

# Schemathesis reads the schema when this module is imported, so the app is built here (its own KAIYUAN_HOME).
_models = FakeModels({"fake:latest": (["Hello", " there", "!"], "Qwen-Qwen2.5-7B-Instruct", {"n_ctx": 512})})
# /api/pull reaches hubs: point every hub at a closed loopback port so fuzzed pulls never leave the machine.
_NOWHERE = "http://127.0.0.1:9"
_settings = load_settings(
    env={
        "KAIYUAN_HOME": tempfile.mkdtemp(prefix="kaiyuan-fuzz-"),
        "KAIYUAN_OLLAMA_REGISTRY": _NOWHERE,
        "KAIYUAN_HF_ENDPOINT": _NOWHERE,
        "KAIYUAN_MODELSCOPE_ENDPOINT": _NOWHERE,
    }
)
_runtime = Runtime(
    settings=_settings,
    models=ModelManager(loader=_models.load, resolve=_models.resolve),
    store=ModelStore.from_settings(_settings),
)
# The OpenAI skin and kaiyuan's own routes; the Ollama skin (/api) is outside this module's scope.
schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(_runtime)).include(
    path_regex=r"^/(v1|health|metrics|kaiyuan)(/|$)"
)


@pytest.fixture(scope="module", autouse=True)
def _close_runtime():
    yield
    _runtime.close()


@schema.parametrize()
@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_api_never_fails_and_matches_its_schema(case) -> None:
    # Schema-valid requests may still be refused with a 400 that names the param (a tool_choice naming no tool,
    # an unknown model name), so "positive data is accepted" is the one check left out.
    case.call_and_validate(excluded_checks=[positive_data_acceptance])
