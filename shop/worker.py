"""The replicas' gunicorn worker: gthread, with a deadline for reading each request.

gunicorn's threaded worker gives a connection a thread as soon as its first
bytes arrive, then reads the rest of the request on a blocking socket with no
time limit: a client that trickles its headers a byte at a time holds that
thread for as long as it likes, and as many such clients as there are threads
(8 with the defaults: 2 workers x 4) stop a replica. Through nginx this
cannot happen (nginx reads a whole request before it sends it on), so the
first defence is that only nginx reaches a replica (the launcher's unix
sockets; Docker's and Kubernetes' networks). This worker bounds what anyone
else can do: a request (line, headers, body) must arrive within
``SHOP_REQUEST_READ_TIMEOUT`` seconds of a thread taking it up, or the
connection is closed. nginx sends a request in one go, in milliseconds.

It also sends no ``Server`` header: a replica need not say what it runs.
"""

from __future__ import annotations

import errno
import socket
import time
from typing import Any

from gunicorn.http import wsgi
from gunicorn.workers.gthread import ThreadWorker

from .config import load_server_settings


class DeadlineSocket:
    """A socket whose reads fail once `arm`'s deadline has passed (writes are untouched).

    A deadline, not a per-read timeout: a client sending a byte just inside
    any per-read timeout would otherwise never run out of time.
    """

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._deadline: float | None = None
        self._seconds = 0.0

    def arm(self, seconds: float) -> None:
        self._seconds = seconds
        self._deadline = time.monotonic() + seconds

    def _expired(self) -> ConnectionResetError:
        # ECONNRESET: gunicorn closes such a connection quietly (a debug line).
        return ConnectionResetError(
            errno.ECONNRESET, f"the request did not arrive within {self._seconds:g} s"
        )

    def recv(self, size: int, *flags: int) -> bytes:
        if self._deadline is None:
            return self._sock.recv(size, *flags)
        remaining = self._deadline - time.monotonic()
        if remaining <= 0:
            raise self._expired()
        previous = self._sock.gettimeout()  # None: blocking; 0.0: non-blocking
        self._sock.settimeout(remaining if previous is None else min(previous, remaining))
        try:
            return self._sock.recv(size, *flags)
        except TimeoutError:
            if time.monotonic() >= self._deadline:
                raise self._expired() from None
            raise
        finally:
            self._sock.settimeout(previous)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


def _without_server_header(default_headers: Any) -> Any:
    def headers(self: wsgi.Response) -> list[str]:
        return [h for h in default_headers(self) if not h.startswith("Server:")]

    return headers


class BoundedThreadWorker(ThreadWorker):
    """gunicorn's gthread worker, with a read deadline per request and no Server header."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.read_timeout = load_server_settings().request_read_timeout

    def init_process(self) -> None:
        # In the worker process only: gunicorn writes its default headers in
        # Response.default_headers, with no setting to leave "Server" out.
        wsgi.Response.default_headers = _without_server_header(wsgi.Response.default_headers)
        super().init_process()

    def handle(self, conn: Any) -> Any:
        """Serve one request of `conn`, its reading bounded from the moment a thread takes it."""
        if not isinstance(conn.sock, DeadlineSocket):
            conn.sock = DeadlineSocket(conn.sock)  # before the first handle builds its parser
        conn.sock.arm(self.read_timeout)
        return super().handle(conn)
