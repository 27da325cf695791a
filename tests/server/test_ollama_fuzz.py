"""Schemathesis against the Ollama skin's part of /openapi.json, in process on FakeEngine and the real store: generated
requests (valid and invalid) never get a 5xx, and every answer matches the documented status codes, content types
and schemas. Pulls go to a local hub stand-in (empty: every reference is a 404), never to the internet."""

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
from tests.store.pull.hub_standin import HubStandIn

pytestmark = pytest.mark.slow

# Schemathesis reads the schema when this module is imported, so the app (and the hub stand-in) are built here.
_hub = HubStandIn().__enter__()
_models = FakeModels({"fake:latest": (["Hello", " there", "!"], "Qwen-Qwen2.5-7B-Instruct", {"n_ctx": 512})})
_settings = load_settings(
    env={
        "KAIYUAN_HOME": tempfile.mkdtemp(prefix="kaiyuan-ollama-fuzz-"),
        "KAIYUAN_OLLAMA_REGISTRY": _hub.url,
        "KAIYUAN_HF_ENDPOINT": _hub.url,
        "KAIYUAN_MODELSCOPE_ENDPOINT": _hub.url,
    }
)
_runtime = Runtime(
    settings=_settings,
    models=ModelManager(loader=_models.load, resolve=_models.resolve),
    store=ModelStore.from_settings(_settings),
)
schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(_runtime)).include(path_regex=r"^/api/")


@pytest.fixture(scope="module", autouse=True)
def _close_runtime():
    yield
    _runtime.close()
    _hub.__exit__(None, None, None)


@schema.parametrize()
@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_ollama_api_never_fails_and_matches_its_schema(case) -> None:
    # Schema-valid requests may still be refused (an unknown model name is a 404), so "positive data is
    # accepted" is the one check left out.
    case.call_and_validate(excluded_checks=[positive_data_acceptance])
