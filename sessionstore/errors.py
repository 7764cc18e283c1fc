"""The one exception type an application needs to know about."""

from __future__ import annotations

import redis.exceptions

# Failures that mean "the store cannot be reached right now" (as opposed to a
# bug such as a script error, which should surface as one): connection and
# socket errors, a server still loading its data after a restart, and a
# primary that was demoted to a read-only replica during a Sentinel failover.
TRANSIENT_REDIS_ERRORS: tuple[type[BaseException], ...] = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.BusyLoadingError,
    redis.exceptions.ReadOnlyError,
    redis.exceptions.TryAgainError,
)


class StoreUnavailable(Exception):
    """The session store (Redis) did not answer in time.

    Raised while a session is loaded or saved. An application turns it into a
    503 with Retry-After: the request may succeed a moment later, and nothing
    was half-written (every save is a single atomic script).
    """

    retry_after = 1


class NotReplicated(StoreUnavailable):
    """A write reached the primary but not enough replicas in time.

    The write is not rolled back (Redis cannot), but it is not acknowledged
    either: the request fails with a 503, and a failover right now could lose
    it. Retrying is safe: sessions are written per field, and the shop's
    mutating requests carry idempotency keys.
    """
