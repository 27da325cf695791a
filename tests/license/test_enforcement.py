"""Policy enforcement end to end: through the store (import) and the server (serve: 403, /v1/models license)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from kaiyuan.config import Settings
from kaiyuan.errors import LicenseDenied, ModelNotFound
from kaiyuan.store import ModelStore

Factory = Callable[..., Path]


def nc_model(factory: Factory) -> Path:
    return factory(license={"id": "cc-by-nc-4.0"}, name="NC Model")


def test_store_refuses_an_import_the_policy_forbids(kaiyuan_home: Path, tiny_gguf_factory: Factory) -> None:
    store = ModelStore(kaiyuan_home, policy={"commercial": True})
    with pytest.raises(LicenseDenied) as info:
        store.import_gguf(nc_model(tiny_gguf_factory), "nc-model")
    assert info.value.reasons == [
        "commercial use is not permitted by cc-by-nc-4.0 (the policy sets commercial = true)"
    ]
    with pytest.raises(ModelNotFound):
        store.resolve("nc-model")
    allowed = store.import_gguf(tiny_gguf_factory(license={"id": "apache-2.0"}, name="OK"), "ok-model")
    assert allowed.license_id == "apache-2.0"


def test_store_import_in_warn_mode_goes_ahead_with_a_warning(
    kaiyuan_home: Path, tiny_gguf_factory: Factory, caplog: pytest.LogCaptureFixture
) -> None:
    store = ModelStore(kaiyuan_home, policy={"commercial": True, "mode": "warn"})
    with caplog.at_level(logging.WARNING, logger="kaiyuan.license"):
        manifest = store.import_gguf(nc_model(tiny_gguf_factory), "nc-model")
    assert manifest.license_id == "cc-by-nc-4.0"
    assert any("commercial use is not permitted" in r.message for r in caplog.records)


def test_store_import_checks_the_lineage_of_the_file(kaiyuan_home: Path, tiny_gguf_factory: Factory) -> None:
    path = tiny_gguf_factory(
        license={"id": "apache-2.0"},
        base_models=[
            {"name": "Hunyuan 7B Instruct", "repo_url": "https://huggingface.co/tencent/Hunyuan-7B-Instruct"}
        ],
        name="Relabelled Hunyuan",
    )
    store = ModelStore(kaiyuan_home, policy={"territory": "DE"})
    with pytest.raises(LicenseDenied) as info:
        store.import_gguf(path, "relabelled")
    assert any("does not apply in DE" in r for r in info.value.reasons)


def _server(kaiyuan_home: Path, policy: dict[str, Any]) -> tuple[Any, list[str]]:
    server = pytest.importorskip("kaiyuan.server")
    from kaiyuan.model_loader import make_loader

    settings = Settings(home=kaiyuan_home, policy=policy)
    store = ModelStore(kaiyuan_home)  # models were imported before the policy was set
    started: list[str] = []

    def engine_factory(manifest: Any, settings: Settings) -> Any:
        started.append(manifest.full_name)
        raise AssertionError("a denied model must not be loaded")

    def resolve(name: str) -> str:
        return store.resolve(name).full_name

    manager = server.ModelManager(loader=make_loader(settings, store, engine_factory), resolve=resolve)
    runtime = server.Runtime(settings=settings, models=manager, store=store)
    return server.create_app(runtime), started


async def _request(app: Any, method: str, path: str, body: Any = None) -> httpx.Response:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test", timeout=30) as client:
        return await client.request(method, path, json=body)


def test_server_answers_403_and_does_not_load_a_denied_model(
    kaiyuan_home: Path, tiny_gguf_factory: Factory
) -> None:
    ModelStore(kaiyuan_home).import_gguf(nc_model(tiny_gguf_factory), "nc-model")
    app, started = _server(kaiyuan_home, {"commercial": True})
    body = {"model": "nc-model", "messages": [{"role": "user", "content": "hi"}]}
    response = asyncio.run(_request(app, "POST", "/v1/chat/completions", body))
    assert response.status_code == 403
    error = response.json()["error"]
    assert error["code"] == "license_denied"
    assert "cc-by-nc-4.0" in error["message"] or "commercial" in error["message"]
    assert started == []


def test_v1_models_carries_the_license_summary(kaiyuan_home: Path, tiny_gguf_factory: Factory) -> None:
    ModelStore(kaiyuan_home).import_gguf(nc_model(tiny_gguf_factory), "nc-model")
    app, _ = _server(kaiyuan_home, {})
    response = asyncio.run(_request(app, "GET", "/v1/models/nc-model:latest"))
    assert response.status_code == 200
    lic = response.json()["license"]
    assert lic["id"] == "cc-by-nc-4.0"
    assert lic["spdx"] == "CC-BY-NC-4.0"
    assert lic["commercial_use"] == "forbidden"
    assert lic["research_only"] is True
