"""Local endpoints that fail the way networks do, for pull tests (127.0.0.1 only, nothing leaves the machine).

``FaultyEndpoint(mode)`` is a raw TCP server whose every connection meets one fault:

- ``reset``: read the request, then close with ``SO_LINGER`` 0 (the client sees a connection reset);
- ``503``: answer ``HTTP/1.1 503 Service Unavailable`` (also to a proxy's ``CONNECT``);
- ``hang``: read the request and never answer (until the endpoint is closed);
- ``http-only``: answer in plain HTTP, so an ``https://`` client fails its TLS handshake.

``refused_url()`` is a URL whose port is bound but not listening: connecting is refused for as long as the
returned socket stays open. ``UNRESOLVABLE`` names a host under ``.invalid`` (RFC 2606), which never resolves.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading

__all__ = ["UNRESOLVABLE", "FaultyEndpoint", "refused_url"]

UNRESOLVABLE = "http://hub.kaiyuan-test.invalid"

_PLAIN = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}"
_503 = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


def refused_url() -> tuple[str, socket.socket]:
    """``(url, socket)``: a loopback port that refuses connections while ``socket`` is open (close it after)."""
    holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    holder.bind(("127.0.0.1", 0))  # bound, never listening: the kernel answers SYN with RST
    return f"http://127.0.0.1:{holder.getsockname()[1]}", holder


class FaultyEndpoint:
    """A TCP server on 127.0.0.1 that fails every connection in one ``mode``; use it as a context manager."""

    def __init__(self, mode: str) -> None:
        if mode not in ("reset", "503", "hang", "http-only"):
            raise ValueError(mode)
        self.mode = mode
        self.connections = 0
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(16)
        self._closed = threading.Event()
        self._open: list[socket.socket] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._sock.getsockname()[1]}"

    @property
    def https_url(self) -> str:
        return f"https://127.0.0.1:{self._sock.getsockname()[1]}"

    def __enter__(self) -> FaultyEndpoint:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._closed.set()
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()
        for conn in self._open:
            with contextlib.suppress(OSError):
                conn.close()
        self._thread.join(timeout=5)

    def _serve(self) -> None:
        while not self._closed.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._fail, args=(conn,), daemon=True).start()

    def _fail(self, conn: socket.socket) -> None:
        with contextlib.suppress(OSError):
            conn.settimeout(5)
            conn.recv(65536)  # the request (for http-only: a TLS ClientHello, answered in plain HTTP)
            if self.mode == "reset":
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                conn.close()
            elif self.mode == "503":
                conn.sendall(_503)
                conn.close()
            elif self.mode == "http-only":
                conn.sendall(_PLAIN)
                conn.close()
            else:
                self._open.append(conn)  # hang: held open, never answered, closed by __exit__
