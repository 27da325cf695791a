"""A local stand-in for the Hugging Face hub, ModelScope and an Ollama registry, for pull tests (127.0.0.1 only).

One threaded ``http.server`` answers the endpoints kaiyuan's hub clients use:

- Hugging Face: ``GET /api/models/{org}/{repo}/tree/{rev}?recursive=true`` and
  ``GET /{org}/{repo}/resolve/{rev}/{path}`` (LFS files redirect to ``http://localhost:{port}/cdn/{sha256}``,
  another host, as the real hub redirects to its CDN);
- ModelScope: ``GET /api/v1/models/{org}/{repo}/repo/files`` and ``GET /api/v1/models/{org}/{repo}/repo?FilePath=``;
- Ollama registry v2: ``GET /v2/{ns}/{name}/manifests/{tag}`` and ``GET /v2/{ns}/{name}/blobs/sha256:{hex}``.

File bodies honour ``Range`` (206 + ``Content-Range``). Faults to inject, keyed by the file's SHA-256 hex (Hugging Face
CDN and registry blobs) or its ModelScope ``FilePath``: ``cut`` (the first N answers send half the body, then drop
the connection), ``corrupt`` (serve other bytes than the listed digest says); ``deny_range`` ignores ``Range``. Every request is recorded (path, headers) so tests can assert what was — and was
not — fetched.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

__all__ = ["HubStandIn", "Seen", "sha256_hex"]


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class Seen:
    method: str
    path: str  # path and query as sent
    headers: dict[str, str]


@dataclass
class _Repo:
    files: dict[str, bytes] = field(default_factory=dict)  # path -> bytes


class HubStandIn:
    """The stand-in server. Add content with ``add_hf`` / ``add_ms`` / ``add_ollama``; read ``url``, ``seen``."""

    def __init__(self) -> None:
        self.hf: dict[str, _Repo] = {}
        self.ms: dict[str, _Repo] = {}
        self.ollama: dict[str, dict[str, Any]] = {}  # "ns/name:tag" -> manifest
        self.blobs: dict[str, bytes] = {}  # sha256 hex -> bytes (registry blobs and the CDN)
        self.cut: dict[str, int] = {}  # sha256 hex or ModelScope FilePath -> how many answers to cut
        self.corrupt: set[str] = set()  # sha256 hex or ModelScope FilePath served with flipped bytes
        self.deny_range = False
        self.seen: list[Seen] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    # -- lifecycle ---------------------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> HubStandIn:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    # -- content -----------------------------------------------------------------------------------------------

    def add_hf(self, repo: str, files: dict[str, bytes]) -> None:
        self.hf.setdefault(repo, _Repo()).files.update(files)
        for data in files.values():
            self.blobs[sha256_hex(data)] = data

    def add_ms(self, repo: str, files: dict[str, bytes]) -> None:
        self.ms.setdefault(repo, _Repo()).files.update(files)

    def add_ollama(self, name: str, tag: str, layers: list[tuple[str, bytes]]) -> dict[str, Any]:
        """``layers``: (media type suffix such as "model", "license", bytes). Returns the manifest."""
        manifest_layers = []
        for kind, data in layers:
            digest = sha256_hex(data)
            self.blobs[digest] = data
            manifest_layers.append(
                {
                    "mediaType": f"application/vnd.ollama.image.{kind}",
                    "digest": f"sha256:{digest}",
                    "size": len(data),
                }
            )
        config = json.dumps({"model_format": "gguf"}).encode()
        self.blobs[sha256_hex(config)] = config
        manifest = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            "config": {
                "mediaType": "application/vnd.docker.container.image.v1+json",
                "digest": f"sha256:{sha256_hex(config)}",
                "size": len(config),
            },
            "layers": manifest_layers,
        }
        self.ollama[f"{name}:{tag}"] = manifest
        return manifest

    def fetched(self, fragment: str) -> list[Seen]:
        """Recorded GETs whose path contains ``fragment``."""
        with self._lock:
            return [s for s in self.seen if fragment in s.path]

    # -- serving -----------------------------------------------------------------------------------------------

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def log_message(self, format: str, *args: Any) -> None:  # quiet
                pass

            def do_GET(self) -> None:
                with hub._lock:
                    hub.seen.append(Seen("GET", self.path, {k.lower(): v for k, v in self.headers.items()}))
                with contextlib.suppress(BrokenPipeError):
                    hub._route(self)

        return Handler

    def _json(self, h: BaseHTTPRequestHandler, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        h.send_response(status)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)

    def _file(self, h: BaseHTTPRequestHandler, key: str, data: bytes) -> None:
        if key in self.corrupt:
            data = bytes(b ^ 0xFF for b in data[:64]) + data[64:]
        start = 0
        rng = h.headers.get("Range")
        if rng and not self.deny_range:
            start = int(rng.removeprefix("bytes=").split("-", 1)[0])
            if start >= len(data):
                h.send_response(416)
                h.send_header("Content-Range", f"bytes */{len(data)}")
                h.send_header("Content-Length", "0")
                h.end_headers()
                return
            h.send_response(206)
            h.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            h.send_response(200)
        body = data[start:]
        h.send_header("Content-Type", "application/octet-stream")
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        with self._lock:
            cut = self.cut.get(key, 0)
            if cut:
                self.cut[key] = cut - 1
        if cut:
            h.wfile.write(body[: max(1, len(body) // 2)])
            h.wfile.flush()
            h.close_connection = True
            h.connection.shutdown(2)  # drop the connection mid-body
            return
        h.wfile.write(body)

    def _route(self, h: BaseHTTPRequestHandler) -> None:
        parts = urlsplit(h.path)
        path = unquote(parts.path)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        segments = path.strip("/").split("/")
        if path.startswith("/cdn/"):
            digest = segments[1]
            if digest in self.blobs:
                return self._file(h, digest, self.blobs[digest])
        elif path.startswith("/api/models/") and "/tree/" in path:
            repo = "/".join(segments[2:4])
            if repo in self.hf:
                return self._json(h, 200, self._hf_tree(repo))
            return self._json(h, 404, {"error": "Repository not found"})
        elif path.startswith("/api/v1/models/") and path.endswith("/repo/files"):
            repo = "/".join(segments[3:5])
            if repo in self.ms:
                files = [
                    {
                        "Name": p.rsplit("/", 1)[-1],
                        "Path": p,
                        "Size": len(d),
                        "Sha256": sha256_hex(d),
                        "Type": "blob",
                        "Revision": query.get("Revision", "master"),
                    }
                    for p, d in self.ms[repo].files.items()
                ]
                return self._json(h, 200, {"Code": 200, "Data": {"Files": files}, "Success": True})
            return self._json(h, 404, {"Code": 10010205001, "Message": "model not exist", "Success": False})
        elif path.startswith("/api/v1/models/") and path.endswith("/repo"):
            repo = "/".join(segments[3:5])
            file_path = query.get("FilePath", "")
            if repo in self.ms and file_path in self.ms[repo].files:
                return self._file(h, file_path, self.ms[repo].files[file_path])
        elif path.startswith("/v2/") and "/manifests/" in path:
            name = "/".join(segments[1:3])
            key = f"{name}:{segments[4]}"
            if key in self.ollama:
                return self._json(h, 200, self.ollama[key])
            return self._json(
                h, 404, {"errors": [{"code": "MANIFEST_UNKNOWN", "message": "manifest unknown"}]}
            )
        elif path.startswith("/v2/") and "/blobs/" in path:
            digest = segments[-1].removeprefix("sha256:")
            if digest in self.blobs:
                return self._file(h, digest, self.blobs[digest])
        elif "/resolve/" in path:
            repo = "/".join(segments[0:2])
            file_path = "/".join(segments[4:])
            if repo in self.hf and file_path in self.hf[repo].files:
                data = self.hf[repo].files[file_path]
                if file_path.endswith(
                    (".gguf", ".safetensors")
                ):  # LFS: redirect to the "CDN" on another host
                    h.send_response(302)
                    h.send_header("Location", f"http://localhost:{self.port}/cdn/{sha256_hex(data)}")
                    h.send_header("Content-Length", "0")
                    h.end_headers()
                    return None
                return self._file(h, file_path, data)
            return self._json(h, 404, {"error": "Entry not found"})
        return self._json(h, 404, {"error": "not found"})

    def _hf_tree(self, repo: str) -> list[dict[str, Any]]:
        out = []
        for path, data in self.hf[repo].files.items():
            entry: dict[str, Any] = {"type": "file", "path": path, "size": len(data)}
            if path.endswith((".gguf", ".safetensors")):  # stored in LFS, as on the hub
                entry["oid"] = hashlib.sha1(data).hexdigest()
                entry["lfs"] = {"oid": sha256_hex(data), "size": len(data), "pointerSize": 134}
            else:
                entry["oid"] = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
            out.append(entry)
        return out


def iter_lines(text: str) -> Iterator[dict[str, Any]]:
    for line in text.splitlines():
        if line.strip():
            yield json.loads(line)
