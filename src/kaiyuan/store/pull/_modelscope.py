"""ModelScope (魔搭) over its HTTP API, the hub Chinese users rely on for Qwen, DeepSeek, GLM and ERNIE GGUFs.

Owns the endpoints the ``modelscope`` SDK uses, against ``Settings.modelscope_endpoint``:

- ``GET {endpoint}/api/v1/models/{repo}/repo/files?Revision={rev}&Recursive=true`` →
  ``{"Code": 200, "Data": {"Files": [{"Path", "Size", "Sha256", "Type": "blob"|"tree"}]}}``;
- ``GET {endpoint}/api/v1/models/{repo}/repo?Revision={rev}&FilePath={path}``: the file's bytes (``Range`` works).

Public models need no token. Must not know the store or GGUF.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

import httpx

from kaiyuan.errors import ModelNotFound, PullError
from kaiyuan.store.pull._download import check_response, sha256_or_none
from kaiyuan.store.pull._quant import RemoteFile

__all__ = ["DEFAULT_REVISION", "ModelScope"]

DEFAULT_REVISION = "master"
_MAX_TEXT = 1024 * 1024


class ModelScope:
    def __init__(self, client: httpx.Client, endpoint: str) -> None:
        self.client = client
        self.endpoint = endpoint.rstrip("/")

    def where(self, repo: str, revision: str) -> str:
        suffix = "" if revision == DEFAULT_REVISION else f"@{revision}"
        return f"ms://{repo}{suffix}"

    def list_files(self, repo: str, revision: str) -> list[RemoteFile]:
        query = urlencode({"Revision": revision, "Recursive": "true"})
        response = self.client.get(f"{self.endpoint}/api/v1/models/{repo}/repo/files?{query}")
        where = self.where(repo, revision)
        check_response(response, where)
        try:
            body: Any = response.json()
        except ValueError as exc:
            raise PullError(f"{where}: ModelScope's file list is not JSON") from exc
        if not isinstance(body, dict):
            raise PullError(f"{where}: unexpected file list from {self.endpoint}")
        code = body.get("Code")
        if code not in (None, 200) or body.get("Success") is False:
            message = body.get("Message") or f"code {code}"
            if code == 404 or "not exist" in str(message).lower() or "not found" in str(message).lower():
                raise ModelNotFound(f"{where} not found on ModelScope: {message}")
            raise PullError(f"{where}: ModelScope answered: {message}")
        raw_data = body.get("Data")
        data: dict[str, Any] = raw_data if isinstance(raw_data, dict) else {}
        files = []
        for entry in data.get("Files") or []:
            if not isinstance(entry, dict) or entry.get("Type", "blob") != "blob":
                continue
            path = entry.get("Path") or entry.get("Name")
            if not isinstance(path, str):
                continue
            size = entry.get("Size")
            files.append(
                RemoteFile(
                    path=path,
                    size=size if isinstance(size, int) else None,
                    sha256=sha256_or_none(entry.get("Sha256")),
                )
            )
        return files

    def file_url(self, repo: str, revision: str, path: str) -> str:
        query = urlencode({"Revision": revision, "FilePath": path})
        return f"{self.endpoint}/api/v1/models/{repo}/repo?{query}"

    def read_text(self, repo: str, revision: str, path: str) -> str | None:
        response = self.client.get(self.file_url(repo, revision, path))
        if response.status_code == 404:
            return None
        check_response(response, f"{self.where(repo, revision)}/{path}")
        return response.content[:_MAX_TEXT].decode("utf-8", "replace")
