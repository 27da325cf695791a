"""Manifest JSON: round trip, rejection of damaged files, conversion to ModelInfo."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kaiyuan.store import BlobRef, Manifest, parameter_size_label

DIGEST = "sha256-" + "ab" * 32


def _manifest(**changes: object) -> Manifest:
    manifest = Manifest(
        name="demo",
        tag="q4",
        blob=BlobRef(DIGEST, 1234),
        architecture="llama",
        parameters=134_515_008,
        quantization="Q4_1",
        context_length=8192,
        license={"id": "mit", "name": "MIT License", "link": None, "source": "gguf"},
        lineage={
            "relation": "finetune",
            "base_models": [{"name": "Base", "organization": "Org"}],
            "datasets": [],
        },
        adapters=[BlobRef("sha256-" + "cd" * 32, 10)],
        base="base:latest",
        source="import:/x.gguf",
    )
    for key, value in changes.items():
        setattr(manifest, key, value)
    return manifest


def test_json_round_trip() -> None:
    manifest = _manifest()
    again = Manifest.from_json(manifest.to_json())
    assert again == manifest
    assert json.loads(manifest.to_json())["schema_version"] == 1


def test_paths_and_model_info(tmp_path: Path) -> None:
    manifest = _manifest()
    manifest.blobs_dir = tmp_path
    assert manifest.model_path == tmp_path / DIGEST
    assert manifest.adapter_paths == [tmp_path / ("sha256-" + "cd" * 32)]
    info = manifest.to_model_info()
    assert info.name == "demo:q4"
    assert info.size == 1244
    assert info.license.id == "mit" and info.license.name == "MIT License"
    assert info.details["parameter_size"] == "134.5M"
    assert info.details["parent_model"] == "base:latest"
    assert info.created > 0


def test_external_blob_path(tmp_path: Path) -> None:
    outside = tmp_path / "model.gguf"
    manifest = _manifest(blob=BlobRef(DIGEST, 1, str(outside)))
    assert manifest.model_path == outside
    assert Manifest.from_json(manifest.to_json()).blob.path == str(outside)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"schema_version": 2}, "schema_version"),
        ({"blob": {"digest": "md5-1", "size": 1}}, "blob.digest"),
        ({"blob": {"digest": DIGEST, "size": -1}}, "blob.size"),
        ({"parameters": "many"}, "parameters"),
        ({"license": []}, "license"),
        ({"name": ""}, "name and tag"),
        ({"adapters": {}}, "adapters"),
    ],
)
def test_damaged_manifests_are_rejected(change: dict[str, object], expected: str) -> None:
    data = _manifest().to_dict() | change
    with pytest.raises(ValueError, match=expected):
        Manifest.from_dict(data)


@pytest.mark.parametrize(
    ("count", "label"), [(999, "999"), (134_515_008, "134.5M"), (7_241_732_096, "7.2B"), (1_500, "1.5K")]
)
def test_parameter_size_label(count: int, label: str) -> None:
    assert parameter_size_label(count) == label
