"""Resumable, verified downloads of one file into a ``.partial-pull-*`` file in the store's blob folder.

Owns: the HTTP side of getting a file's bytes: ``Range`` requests that continue a ``.part`` file left by an
interrupted pull (also within one pull: a connection cut mid-body is retried from where it stopped), hashing while
writing (SHA-256, plus the git blob SHA-1 when that is all a hub publishes), checking the size and digest at the
end (a mismatch deletes the file and raises ``DigestMismatch``), throttled progress reports ``(done, total)`` and
cancellation between chunks. HTTP errors become ``PullError`` / ``ModelNotFound`` with what to do next, and
network failures (DNS, refused, reset, TLS, timeout, proxy) one ``PullError`` line naming the host and what to
check (``network_error``).

Must not know hubs, manifests or names: callers give a URL, headers and what the bytes must hash to.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from kaiyuan.errors import DigestMismatch, InvalidRequest, ModelNotFound, PullError
from kaiyuan.store._blobs import normalise_digest

__all__ = [
    "CHUNK",
    "Expected",
    "cancelled",
    "check_response",
    "download",
    "http_client",
    "network_error",
    "network_problem",
    "sha256_or_none",
]

log = logging.getLogger(__name__)

CHUNK = 1024 * 1024
_PROGRESS_EVERY = 0.1  # seconds between progress reports
_RETRIES = 3  # reconnections after a cut connection within one download
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")

Progress = Callable[[int, int], None]  # (bytes done, bytes total; 0 when unknown)


@dataclass(frozen=True)
class Expected:
    """What a download must be: ``sha256`` as ``sha256-<hex>`` (preferred), else a git blob ``git_sha1``; and its
    ``size`` when the hub says it. With neither digest the file is only checked for its size."""

    sha256: str | None = None
    git_sha1: str | None = None
    size: int | None = None


def sha256_or_none(value: Any) -> str | None:
    """``sha256-<hex>`` for a digest a hub published (``<hex>``, ``sha256:<hex>``), None when it is not one."""
    if not isinstance(value, str):
        return None
    try:
        return normalise_digest(value)
    except InvalidRequest:
        return None


def http_client(timeout: float = 30.0) -> httpx.Client:
    """The HTTP client pulls use: redirects followed (httpx drops ``Authorization`` when leaving the host), at most
    ``timeout`` seconds to connect or between two reads (``Settings.pull_timeout``)."""
    return httpx.Client(
        follow_redirects=True,
        timeout=httpx.Timeout(timeout),
        headers={"User-Agent": "kaiyuan-pull"},
    )


_ENDPOINT = "the hub endpoint setting"


def _host(url: httpx.URL) -> str:
    """``host`` or ``host:port`` when the port is not the scheme's default."""
    default = {"http": 80, "https": 443}.get(url.scheme)
    return url.host + (f":{url.port}" if url.port and url.port != default else "")


def _host_of(exc: Exception) -> str:
    try:
        url = exc.request.url if isinstance(exc, httpx.RequestError) else None
    except RuntimeError:  # an httpx error raised before a request was attached
        url = None
    return "the hub" if url is None else _host(url)


