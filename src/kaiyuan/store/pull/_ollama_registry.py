"""An Ollama registry (registry.ollama.ai or a compatible one) over the registry v2 protocol.

Owns: fetching a model's manifest (``GET /v2/{namespace}/{name}/manifests/{tag}``, Docker manifest v2 with
Ollama's media types), sorting its layers by meaning, and reading the small layers (system, params, license) by
digest, each verified by SHA-256. The model layer is a GGUF blob
(``GET /v2/{namespace}/{name}/blobs/sha256:<hex>``) the caller downloads resumably.

=========================================  ===========================================================
media type (``application/vnd.ollama.image.*``)  what kaiyuan does with it
=========================================  ===========================================================
``model``                                  the GGUF: downloaded, verified, added as the model's blob
``license``                                text kept in the manifest's license record; identified
``system``                                 the model's default system message
``params``                                 default options (``stop``, ``temperature`` …)
``template``                               ignored (logged): it is a Go template; kaiyuan renders prompts
                                           with the GGUF's own Jinja chat template
``messages``                               ignored (logged)
``projector``                              ignored (logged): kaiyuan has no vision input
``adapter``                                refused: LoRA layers are not supported in pulls
=========================================  ===========================================================

Must not know the store.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from typing import Any

import httpx

from kaiyuan.errors import DigestMismatch, PullError, UnsupportedFeature
from kaiyuan.store.pull._download import check_response, sha256_or_none

__all__ = ["DEFAULT_REGISTRY", "Layer", "OllamaManifest", "OllamaRegistry", "parse_params", "registry_url"]

log = logging.getLogger(__name__)

DEFAULT_REGISTRY = "https://registry.ollama.ai"
_PREFIX = "application/vnd.ollama.image."
_ACCEPT = "application/vnd.docker.distribution.manifest.v2+json"
_MAX_SMALL_LAYER = 4 * 1024 * 1024
_LOOPBACK = ("127.0.0.1", "localhost", "[::1]")


def registry_url(host: str | None, configured: str) -> str:
    """The base URL of a registry named in a reference (``host[:port]``), else the configured one. A named host
    uses the configured URL's scheme when it is the same host, plain HTTP on loopback, HTTPS otherwise."""
    if host is None:
        return configured.rstrip("/")
    parsed = httpx.URL(configured)
    configured_host = parsed.host + (f":{parsed.port}" if parsed.port else "")
    if host in (configured_host, parsed.host):
        return configured.rstrip("/")
    scheme = "http" if host.split(":", 1)[0] in _LOOPBACK or host.startswith("[::1]") else "https"
    return f"{scheme}://{host}"


@dataclass(frozen=True)
class Layer:
    kind: str  # model | license | system | params | template | messages | projector | adapter | …
    digest: str  # sha256-<hex>
    size: int

    @property
    def wire_digest(self) -> str:
        return "sha256:" + self.digest.removeprefix("sha256-")


@dataclass
class OllamaManifest:
    model: Layer
    small: list[Layer] = field(default_factory=list)  # license, system, params
    ignored: list[Layer] = field(default_factory=list)


class OllamaRegistry:
    def __init__(self, client: httpx.Client, base_url: str) -> None:
        self.client = client
        self.base = base_url.rstrip("/")

    def manifest(self, repo: str, tag: str, where: str) -> OllamaManifest:
        response = self.client.get(f"{self.base}/v2/{repo}/manifests/{tag}", headers={"Accept": _ACCEPT})
        check_response(response, where, hint=f"check the name and tag on {self.base}")
        try:
            body: Any = response.json()
        except ValueError as exc:
            raise PullError(f"{where}: the registry's manifest is not JSON") from exc
        layers = body.get("layers") if isinstance(body, dict) else None
        if not isinstance(layers, list):
            raise PullError(f"{where}: the registry's manifest has no layers")
        model: Layer | None = None
        small: list[Layer] = []
        ignored: list[Layer] = []
        for item in layers:
            if not isinstance(item, dict):
                continue
            media = str(item.get("mediaType", ""))
            digest = sha256_or_none(item.get("digest"))
            size = item.get("size")
            if digest is None or not isinstance(size, int) or size < 0:
                raise PullError(f"{where}: a layer of the manifest has no valid digest or size")
            layer = Layer(media.removeprefix(_PREFIX), digest, size)
            if layer.kind == "model":
                if model is not None:
                    raise UnsupportedFeature(
                        f"{where}: a manifest with several model layers is not supported"
                    )
                model = layer
            elif layer.kind == "adapter":
                raise UnsupportedFeature(
                    f"{where}: models with LoRA adapter layers cannot be pulled by kaiyuan"
                )
            elif layer.kind in ("license", "system", "params"):
                small.append(layer)
            else:
                log.info("%s: ignoring layer %s (%s)", where, layer.kind, layer.digest)
                ignored.append(layer)
        if model is None:
            raise PullError(f"{where}: the manifest has no model layer (application/vnd.ollama.image.model)")
        return OllamaManifest(model, small, ignored)

    def blob_url(self, repo: str, layer: Layer) -> str:
        return f"{self.base}/v2/{repo}/blobs/{layer.wire_digest}"

    def read_small(self, repo: str, layer: Layer, where: str) -> str:
        """The text of a small layer, verified by its digest."""
        if layer.size > _MAX_SMALL_LAYER:
            raise PullError(
                f"{where}: the {layer.kind} layer is {layer.size} bytes, too large for a text layer"
            )
        response = self.client.get(self.blob_url(repo, layer))
        check_response(response, f"{where} ({layer.kind} layer)")
        data = response.content
        if "sha256-" + hashlib.sha256(data).hexdigest() != layer.digest:
            raise DigestMismatch(f"{where}: the {layer.kind} layer does not match its digest {layer.digest}")
        return data.decode("utf-8", "replace")


def parse_params(text: str, where: str) -> dict[str, Any]:
    """A ``params`` layer (JSON object of options) as a dict."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise PullError(f"{where}: the params layer is not JSON") from exc
    if not isinstance(value, dict):
        raise PullError(f"{where}: the params layer is not a JSON object")
    return value
