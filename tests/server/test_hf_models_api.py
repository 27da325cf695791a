"""A Hugging Face-format model in the store, seen through the HTTP APIs the web UI and clients use: /v1/models,
/api/tags and /api/show describe it like a GGUF model (format, family, license, parameters, template)."""

from __future__ import annotations

from pathlib import Path

from kaiyuan.store import ModelStore
from tests.server._support import get, post, run
from tests.store.test_hf_models import TEMPLATE, make_hf_folder


def test_hf_model_is_described_like_a_gguf_one(store_server, kaiyuan_home: Path, tmp_path: Path) -> None:
    ModelStore(kaiyuan_home).import_hf_folder(make_hf_folder(tmp_path / "Tiny"), "tiny-hf")
    app, _ = store_server()

    entry = run(get(app, "/v1/models/tiny-hf:latest")).json()
    assert entry["license"]["id"] == "apache-2.0" and entry["context_length"] == 4096

    tags = run(get(app, "/api/tags")).json()["models"]
    model = next(m for m in tags if m["name"] == "tiny-hf:latest")
    assert model["details"]["format"] == "hf" and model["details"]["family"] == "qwen2"

    shown = run(post(app, "/api/show", {"model": "tiny-hf"}))
    assert shown.status_code == 200, shown.text
    data = shown.json()
    assert data["template"] == TEMPLATE
    assert data["details"]["format"] == "hf"
    assert data["model_info"]["general.architecture"] == "qwen2"
    assert data["model_info"]["general.parameter_count"] == 88
    assert data["model_info"]["qwen2.max_position_embeddings"] == 4096
