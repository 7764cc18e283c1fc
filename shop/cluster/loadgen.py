"""The load generator the demo and the cluster tests share: simulated shoppers.

`LoadGenerator` runs `SimulatedShopper`s, each a thread with its own
`requests.Session` (its own cookie, so its own server-side session) that
registers, logs in, then mixes reads with cart adds through nginx. Every POST
carries an Idempotency-Key, so a request nginx retried on another replica is
applied once. A shopper remembers exactly which adds the shop acknowledged
(201); at the end its cart must equal their sum: nothing lost, nothing doubled.
The load is bounded in requests and time.

A shopper also checks as it goes: every cart it reads must hold at least what
was acknowledged, and `/api/me` must still know it. When the shop has
forgotten (the replica that kept the session in its memory died: `up --state
memory`), it counts a lost cart or a forced re-login, logs in again and goes
on from what the shop now shows, as a person would; both make the report
unclean, so the shared-store clusters of the tests still fail on any loss.

An add answered 503 (the store failing over) may or may not have been applied,
so the shopper does what a client should: it retries that add with the same
Idempotency-Key until it gets an answer, and only then counts it. Every
failure is also logged with its time, duration and status, so a test can tell
fast 503s inside a failover window from anything else; and every request, good
or bad, is a `timeline.Sample` (start, latency, ok, served by), which is what
the timeline chart draws and how the tests find the slowest request.

About 430 lines on purpose: the shopper and the generator are one idea
(a load whose every acknowledged write is checked at the end), read together.
"""

from __future__ import annotations

import contextlib
import random
import socket
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection

from shop.cart import MAX_QTY  # the shop's per-line limit: adds stay under it

from .timeline import Sample, merge

# Connect fast (loopback), but give a request time to be retried by nginx on
# another replica (nginx bounds its own retries to 10 s).
TIMEOUT = (3.05, 15.0)

# TCP keepalive on every shopper connection, probed after 1 s of silence (a
# request waiting for its answer is silent), then every second. A load
# balancer that answers late still acknowledges the probes, so nothing changes
# for it. One that died with the request in its hands never answers, and its
# peer has taken the virtual IP over: the probe reaches the peer, which knows
# no such connection and resets it. The shopper learns in 1-2 s instead of at
# its read timeout, and resends on a fresh connection (see `_send`). A browser
# probes too, but only after 45 s (Chrome): it would show a spinner that long.
KEEPALIVE_OPTIONS = [
    (socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1),
    (socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 1),
    (socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 1),
    (socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 5),
]


