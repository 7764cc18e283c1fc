"""What an application needs to know about when the store fails.

- :class:`StoreUnavailable` (and its subclasses :class:`NotReplicated` and
  :class:`WriteRefused`): a session could not be loaded or saved. Answer 503
  with ``Retry-After: retry_after``.
- :data:`TRANSIENT_REDIS_ERRORS`: the redis-py errors that mean the same for an
  application's own Redis calls. sessionstore's clients retry on exactly these,
  and raise :class:`StoreUnavailable` when the retries run out.
- :func:`refused_for_replicas`: Redis's own refusal of a write for want of
  replicas (``min-replicas-to-write``), which redis-py has no class for.
"""

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

    # Seconds a client should wait before retrying: about what a Redis restart
    # or a Sentinel failover takes to show, and no longer than a person waits.
    retry_after = 2


# A primary with `min-replicas-to-write N` answers a write with this error code
# while fewer than N replicas have acknowledged its stream within
# `min-replicas-max-lag` seconds; the write is not applied.
NO_REPLICAS = "NOREPLICAS"


def refused_for_replicas(exc: BaseException | None) -> bool:
    """Whether `exc` is the primary's NOREPLICAS refusal of a write.

    redis-py raises it as a plain ResponseError; inside a pipeline the message
    is prefixed with the command that failed ("Command # 1 (...) of pipeline
    caused error: NOREPLICAS ...").
    """
    if not isinstance(exc, redis.exceptions.ResponseError):
        return False
    message = str(exc)
    return message.startswith(NO_REPLICAS) or f"caused error: {NO_REPLICAS} " in message


class NotReplicated(StoreUnavailable):
    """A write reached the primary but not enough replicas in time.

    The write is not rolled back (Redis cannot), but it is not acknowledged
    either: the request fails with a 503, and a failover right now could lose
    it. Retrying is safe: sessions are written per field, and the shop's
    mutating requests carry idempotency keys.
    """


class WriteRefused(StoreUnavailable):
    """The primary refused a write before applying it: too few replicas in sync.

    A primary configured with ``min-replicas-to-write`` does this while it has
    lost its replicas (or is cut off from them). Unlike :class:`NotReplicated`,
    nothing was written: the request fails with a 503 and changes nothing.
    """