def _causes(exc: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in chain:
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


def network_problem(exc: Exception, setting: str = _ENDPOINT) -> str:
    """What went wrong on the network, in words: the host and what to check (``setting`` names the endpoint)."""
    host = _host_of(exc)
    chain = _causes(exc)
    text = " ".join(str(e) for e in chain).lower()
    if isinstance(exc, httpx.ProxyError):
        return f"the proxy failed to reach {host}; check HTTPS_PROXY / HTTP_PROXY / NO_PROXY"
    if isinstance(exc, httpx.TimeoutException):
        return (
            f"{host} did not answer in time; check your network connection and {setting}, "
            "or raise KAIYUAN_PULL_TIMEOUT"
        )
    if any(isinstance(e, socket.gaierror) for e in chain) or any(
        marker in text
        for marker in ("name or service not known", "name resolution", "nodename nor servname", "getaddrinfo")
    ):
        return f"cannot resolve the host name {host}; check your network connection and DNS, or {setting}"
    if any(isinstance(e, ssl.SSLError) for e in chain) or "certificate" in text or "[ssl" in text:
        return (
            f"the TLS handshake with {host} failed; check the system clock, SSL_CERT_FILE, or a proxy that "
            "intercepts HTTPS"
        )
    if any(isinstance(e, ConnectionRefusedError) for e in chain) or "refused" in text:
        return f"{host} refused the connection; check {setting} and that the hub is up"
    if isinstance(exc, httpx.UnsupportedProtocol | httpx.InvalidURL):
        return f"the URL {host} cannot be used ({exc}); check {setting}"
    if isinstance(exc, httpx.ConnectError):
        return f"cannot connect to {host}; check your network connection and {setting}"
    return f"the connection to {host} broke off ({type(exc).__name__}); check your network connection"


def network_error(exc: Exception, what: str, setting: str = _ENDPOINT) -> PullError:
    """One ``PullError`` line for an httpx failure: what could not be fetched, why, and what to check."""
    return PullError(f"{what}: {network_problem(exc, setting)}")


def cancelled() -> PullError:
    return PullError("the pull was cancelled; run it again to resume where it stopped")


def check_response(response: httpx.Response, what: str, *, hint: str = "") -> None:
    """Raise the error a failed hub response means: 404 → ``ModelNotFound``, 401/403 → access, else ``PullError``."""
    status = response.status_code
    if status < 400:
        return
    extra = f"; {hint}" if hint else ""
    if status == 404:
        raise ModelNotFound(f"{what} not found (HTTP 404 from {_host(response.request.url)}){extra}")
    if status in (401, 403):
        raise PullError(f"{what}: access denied (HTTP {status}){extra or '; check your access token'}")
    if status == 429:
        raise PullError(f"{what}: the hub is rate limiting (HTTP 429); wait a moment and pull again")
    if status >= 500:
        raise PullError(
            f"{what}: {_host(response.request.url)} failed to answer (HTTP {status}); the hub is down or overloaded, pull again later"
        )
    raise PullError(f"{what}: HTTP {status} from {_host(response.request.url)}{extra}")


class _Hashers:
    def __init__(self, expected: Expected) -> None:
        self.sha256 = hashlib.sha256()
        self.git = None
        if expected.sha256 is None and expected.git_sha1 is not None and expected.size is not None:
            self.git = hashlib.sha1(usedforsecurity=False)
            self.git.update(f"blob {expected.size}\0".encode())

    def update(self, data: bytes) -> None:
        self.sha256.update(data)
        if self.git is not None:
            self.git.update(data)


def _hash_prefix(path: Path, hashers: _Hashers, cancel: threading.Event | None) -> int:
    done = 0
    with path.open("rb") as handle:
        while chunk := handle.read(8 * CHUNK):
            if cancel is not None and cancel.is_set():
                raise cancelled()
            hashers.update(chunk)
            done += len(chunk)
    return done


def _total_of(response: httpx.Response, start: int) -> int | None:
    if response.status_code == 206:
        match = _CONTENT_RANGE.fullmatch(response.headers.get("content-range", "").strip())
        if match is None:
            raise PullError(
                f"{response.request.url}: a partial answer without a valid Content-Range; pull again"
            )
        if int(match.group(1)) != start:
            raise PullError(
                f"{response.request.url}: asked for bytes from {start}, got them from {match.group(1)}; pull again"
            )
        return int(match.group(3)) if match.group(3) != "*" else None
    length = response.headers.get("content-length")
    return int(length) if length and length.isdigit() else None


def download(
    client: httpx.Client,
    url: str,
    dest: Path,
    *,
    expected: Expected,
    what: str,
    headers: dict[str, str] | None = None,
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
    retries: int = _RETRIES,
    hint: str = "",
    setting: str = _ENDPOINT,
) -> str:
    """Download ``url`` into ``dest``, continuing what ``dest`` already holds; returns the file's ``sha256-<hex>``.

    A ``dest`` longer than ``expected.size`` is started over. On a digest or size mismatch ``dest`` is deleted
    and ``DigestMismatch`` raised. Cancellation (``cancel`` set) leaves ``dest`` for the next pull to resume."""
    hashers = _Hashers(expected)
    done = 0
    if dest.exists():
        if expected.size is not None and dest.stat().st_size > expected.size:
            dest.unlink()
        else:
            done = _hash_prefix(dest, hashers, cancel)
            if done:
                log.info("resuming %s at byte %d", what, done)
    total = expected.size or 0
    last_report = 0.0

    def report(force: bool = False) -> None:
        nonlocal last_report
        now = time.monotonic()
        if progress is not None and (force or now - last_report >= _PROGRESS_EVERY):
            last_report = now
            progress(done, total)

    report(force=True)
    attempts = 0
    while expected.size is None or done < expected.size:
        request_headers: dict[str, Any] = dict(headers or {})
        if done:
            request_headers["Range"] = f"bytes={done}-"
        try:
            with client.stream("GET", url, headers=request_headers) as response:
                if response.status_code == 416 and done:
                    break  # the server has nothing after what we hold: check what we have
                check_response(response, what, hint=hint)
                if response.status_code == 200 and done:
                    log.info("%s: the server ignored the range request; starting over", what)
                    hashers = _Hashers(expected)
                    done = 0
                    dest.unlink(missing_ok=True)
                announced = _total_of(response, done)
                if announced is not None:
                    if expected.size is not None and announced != expected.size:
                        raise PullError(
                            f"{what}: the server announces {announced} bytes, the hub listed {expected.size}; "
                            f"the file changed upstream, pull again"
                        )
                    total = announced
                with dest.open("ab") as handle:
                    for chunk in response.iter_bytes():  # as received: a cut loses nothing already read
                        if cancel is not None and cancel.is_set():
                            raise cancelled()
                        handle.write(chunk)
                        hashers.update(chunk)
                        done += len(chunk)
                        report()
                    handle.flush()
                    os.fsync(handle.fileno())
            if expected.size is None:
                break
            if done < expected.size:
                raise httpx.RemoteProtocolError("the body ended early")
        except (httpx.TransportError, httpx.StreamError) as exc:
            attempts += 1
            if attempts > retries:
                raise PullError(
                    f"{what}: the download stopped at {done} of {total or '?'} bytes: {network_problem(exc, setting)}; "
                    f"run the pull again to resume"
                ) from exc
            log.warning(
                "%s: connection lost at byte %d (%s); resuming (%d/%d)", what, done, exc, attempts, retries
            )
            time.sleep(min(2.0, 0.2 * attempts))
    report(force=True)
    return _verify(dest, hashers, expected, done, what)


def _verify(dest: Path, hashers: _Hashers, expected: Expected, done: int, what: str) -> str:
    digest = "sha256-" + hashers.sha256.hexdigest()
    problem = None
    if expected.size is not None and done != expected.size:
        problem = f"{done} bytes arrived, the hub lists {expected.size}"
    elif expected.sha256 is not None and digest != expected.sha256:
        problem = f"SHA-256 is {digest}, the hub says {expected.sha256}"
    elif hashers.git is not None and hashers.git.hexdigest() != expected.git_sha1:
        problem = f"git blob SHA-1 is {hashers.git.hexdigest()}, the hub says {expected.git_sha1}"
    if problem is not None:
        with contextlib.suppress(OSError):
            dest.unlink()
        raise DigestMismatch(f"{what}: {problem}; the download is corrupt and was deleted, pull again")
    return digest