class KeepAliveAdapter(HTTPAdapter):
    """requests' adapter with TCP keepalive probes on its connections."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs["socket_options"] = [*HTTPConnection.default_socket_options, *KEEPALIVE_OPTIONS]
        super().init_poolmanager(*args, **kwargs)


PENDING_RETRIES = 40  # at most this many retries of unsettled adds when verifying
PENDING_PAUSE = 0.25  # seconds between those retries


class RequestFailed(RuntimeError):
    """A request got no answer or an unexpected status."""


@dataclass(frozen=True)
class FailureRecord:
    """One failed request: when it started (time.monotonic()), how long it took, its status."""

    at: float
    seconds: float
    status: int | None  # None: no HTTP answer at all (timeout, refused)
    what: str


@dataclass
class SimulatedShopper:
    """One simulated user. `request` records every outcome; it never raises on HTTP errors."""

    base_url: str
    name: str = field(default_factory=lambda: f"shopper-{uuid.uuid4().hex[:10]}")
    password: str = field(default_factory=lambda: uuid.uuid4().hex)
    requests_made: int = 0
    failures: list[str] = field(default_factory=list)
    acknowledged: Counter[str] = field(default_factory=Counter)
    served_by: Counter[str] = field(default_factory=Counter)
    last_served_by: str = ""
    final_cart: dict[str, int] | None = None
    failure_log: list[FailureRecord] = field(default_factory=list)
    # Adds answered 503: (Idempotency-Key, body), retried with the same key.
    pending: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    last_status: int | None = None
    resent: int = 0  # requests resent after their connection was reset (see _send)
    # What the shop forgot, each seen as it happened (see _check_cart, _check_login).
    lost_carts: list[str] = field(default_factory=list)
    # Every add answered 201, never written off as `acknowledged` is after a
    # lost cart: what a store that loses nothing shows at the end, even after a
    # cart read (on a split network, from the cut-off side) showed less.
    acknowledged_ever: Counter[str] = field(default_factory=Counter)
    forced_logins: int = 0
    cut_off: int = 0  # requests resent after their answer was cut off (see _send)
    samples: list[Sample] = field(default_factory=list)  # every request, for the timeline

    def __post_init__(self) -> None:
        self.base_url = self.base_url.rstrip("/")
        self.session = requests.Session()
        self.session.mount("http://", KeepAliveAdapter())
        self.rng = random.Random(self.name)  # noqa: S311 - load shape, not security

    # -------------------------------------------------------------- requests
    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        expect: Iterable[int] = (200,),
        key: str | None = None,
    ) -> requests.Response | None:
        """Send one request; return the response if its status is expected, else None
        (the failure is recorded). Mutating requests carry `key` as Idempotency-Key,
        a fresh one if none is given."""
        headers = {}
        if method != "GET":
            headers["Idempotency-Key"] = key or uuid.uuid4().hex
        self.requests_made += 1
        self.last_status = None
        started, wall = time.monotonic(), time.time()
        try:
            response = self._send(method, path, json, headers)
        except requests.RequestException as exc:
            self._sample(wall, started, None, None, f"{method} {path}")
            self._failed(started, None, f"{method} {path}: {type(exc).__name__}: {exc}")
            return None
        self.last_status = response.status_code
        self.last_served_by = response.headers.get("X-Served-By", "?")
        self.served_by[self.last_served_by] += 1
        ok = response.status_code in tuple(expect)
        self._sample(wall, started, response.status_code, ok, f"{method} {path}")
        if not ok:
            self._failed(
                started,
                response.status_code,
                f"{method} {path}: HTTP {response.status_code} from {self.last_served_by}: "
                f"{response.text[:200]}",
            )
            return None
        return response

    def _sample(
        self, wall: float, started: float, status: int | None, ok: bool | None, what: str
    ) -> None:
        served_by = self.last_served_by if status is not None else None
        seconds = time.monotonic() - started
        self.samples.append(Sample(wall, seconds, bool(ok), status, served_by, what, self.name))

    def _send(
        self, method: str, path: str, json: Any, headers: dict[str, str]
    ) -> requests.Response:
        """One request, resent once if its connection broke before the whole answer came.

        nginx closes idle keep-alive connections when it reloads (`scale`, the
        watchdog), and a request sent at that instant meets a reset before any
        answer; on hosts, a load balancer that died with the request in its
        hands is found out by a keepalive probe, which its successor at the
        same address resets (KEEPALIVE_OPTIONS). Browsers resend such a
        request on a fresh connection; so does this shopper, with the same
        Idempotency-Key, so the shop applies it at most once. The same goes
        for an answer cut off after its headers: a replica that froze between
        writing its headers and its body (gunicorn writes them apart), whose
        headers nginx had already passed on, so nginx could not resend it
        elsewhere. A browser would show that one load as broken; a client that
        has idempotency keys resends, as this one does (counted apart, in
        `cut_off`).
        """
        url = self.base_url + path
        try:
            return self.session.request(method, url, json=json, headers=headers, timeout=TIMEOUT)
        except requests.exceptions.ChunkedEncodingError:
            self.cut_off += 1
        except requests.ConnectionError as exc:
            if isinstance(exc, requests.Timeout):
                raise
            self.resent += 1
        return self.session.request(method, url, json=json, headers=headers, timeout=TIMEOUT)

    def _failed(self, started: float, status: int | None, what: str) -> None:
        self.failures.append(what)
        self.failure_log.append(FailureRecord(started, time.monotonic() - started, status, what))

    def must(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        """`request`, but raise RequestFailed (with the reason) instead of returning None."""
        response = self.request(method, path, **kwargs)
        if response is None:
            raise RequestFailed(self.failures[-1])
        return response

    # ---------------------------------------------------------------- actions
    @property
    def account(self) -> dict[str, str]:
        """The body of its register and login requests."""
        return {"username": self.name, "password": self.password}

    def sign_up(self) -> None:
        """Register and log in (the session cookie is then this shopper's)."""
        self.must("POST", "/api/register", json=self.account, expect=(201,))
        self.must("POST", "/api/login", json=self.account)

    def products(self) -> list[dict[str, Any]]:
        return self.must("GET", "/api/products").json()

    def add(self, product_id: str, qty: int, key: str | None = None) -> bool:
        """Add to the cart; remember the add only if the shop acknowledged it.

        A 503 leaves the add unsettled (it may have been applied): it is kept
        to be retried with the same key, which applies it at most once."""
        body = {"product_id": product_id, "qty": qty}
        key = key or uuid.uuid4().hex
        if self.request("POST", "/api/cart/items", json=body, expect=(201,), key=key) is None:
            if self.last_status == 503:
                self.pending.append((key, body))
            return False
        self.acknowledged[product_id] += qty
        self.acknowledged_ever[product_id] += qty
        return True

    def settle_one(self) -> bool:
        """Retry the oldest unsettled add with its own Idempotency-Key; True if
        the shop acknowledged it this time."""
        key, body = self.pending.pop(0)
        return self.add(body["product_id"], body["qty"], key)

    def _committed(self, product_id: str) -> int:
        """Acknowledged plus unsettled qty: what the line may hold."""
        unsettled = sum(b["qty"] for _, b in self.pending if b["product_id"] == product_id)
        return self.acknowledged[product_id] + unsettled

    def cart(self) -> dict[str, int]:
        """The cart as {product_id: qty}, as the shop reports it now."""
        return quantities(self.must("GET", "/api/cart").json())

    def _check_cart(self, cart: dict[str, int]) -> None:
        """A cart read holding less than was acknowledged is a lost cart: record it,
        then carry on from what the shop shows (later adds are checked against that)."""
        missing = {p: q for p, q in self.acknowledged.items() if q and cart.get(p, 0) < q}
        if not missing:
            return
        self.lost_carts.append(
            f"{self.name}: cart lost: {sum(self.acknowledged.values())} items acknowledged, "
            f"{sum(cart.values())} shown by {self.last_served_by} (missing: {missing})"
        )
        self.acknowledged = Counter(cart)

    def _check_login(self, response: requests.Response) -> None:
        """A 401 from /api/me: the shop forgot who this is. Log in again."""
        if response.status_code != 401:
            return
        self.forced_logins += 1
        self.request("POST", "/api/login", json=self.account)

    def step(self, product_ids: list[str]) -> None:
        """One random action: mostly reads, about a third cart adds."""
        if self.pending:
            self.settle_one()
            return
        roll = self.rng.random()
        if roll < 0.35:
            qty = self.rng.randint(1, 3)
            room = [p for p in product_ids if self._committed(p) + qty <= MAX_QTY]
            if room:
                self.add(self.rng.choice(room), qty)
                return
        if roll < 0.6:
            response = self.request("GET", "/api/cart")
            if response is not None:
                self._check_cart(quantities(response.json()))
        elif roll < 0.8:
            response = self.request("GET", "/api/me", expect=(200, 401))
            if response is not None:
                self._check_login(response)
        else:
            self.request("GET", "/api/products")

    def verify(self) -> bool:
        """Settle unsettled adds (bounded), then fetch the final cart; True if it is
        exactly the sum of the acknowledged adds."""
        for _ in range(PENDING_RETRIES):
            if not self.pending:
                break
            self.settle_one()
            if self.pending:
                time.sleep(PENDING_PAUSE)
        try:
            self.final_cart = self.cart()
        except RequestFailed:
            return False
        if not self.pending:
            self._check_cart(self.final_cart)
        return self.final_cart == {p: q for p, q in self.acknowledged.items() if q}


def quantities(cart: dict[str, Any]) -> dict[str, int]:
    """{product_id: qty} of a cart as /api/cart answers it."""
    return {item["product_id"]: item["qty"] for item in cart["items"]}


def plentiful(products: list[dict[str, Any]], count: int) -> list[dict[str, Any]]:
    """The `count` products with the most stock: what a checkout can still buy
    after earlier runs on the same cluster took the rare ones."""
    return sorted(products, key=lambda p: p["stock"], reverse=True)[:count]


@dataclass
class LoadReport:
    """What a background load did, summed over its shoppers."""

    shoppers: int
    requests: int
    failures: list[str]
    carts_match: bool
    mismatches: list[str]
    served_by: Counter[str]
    seconds: float
    resent: int = 0  # requests resent on a fresh connection after a reset
    lost_carts: int = 0  # carts seen holding less than was acknowledged
    forced_logins: int = 0  # times a logged-in shopper found itself logged out
    cut_off: int = 0  # requests resent after an answer cut off mid-body
    samples: list[Sample] = field(default_factory=list)  # every request, in order of start

    @property
    def ok(self) -> bool:
        return not self.failures and self.carts_match and not self.forced_logins

    @property
    def slowest(self) -> Sample | None:
        """The request that took longest (None if none was made)."""
        return max(self.samples, key=lambda s: s.seconds, default=None)

    @classmethod
    def combined(cls, reports: Sequence[LoadReport]) -> LoadReport:
        """Several loads' reports as one (a crowd that arrived in groups)."""
        served: Counter[str] = Counter()
        for report in reports:
            served.update(report.served_by)
        return cls(
            shoppers=sum(r.shoppers for r in reports),
            requests=sum(r.requests for r in reports),
            failures=[f for r in reports for f in r.failures],
            carts_match=all(r.carts_match for r in reports),
            mismatches=[m for r in reports for m in r.mismatches],
            served_by=served,
            seconds=max((r.seconds for r in reports), default=0.0),
            resent=sum(r.resent for r in reports),
            lost_carts=sum(r.lost_carts for r in reports),
            forced_logins=sum(r.forced_logins for r in reports),
            cut_off=sum(r.cut_off for r in reports),
            samples=merge(s for r in reports for s in r.samples),
        )


class LoadGenerator:
    """`shoppers` threads shopping until stopped, `duration` passes or each made
    `max_requests`: `with LoadGenerator(url, 8) as load: ...; report = load.report()`."""

    def __init__(
        self,
        base_url: str,
        shoppers: int = 4,
        *,
        duration: float = 15.0,
        max_requests: int = 400,
        think: float = 0.02,
    ) -> None:
        self.shoppers = [SimulatedShopper(base_url) for _ in range(shoppers)]
        self.duration = duration
        self.max_requests = max_requests
        self.think = think
        self.stopping = threading.Event()
        self.threads: list[threading.Thread] = []
        self.ready = threading.Barrier(shoppers + 1)
        self.started = 0.0
        self.started_wall = 0.0  # time.time() at start: where its timeline begins
        self.shopping_wall = 0.0  # time.time() once all signed up (password hashing done)
        self.stopped = 0.0

    def __enter__(self) -> LoadGenerator:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        """Start the threads; return once every shopper is signed up (or failed to)."""
        self.started, self.started_wall = time.monotonic(), time.time()
        for shopper in self.shoppers:
            thread = threading.Thread(target=self._shop, args=(shopper,), daemon=True)
            thread.start()
            self.threads.append(thread)
        self._all_signed_up()
        self.shopping_wall = time.time()

    def _all_signed_up(self) -> None:
        """Meet at the barrier: the load starts for real only once all are logged in
        (sign-up hashes passwords, slow by design), so `with LoadGenerator(...)` returns then."""
        with contextlib.suppress(threading.BrokenBarrierError):
            self.ready.wait(timeout=60)

    def _shop(self, shopper: SimulatedShopper) -> None:
        product_ids: list[str] = []
        try:
            shopper.sign_up()
            product_ids = [p["id"] for p in shopper.products()]
        except Exception as exc:  # recorded as a failure; the other shoppers go on
            if not isinstance(exc, RequestFailed):
                shopper.failures.append(f"sign-up: {type(exc).__name__}: {exc}")
        finally:
            self._all_signed_up()
        deadline = self.started + self.duration
        while (
            product_ids
            and not self.stopping.is_set()
            and time.monotonic() < deadline
            and shopper.requests_made < self.max_requests
        ):
            shopper.step(product_ids)
            self.stopping.wait(self.think)

    def stop(self) -> None:
        """Stop shopping and wait for the threads (each finishes its current request)."""
        self.stopping.set()
        for thread in self.threads:
            thread.join(timeout=TIMEOUT[0] + TIMEOUT[1] + 5)
        if not self.stopped:
            self.stopped = time.monotonic()

    def requests_so_far(self) -> int:
        return sum(s.requests_made for s in self.shoppers)

    def served_by(self) -> Counter[str]:
        """Requests answered so far, by replica (from X-Served-By)."""
        served: Counter[str] = Counter()
        for shopper in self.shoppers:
            served.update(shopper.served_by)
        return served

    def samples(self) -> list[Sample]:
        """Every request so far, of every shopper, in order of start."""
        return merge(sample for shopper in self.shoppers for sample in list(shopper.samples))

    def report(self) -> LoadReport:
        """Stop (if running), check every cart, and sum up."""
        self.stop()
        mismatches = [
            f"{s.name}: cart {s.final_cart} != acknowledged {dict(s.acknowledged)}"
            for s in self.shoppers
            if not s.verify()
        ]
        mismatches += [loss for s in self.shoppers for loss in s.lost_carts]
        return LoadReport(
            shoppers=len(self.shoppers),
            requests=self.requests_so_far(),
            failures=[f"{s.name}: {f}" for s in self.shoppers for f in s.failures],
            carts_match=not mismatches,
            mismatches=mismatches,
            served_by=self.served_by(),
            seconds=self.stopped - self.started,
            resent=sum(s.resent for s in self.shoppers),
            lost_carts=sum(len(s.lost_carts) for s in self.shoppers),
            forced_logins=sum(s.forced_logins for s in self.shoppers),
            cut_off=sum(s.cut_off for s in self.shoppers),
            samples=self.samples(),
        )
