"""The Hugging Face hub over its HTTP API: list a repository's files, read small files, build download URLs.

Owns the endpoints kaiyuan uses (those ``huggingface_hub`` uses too), against ``Settings.hf_endpoint`` (which
honours ``HF_ENDPOINT``, so mirrors such as hf-mirror.com work) with ``HF_TOKEN`` as a bearer token:

- ``GET {endpoint}/api/models/{repo}/tree/{revision}?recursive=true`` (pages via ``Link: rel="next"``): paths,
  sizes, LFS SHA-256 (``lfs.oid``) or the git blob id (``oid``) of small files;
- ``GET {endpoint}/{repo}/resolve/{revision}/{path}``: the file's bytes (LFS files redirect to a CDN; httpx
  drops the token when the redirect leaves the hub's host).

Must not know the store or GGUF: it answers with ``RemoteFile`` objects and text.
"""

from __future__ import annotations

from urllib.parse import quote

import httpx

from kaiyuan.errors import PullError
from kaiyuan.store.pull._download import check_response, sha256_or_none
from kaiyuan.store.pull._quant import RemoteFile

__all__ = ["DEFAULT_REVISION", "HuggingFace"]

DEFAULT_REVISION = "main"
_MAX_TEXT = 1024 * 1024
_ACCESS_HINT = (
    "gated or private repositories need a token: set HF_TOKEN (and accept the model's terms on its page)"
)


class HuggingFace:
    """One hub endpoint, optionally with a token."""

    def __init__(self, client: httpx.Client, endpoint: str, token: str | None = None) -> None:
        self.client = client
        self.endpoint = endpoint.rstrip("/")
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}

    def where(self, repo: str, revision: str) -> str:
        suffix = "" if revision == DEFAULT_REVISION else f"@{revision}"
        return f"hf://{repo}{suffix}"

    def list_files(self, repo: str, revision: str) -> list[RemoteFile]:
        url: str | None = f"{self.endpoint}/api/models/{repo}/tree/{quote(revision, safe='')}?recursive=true"
        files: list[RemoteFile] = []
        while url:
            response = self.client.get(url, headers=self.headers)
            check_response(response, self.where(repo, revision), hint=_ACCESS_HINT)
            try:
                entries = response.json()
            except ValueError as exc:
                raise PullError(f"{self.where(repo, revision)}: the hub's file list is not JSON") from exc
            if not isinstance(entries, list):
                raise PullError(f"{self.where(repo, revision)}: unexpected file list from {self.endpoint}")
            for entry in entries:
                if (
                    not isinstance(entry, dict)
                    or entry.get("type") != "file"
                    or not isinstance(entry.get("path"), str)
                ):
                    continue
                lfs = entry.get("lfs") if isinstance(entry.get("lfs"), dict) else None
                size = entry.get("size")
                sha256 = sha256_or_none(lfs.get("oid")) if lfs else None
                git_sha1 = entry.get("oid") if not lfs and isinstance(entry.get("oid"), str) else None
                files.append(
                    RemoteFile(
                        path=entry["path"],
                        size=size if isinstance(size, int) else None,
                        sha256=sha256,
                        git_sha1=git_sha1,
                    )
                )
            next_link = response.links.get("next", {}).get("url")
            url = str(httpx.URL(url).join(next_link)) if next_link else None
        return files

    def file_url(self, repo: str, revision: str, path: str) -> str:
        return f"{self.endpoint}/{repo}/resolve/{quote(revision, safe='')}/{quote(path)}"

    def read_text(self, repo: str, revision: str, path: str) -> str | None:
        """A small text file (the model card), or None when the repository has none."""
        response = self.client.get(self.file_url(repo, revision, path), headers=self.headers)
        if response.status_code == 404:
            return None
        check_response(response, f"{self.where(repo, revision)}/{path}", hint=_ACCESS_HINT)
        return response.content[:_MAX_TEXT].decode("utf-8", "replace")
