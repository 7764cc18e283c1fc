"""The replicas' gunicorn worker: gthread, refusing other users' local processes,
with a deadline for reading each request.

Who may connect. A replica on a loopback address can be reached by every
process on the machine, whoever runs it. This worker asks the kernel who
owns the other end of each new loopback connection (its socket table, by
netlink as `ss` asks it; /proc/net/tcp where that is not allowed) and closes
it at once unless
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
import struct
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from gunicorn.http import wsgi
from gunicorn.workers.gthread import ThreadWorker

from .config import load_server_settings

log = logging.getLogger(__name__)

# The kernel's socket table, asked for one connection by its four numbers
# (netlink sock_diag, as `ss` asks it): a lookup, not a scan. /proc/net/tcp
# lists the same (with the owner's uid) but whole: 16,000 lines on a busy
# test machine, a quarter of a second to read per connection.
NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
NLM_F_REQUEST = 1
NLMSG_ERROR = 2
NLMSG_HEADER = struct.Struct("=IHHII")  # length, type, flags, sequence, port id
ALL_TCP_STATES = 0xFFFFFFFF
NO_COOKIE = 0xFFFFFFFF
# struct inet_diag_msg: family, state, timer, retrans (4 bytes), inet_diag_sockid
# (48 bytes), expires, rqueue, wqueue (12 bytes), then the owner's uid.
UID_OFFSET = NLMSG_HEADER.size + 4 + 48 + 12
TCP_TABLES = ("/proc/net/tcp", "/proc/net/tcp6")


def _family(ip: str) -> int:
    return socket.AF_INET6 if ":" in ip else socket.AF_INET


def _sock_diag_uid(peer: tuple, local: tuple) -> int | None:
    """The owner of the TCP socket `peer` -> `local`, asked of the kernel (netlink)."""
    family = _family(peer[0])

    def address(ip: str) -> bytes:
        return socket.inet_pton(family, ip).ljust(16, b"\0")

    sockid = (
        struct.pack(">HH", peer[1], local[1])  # the peer's socket: its port is the source
        + address(peer[0])
        + address(local[0])
        + struct.pack("=III", 0, NO_COOKIE, NO_COOKIE)  # any interface, no cookie
    )
    request = struct.pack("=BBBBI", family, socket.IPPROTO_TCP, 0, 0, ALL_TCP_STATES) + sockid
    header = NLMSG_HEADER.pack(
        NLMSG_HEADER.size + len(request), SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST, 1, 0
    )
    with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_SOCK_DIAG) as netlink:
        netlink.settimeout(1.0)
        netlink.sendto(header + request, (0, 0))
        answer = netlink.recv(65536)
    if NLMSG_HEADER.unpack_from(answer)[1] == NLMSG_ERROR or len(answer) < UID_OFFSET + 4:
        return None  # no such socket (gone already)
    return struct.unpack_from("=I", answer, UID_OFFSET)[0]


def _proc_hex(address: tuple) -> str:
    """An (ip, port) as /proc/net/tcp writes it: the IP's 32-bit words in host order."""
    raw = socket.inet_pton(_family(address[0]), address[0])
    words = "".join(
        f"{int.from_bytes(raw[i : i + 4], sys.byteorder):08X}" for i in range(0, len(raw), 4)
    )
    return f"{words}:{address[1]:04X}"


def _proc_uid(peer: tuple, local: tuple) -> int | None:
    """The same from /proc/net/tcp (where netlink is not allowed): one substring search."""
    needle = f" {_proc_hex(peer)} {_proc_hex(local)} "
    for table in TCP_TABLES:
        try:
            text = Path(table).read_text()
        except OSError:
            continue
        at = text.find(needle)
        if at >= 0:
            line = text[at : text.find("\n", at)]
            return int(line.split()[5])  # rem st tx:rx tr:when retrnsmt uid
    return None


def loopback_peer_uid(peer: tuple, local: tuple) -> int | None:
    """The uid owning the other end of a loopback TCP connection from `peer` to
    `local` ((address, port) each), or None when the kernel lists no such socket."""
    try:
        return _sock_diag_uid(peer, local)
    except OSError:
        return _proc_uid(peer, local)


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
