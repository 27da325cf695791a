"""``hf://ORG/REPO`` of a safetensors repository (no GGUF): the Hugging Face-format model pulled file by file from
the local hub stand-in, verified, and stored as an ``hf`` model; errors and license denials before any weights."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from kaiyuan.config import Settings
from kaiyuan.errors import DigestMismatch, InvalidModelFile, LicenseDenied
from kaiyuan.store.pull import PullEvent, pull_model
from tests.store.pull.conftest import store_of
from tests.store.pull.hub_standin import HubStandIn, sha256_hex
from tests.store.test_hf_models import make_hf_folder

CARD = "---\nlicense: mit\nbase_model: Org/Base\n---\n# Tiny HF\n"


def repo_files(tmp_path: Path, card: str | None = CARD) -> dict[str, bytes]:
    folder = make_hf_folder(tmp_path / "src", license_id=None)
    files = {p.name: p.read_bytes() for p in folder.iterdir()}
    files["pytorch_model.bin"] = b"a pickle the pull must not fetch"
    files[".gitattributes"] = b"*.safetensors filter=lfs"
    if card is not None:
        files["README.md"] = card.encode()
    return files


def test_safetensors_repository_is_pulled_as_a_folder_model(
    hub: HubStandIn, configure: Callable[..., Settings], tmp_path: Path
) -> None:
    files = repo_files(tmp_path)
    hub.add_hf("Org/Tiny-Instruct", files)
    settings = configure()
    store = store_of(settings)
    events: list[PullEvent] = []

    manifest = pull_model("hf://Org/Tiny-Instruct", store, settings, listener=events.append)

    assert manifest.full_name == "tiny-instruct:hf" and manifest.format == "hf"
    assert sorted(manifest.files) == sorted(set(files) - {"pytorch_model.bin", ".gitattributes"})
    assert manifest.source == "hf://Org/Tiny-Instruct"
    assert manifest.organization == "Org"
    assert manifest.license["id"] == "mit" and manifest.license["source"] == "card"
    assert manifest.lineage["base_models"][0]["repo_url"] == "Org/Base"
    folder = store.resolve("tiny-instruct:hf").model_path
    for name in manifest.files:
        assert (folder / name).read_bytes() == files[name]
    assert not hub.fetched("pytorch_model.bin")
    assert not list(store.root.glob(".partial-pull-*"))
    statuses = [e.status for e in events]
    assert "pulling model.safetensors" in statuses and statuses[-1] == "success"
    # pulling the same repository again gives the same model (same files, same digests)
    assert pull_model("hf://Org/Tiny-Instruct", store, settings).digests == manifest.digests


def test_license_is_checked_before_any_weights_are_fetched(
    hub: HubStandIn, configure: Callable[..., Settings], tmp_path: Path
) -> None:
    hub.add_hf("Org/Tiny-Instruct", repo_files(tmp_path))
    settings = configure(policy='deny = ["mit"]')
    with pytest.raises(LicenseDenied):
        pull_model("hf://Org/Tiny-Instruct", store_of(settings), settings)
    assert not hub.fetched("model.safetensors")


def test_repository_without_a_tokenizer_is_refused_before_downloading(
    hub: HubStandIn, configure: Callable[..., Settings], tmp_path: Path
) -> None:
    files = repo_files(tmp_path)
    del files["tokenizer.json"]
    hub.add_hf("Org/Broken", files)
    settings = configure()
    with pytest.raises(InvalidModelFile, match=r"no tokenizer"):
        pull_model("hf://Org/Broken", store_of(settings), settings)
    assert not hub.fetched("model.safetensors")


def test_corrupt_shard_is_rejected_and_nothing_is_listed(
    hub: HubStandIn, configure: Callable[..., Settings], tmp_path: Path
) -> None:
    files = repo_files(tmp_path)
    hub.add_hf("Org/Tiny-Instruct", files)
    hub.corrupt.add(sha256_hex(files["model.safetensors"]))
    settings = configure()
    store = store_of(settings)
    with pytest.raises(DigestMismatch):
        pull_model("hf://Org/Tiny-Instruct", store, settings)
    assert not store.exists("tiny-instruct:hf")


def test_file_names_that_leave_the_folder_are_never_written(
    hub: HubStandIn, configure: Callable[..., Settings], tmp_path: Path
) -> None:
    files = repo_files(tmp_path)
    files["sub/../../escape.json"] = b"{}"  # a '..' part: skipped like any hidden path
    hub.add_hf("Org/Dots", files)
    settings = configure()
    manifest = pull_model("hf://Org/Dots", store_of(settings), settings)
    assert "escape.json" not in " ".join(manifest.files) and not hub.fetched("escape.json")
    assert not (kaiyuan_root(settings) / "escape.json").exists()

    files["/abs.json"] = b"{}"  # an absolute path is refused before anything is fetched
    hub.add_hf("Org/Abs", files)
    with pytest.raises(InvalidModelFile, match="would leave the model folder"):
        pull_model("hf://Org/Abs", store_of(settings), settings)


def kaiyuan_root(settings: Settings) -> Path:
    return store_of(settings).root
