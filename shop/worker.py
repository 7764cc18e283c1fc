"""The replicas' gunicorn worker: gthread, refusing other users' local processes,
with a deadline for reading each request.

Who may connect. A replica on a loopback address can be reached by every
process on the machine, whoever runs it. This worker asks the kernel who
owns the other end of each new loopback connection (/proc/net/tcp: the peer's
socket, in this network namespace, with its uid) and closes it at once unless
that user is one of ``SHOP_LOCAL_USERS`` (default: the replica's own user,
which is nginx's in the launcher's cluster). So another account on the machine
reaches the shop through nginx only. Peers off loopback (Docker, Kubernetes,
the hosts of ``up --hosts``) are left to the network and to the proxies the
shop trusts (shop/proxy.py). A unix socket per replica would give the same
guarantee, but the watchdog beside nginx aborts the connections to a hung
replica with ``ss -K``, which works on TCP only.

Slow clients. gunicorn's threaded worker gives a connection a thread as soon
as its first bytes arrive, then reads the rest on a blocking socket with no
time limit: a client trickling its headers a byte at a time holds that thread
as long as it likes, and as many such clients as there are threads (8 with the
defaults: 2 workers x 4) stop a replica. Through nginx this cannot happen
(nginx reads a whole request before sending it on); for anyone else who may
connect, a request (line, headers, body) must arrive within
``SHOP_REQUEST_READ_TIMEOUT`` seconds of a thread taking it up, or the
connection is closed. nginx sends a request in one go, in milliseconds.

It also sends no ``Server`` header: a replica need not say what it runs.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import os
import pwd
import socket
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from gunicorn.http import wsgi
from gunicorn.workers.gthread import ThreadWorker

from .config import load_server_settings

log = logging.getLogger(__name__)

TCP_TABLES = ("/proc/net/tcp", "/proc/net/tcp6")


def _proc_address(text: str) -> tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int]:
    """An address of /proc/net/tcp ("0100007F:1F90": the IP in host byte order, words
    of 4 bytes for IPv6; the port big-endian) as (ip, port)."""
    host, port = text.split(":")
    raw = bytes.fromhex(host)
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    ip = ipaddress.ip_address(words)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip, int(port, 16)


def _as_key(address: tuple) -> tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int]:
    ip = ipaddress.ip_address(address[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip, int(address[1])


def loopback_peer_uid(peer: tuple, local: tuple, tables: Iterable[str] = TCP_TABLES) -> int | None:
    """The uid owning the other end of a loopback TCP connection from `peer` to
    `local` ((address, port) each), or None when the kernel lists no such socket."""
    wanted = (_as_key(peer), _as_key(local))
    for table in tables:
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if (_proc_address(fields[1]), _proc_address(fields[2])) == wanted:
                return int(fields[7])
    return None


def local_uids(names: Iterable[str]) -> frozenset[int]:
    """User names or uids as uids; ValueError names one that is neither."""
    uids = set()
    for name in names:
        if name.isdigit():
            uids.add(int(name))
            continue
        try:
            uids.add(pwd.getpwnam(name).pw_uid)
        except KeyError:
            raise ValueError(f"SHOP_LOCAL_USERS: no user {name!r} on this machine") from None
    return frozenset(uids)


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
    """gunicorn's gthread worker: other users' local processes refused, a read
    deadline per request, no Server header."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        settings = load_server_settings()
        self.read_timeout = settings.request_read_timeout
        self.local_uids = local_uids(settings.local_users) or frozenset({os.getuid()})
        self.refused_uids: set[int | None] = set()

    def peer_allowed(self, conn: Any) -> bool:
        """Whether a new connection may be served: from off loopback, or from a local
        process of one of the allowed users."""
        peer = conn.client
        if not isinstance(peer, tuple) or not ipaddress.ip_address(peer[0]).is_loopback:
            return True
        try:
            # This connection's own end (the listener's may be 0.0.0.0).
            uid = loopback_peer_uid(peer, conn.sock.getsockname())
        except OSError:
            return False  # gone already
        if uid in self.local_uids:
            return True
        if uid not in self.refused_uids:  # once per user, not once per connection
            self.refused_uids.add(uid)
            log.warning(
                "refused a connection from a local process of uid %s: only uids %s may "
                "connect (SHOP_LOCAL_USERS); other users reach the shop through nginx",
                uid, sorted(self.local_uids),
            )  # fmt: skip
        return False

    def init_process(self) -> None:
        # In the worker process only: gunicorn writes its default headers in
        # Response.default_headers, with no setting to leave "Server" out.
        wsgi.Response.default_headers = _without_server_header(wsgi.Response.default_headers)
        super().init_process()

    def handle(self, conn: Any) -> Any:
        """Serve one request of `conn`, its reading bounded from the moment a thread takes it."""
        if not isinstance(conn.sock, DeadlineSocket):  # a new connection
            if not self.peer_allowed(conn):
                conn.sock.close()  # at once: no answer, nothing read, no lingering close
                return False
            conn.sock = DeadlineSocket(conn.sock)  # before the first handle builds its parser
        conn.sock.arm(self.read_timeout)
        return super().handle(conn)
