"""``POST /api/pull`` whose registry cannot be reached: a clean 502 ``{"error": ...}`` naming the host and the
setting to check (the request schemathesis found answered 500 "internal error"), also as the stream's last line."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.server._support import post, run
from tests.store.pull.network_faults import refused_url


@pytest.fixture
def refused(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    url, holder = refused_url()
    for name in ("KAIYUAN_HF_ENDPOINT", "KAIYUAN_MODELSCOPE_ENDPOINT", "KAIYUAN_OLLAMA_REGISTRY"):
        monkeypatch.setenv(name, url)
    yield url
    holder.close()


def test_api_pull_with_an_unreachable_registry(refused: str, store_server) -> None:
    app, _ = store_server()
    host = refused.removeprefix("http://")
    body = {"name": "", "model": "smollm2:135m", "stream": False}  # what schemathesis sent
    whole = run(post(app, "/api/pull", body))
    assert whole.status_code == 502 and whole.headers["content-type"] == "application/json"
    assert whole.json() == {
        "error": f"smollm2:135m: {host} refused the connection; check KAIYUAN_OLLAMA_REGISTRY and that the hub is up"
    }
    streamed = run(post(app, "/api/pull", {"model": "smollm2:135m"}))
    assert streamed.status_code == 200
    last = streamed.text.strip().splitlines()[-1]
    assert last == whole.text
