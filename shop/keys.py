"""Every Redis key the shop uses, each built by exactly one function.

Keeping the names in one module means the data model is written down once and
no other module spells a key by hand (a typo there would be a silent bug).
Sessions live under ``sess:`` and belong to :mod:`sessionstore`; everything
below is the shop's.

Data model
==========

Each entry: key, type, TTL, who writes it.

- ``shop:products`` hash, no TTL: product id -> JSON ``{id, name, description,
  price_cents, position}``. Written by catalog.seed with HSETNX (only what is absent).
- ``shop:stock`` hash, no TTL: product id -> units left. Seeded by catalog.seed
  (HSETNX); only checkout.lua takes from it (HINCRBY -qty).
- ``shop:users`` hash, no TTL: user id -> JSON ``{id, username, password_hash,
  created_at}``. Written by register.lua.
- ``shop:users:by-name`` hash, no TTL: casefolded username -> user id (the
  uniqueness index). Written by register.lua, with the user, in one step.
- ``shop:users:next-id`` string counter, no TTL: register.lua (INCR).
- ``shop:cart:u:<user id>`` hash, no TTL: product id -> qty (1..99).
  Written by cart_add.lua, cart_set.lua, cart_merge.lua; cleared by checkout.lua.
- ``shop:cart:a:<visitor id>`` hash, TTL the session's absolute timeout
  (``SESSION_ABSOLUTE_TIMEOUT``, 12 h) refreshed on every change: an anonymous
  visitor's cart (the visitor id lives in the session, which cannot outlive
  that), at most 20 lines. Merged into the user's cart and deleted by
  cart_merge.lua at login.
- ``shop:orders`` hash, no TTL: order id -> order JSON. Written by checkout.lua.
- ``shop:orders:next-id`` string counter, no TTL: checkout.lua (INCR).
- ``shop:user-orders:<user id>`` list, no TTL: order ids, newest first
  (checkout.lua, LPUSH).
- ``shop:idem:<scope>:<sha256(key)>`` string, TTL 24 h (an anonymous visitor's:
  the session's absolute timeout, if shorter): JSON ``{fp, result}``,
  the first result of an idempotent request. Written by the idempotency
  envelope of every script, in the same atomic step as the change it guards.
  ``<scope>`` is ``u:<user id>`` or ``a:<visitor id>``.
- ``shop:throttle:login:user:<source>:<name>`` string counter, TTL the
  window: login attempts for one casefolded username from one source (an IPv4
  address or an IPv6 /64), throttle.py (INCR + EXPIRE NX); deleted after a
  successful login from that source.
- ``shop:throttle:login:ip:<source>`` string counter, TTL the window:
  throttle.py (INCR + EXPIRE NX).

The cluster view (shop/heartbeat.py), written by each gunicorn worker's
heartbeat thread about once a second, never by a request:

- ``shop:cluster:worker:<replica>:<pid>`` hash, TTL 3 s (refreshed by every
  beat): ``{replica, pid, started, worker_started, requests, beat}`` (unix
  seconds; ``started`` is the replica's, ``requests`` this worker's total). Its
  lapse is what marks the worker gone.
- ``shop:cluster:workers`` sorted set, no TTL: member ``<replica>|<pid>``,
  score the time of its last beat. The index of the hashes above (no SCAN) and
  the "last seen" memory of replicas that are gone; members older than 10 min
  are pruned by every beat.
- ``shop:cluster:requests:<unix time // 10>`` hash, TTL 90 s: replica ->
  requests it served in that 10-s bucket (HINCRBY by each beat's delta); the
  last six buckets give "requests in the last minute".

The autoscaler's record (shop/scalelog.py), written by the launcher's
autoscaler process (`shop-cluster autoscale`), read by the cluster page and
`shop-cluster status`:

- ``shop:cluster:autoscaler`` string, TTL 5 s (rewritten every half second):
  JSON ``{pid, updated, policy, replicas, in_flight, per_replica, outlook}``,
  what it reads and aims for now. Its lapse means the autoscaler is off (or gone).
- ``shop:cluster:autoscaler:decisions`` list, TTL 1 day (refreshed by every
  push), newest first, at most 50: JSON ``{at, action, from, to, reason,
  in_flight, took}`` per decision (action: on, up, down, error, off).

Every Lua script receives all the keys it touches in ``KEYS`` (none is built
inside a script), so the scripts stay valid should the data ever be sharded.
"""

from __future__ import annotations

import hashlib

PREFIX = "shop:"


def products() -> str:
    """Hash of product id -> product JSON (name, description, price, display position)."""
    return f"{PREFIX}products"


def stock() -> str:
    """Hash of product id -> units in stock; only checkout.lua takes from it."""
    return f"{PREFIX}stock"


def users() -> str:
    """Hash of user id -> user JSON (with the password hash)."""
    return f"{PREFIX}users"


def users_by_name() -> str:
    """Hash of casefolded username -> user id: the uniqueness index."""
    return f"{PREFIX}users:by-name"


def users_next_id() -> str:
    """Counter giving user ids."""
    return f"{PREFIX}users:next-id"


def cart(owner: str) -> str:
    """Hash of product id -> qty of a cart owner (:func:`user_owner`, :func:`visitor_owner`)."""
    return f"{PREFIX}cart:{owner}"


def user_owner(user_id: str) -> str:
    """Cart owner id of a logged-in user."""
    return f"u:{user_id}"


def visitor_owner(visitor_id: str) -> str:
    """Cart owner id of an anonymous visitor (the id lives in the visitor's session)."""
    return f"a:{visitor_id}"


def orders() -> str:
    """Hash of order id -> order JSON."""
    return f"{PREFIX}orders"


def orders_next_id() -> str:
    """Counter giving order ids."""
    return f"{PREFIX}orders:next-id"


def user_orders(user_id: str) -> str:
    """List of a user's order ids, newest first."""
    return f"{PREFIX}user-orders:{user_id}"


def idempotency(scope: str, key: str) -> str:
    """Stored first result of an idempotent request.

    The client's key is hashed so that any string (within the length limit)
    makes a well-formed, fixed-size key name.
    """
    digest = hashlib.sha256(key.encode("utf-8")).hexdigest()
    return f"{PREFIX}idem:{scope}:{digest}"


def login_throttle_user(folded_username: str, source: str) -> str:
    """Login attempts for one username from one source in the current window.

    The source comes first: a name may hold ":", an address never ends with one.
    """
    return f"{PREFIX}throttle:login:user:{source}:{folded_username}"


def login_throttle_ip(source: str) -> str:
    """Login attempts from one source (address or IPv6 /64) in the current window."""
    return f"{PREFIX}throttle:login:ip:{source}"


def cluster_worker(replica: str, pid: int) -> str:
    """One gunicorn worker's heartbeat (short TTL: its lapse means the worker is gone)."""
    return f"{PREFIX}cluster:worker:{replica}:{pid}"


def cluster_workers() -> str:
    """Sorted set of ``<replica>|<pid>`` by last heartbeat: the index and the last-seen memory."""
    return f"{PREFIX}cluster:workers"


def cluster_requests(bucket: int) -> str:
    """Hash of replica -> requests served in 10-s bucket `bucket` (unix time // 10)."""
    return f"{PREFIX}cluster:requests:{bucket}"


def cluster_autoscaler() -> str:
    """JSON of what the autoscaler reads and aims for now (short TTL: its lapse means off)."""
    return f"{PREFIX}cluster:autoscaler"


def cluster_autoscaler_decisions() -> str:
    """List of the autoscaler's decisions as JSON, newest first (capped)."""
    return f"{PREFIX}cluster:autoscaler:decisions"
