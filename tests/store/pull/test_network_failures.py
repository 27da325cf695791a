"""Network failures during a pull, against local endpoints that fail as networks do: an unresolvable host, a refused
port, a reset connection, an HTTP 503, a hub that never answers, a TLS handshake with a plain-HTTP server and a
proxy that refuses. Each ends in one ``PullError`` line that names the host and what to check; nothing is stored.
The CLI prints that line (no traceback, exit 1); ``tests/server/test_ollama_pull_network.py`` checks the server."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from kaiyuan.config import Settings, load_settings
from kaiyuan.errors import PullError
from kaiyuan.store import ModelStore
from kaiyuan.store.pull import pull_model
from tests.store.pull.hub_standin import HubStandIn, sha256_hex
from tests.store.pull.network_faults import UNRESOLVABLE, FaultyEndpoint, refused_url

_ENDPOINTS = ("KAIYUAN_HF_ENDPOINT", "KAIYUAN_MODELSCOPE_ENDPOINT", "KAIYUAN_OLLAMA_REGISTRY")


@pytest.fixture
def point_hubs_at(monkeypatch: pytest.MonkeyPatch, kaiyuan_home: Path) -> Callable[[str], Settings]:
    """``point_hubs_at(url)`` → settings with every hub at ``url`` (also in the environment, for subprocesses),
    a 1-second pull timeout and no proxy from the machine's environment."""

    def point(url: str) -> Settings:
        for name in _ENDPOINTS:
            monkeypatch.setenv(name, url)
        monkeypatch.setenv("KAIYUAN_PULL_TIMEOUT", "1")
        for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
            monkeypatch.delenv(name, raising=False)
        return load_settings()

    return point


@pytest.fixture
def refused() -> Iterator[str]:
    url, holder = refused_url()
    yield url
    holder.close()


def assert_nothing_stored(settings: Settings) -> None:
    store = ModelStore.from_settings(settings)
    assert [m.full_name for m in store.list()] == ["smollm2:135m"]  # only the bundled model
    manifests = settings.models_dir / "manifests"
    assert not [p for p in manifests.rglob("*") if p.is_file() and "smollm2" not in p.parts]


def failed_pull(ref: str, settings: Settings) -> str:
    with pytest.raises(PullError) as caught:
        pull_model(ref, ModelStore.from_settings(settings), settings)
    message = caught.value.message
    assert "\n" not in message and "Traceback" not in message
    return message


REFS = ["hf://Org/Tiny-GGUF:Q4_K_M", "ms://Org/Tiny-GGUF", "tiny:1b"]


@pytest.mark.parametrize("ref", REFS)
def test_unresolvable_host(ref: str, point_hubs_at: Callable[[str], Settings]) -> None:
    settings = point_hubs_at(UNRESOLVABLE)
    message = failed_pull(ref, settings)
    assert message.startswith(f"{ref}: cannot resolve the host name hub.kaiyuan-test.invalid; ")
    assert message.endswith(f"check your network connection and DNS, or {_setting_text(ref)}")
    assert_nothing_stored(settings)


@pytest.mark.parametrize("ref", REFS)
def test_refused_connection(ref: str, refused: str, point_hubs_at: Callable[[str], Settings]) -> None:
    settings = point_hubs_at(refused)
    message = failed_pull(ref, settings)
    host = refused.removeprefix("http://")
    assert (
        message == f"{ref}: {host} refused the connection; check {_setting_text(ref)} and that the hub is up"
    )
    assert_nothing_stored(settings)


def _setting_text(ref: str) -> str:
    return {
        "hf://Org/Tiny-GGUF:Q4_K_M": "HF_ENDPOINT / KAIYUAN_HF_ENDPOINT",
        "ms://Org/Tiny-GGUF": "KAIYUAN_MODELSCOPE_ENDPOINT",
        "tiny:1b": "KAIYUAN_OLLAMA_REGISTRY",
    }[ref]


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("reset", "the connection to {host} broke off"),
        ("503", "{host} failed to answer (HTTP 503); the hub is down or overloaded, pull again later"),
        ("hang", "{host} did not answer in time; check your network connection and {setting}, or raise "),
    ],
)
def test_faulty_hub(mode: str, expected: str, point_hubs_at: Callable[[str], Settings]) -> None:
    with FaultyEndpoint(mode) as endpoint:
        settings = point_hubs_at(endpoint.url)
        for ref in REFS:
            message = failed_pull(ref, settings)
            host = endpoint.url.removeprefix("http://")
            want = expected.format(host=host, setting=_setting_text(ref))
            assert f": {want}" in message, message
            assert_nothing_stored(settings)
        assert endpoint.connections >= len(REFS)


def test_tls_handshake_failure(point_hubs_at: Callable[[str], Settings]) -> None:
    with FaultyEndpoint("http-only") as endpoint:
        settings = point_hubs_at(endpoint.https_url)
        message = failed_pull("hf://Org/Tiny-GGUF", settings)
        host = endpoint.https_url.removeprefix("https://")
        assert message.startswith(f"hf://Org/Tiny-GGUF: the TLS handshake with {host} failed; ")
        assert "SSL_CERT_FILE" in message
        assert_nothing_stored(settings)


def test_proxy_that_refuses(
    point_hubs_at: Callable[[str], Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    with FaultyEndpoint("503") as proxy:
        settings = point_hubs_at("https://hub.kaiyuan-test.invalid")
        monkeypatch.setenv("HTTPS_PROXY", proxy.url)
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        message = failed_pull("hf://Org/Tiny-GGUF", settings)
        assert message.startswith("hf://Org/Tiny-GGUF: the proxy failed to reach hub.kaiyuan-test.invalid; ")
        assert "HTTPS_PROXY" in message and proxy.connections == 1
        assert_nothing_stored(settings)


def test_download_that_keeps_breaking_off(
    point_hubs_at: Callable[[str], Settings], tiny_bytes: bytes
) -> None:
    """The file list arrives, then every try of the download is cut: one line, no model; the partial file stays
    for the next pull to resume."""
    with HubStandIn() as hub:
        hub.add_hf("Org/Tiny-GGUF", {"tiny-Q4_K_M.gguf": tiny_bytes})
        hub.cut[sha256_hex(tiny_bytes)] = 100
        settings = point_hubs_at(hub.url)
        message = failed_pull("hf://Org/Tiny-GGUF", settings)
    assert message.startswith("hf://Org/Tiny-GGUF/tiny-Q4_K_M.gguf: the download stopped at ")
    assert f" of {len(tiny_bytes)} bytes: the connection to localhost:" in message
    assert message.endswith("run the pull again to resume")
    assert_nothing_stored(settings)


def test_cli_prints_one_line_and_exits_1(refused: str, point_hubs_at: Callable[[str], Settings]) -> None:
    point_hubs_at(refused)
    done = subprocess.run(
        [sys.executable, "-m", "kaiyuan", "pull", "hf://Org/Tiny-GGUF"],
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    host = refused.removeprefix("http://")
    assert last == (
        f"Error: hf://Org/Tiny-GGUF: {host} refused the connection; check HF_ENDPOINT / KAIYUAN_HF_ENDPOINT "
        "and that the hub is up"
    )
    assert "Traceback" not in done.stderr and done.stdout == ""
