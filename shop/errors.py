"""The shop's error type and the Redis failures that mean "try again shortly".

Domain modules raise :class:`ShopError` with an HTTP status and a stable
machine-readable code; the API turns it into ``{"error": code, "message": text}``
and the HTML pages into a flash message or a friendly page. Keeping status and
code on the exception means one place decides both.
"""

from __future__ import annotations

from typing import Any

from sessionstore import TRANSIENT_REDIS_ERRORS, StoreUnavailable, refused_for_replicas

# Failures that mean the store cannot be reached right now (as opposed to a
# bug, such as a script error, which must surface as one): sessionstore's own
# exception, and the Redis errors the shop's own calls can raise. A primary's
# refusal of a write for want of replicas is one too, but redis-py gives it
# no class of its own: is_store_error recognises it.
STORE_ERRORS: tuple[type[BaseException], ...] = (StoreUnavailable, *TRANSIENT_REDIS_ERRORS)


class ShopError(Exception):
    """A request the shop refuses, with the status and code to answer it with."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        details: dict[str, Any] | None = None,
        retry_after: int | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details or {}
        self.retry_after = retry_after

    def headers(self) -> dict[str, str]:
        """HTTP headers that go with the answer: Retry-After when waiting helps."""
        return {"Retry-After": str(self.retry_after)} if self.retry_after else {}

    def to_json(self) -> dict[str, Any]:
        """The JSON error body: ``{"error", "message"}`` plus any details."""
        return {"error": self.code, "message": self.message, **self.details}


def is_store_error(exc: BaseException | None) -> bool:
    """True if `exc` means Redis is unreachable or refuses writes for now (so the
    answer is a 503, not a 500)."""
    return isinstance(exc, STORE_ERRORS) or refused_for_replicas(exc)


def store_unavailable() -> ShopError:
    """The 503 given while Redis is unreachable."""
    return ShopError(
        503,
        "store_unavailable",
        "The shop's data store is unreachable right now. Please try again in a moment.",
        retry_after=StoreUnavailable.retry_after,
    )
