"""Idempotency keys: turning a client's key and request into a claim for atomic.run.

The key comes from the ``Idempotency-Key`` header (JSON API) or the hidden
``idempotency_key`` field every HTML form carries. Records are scoped per user
(or, for anonymous visitors, per session visitor id), so one client's key can
never replay another's result. The fingerprint is an HMAC of the request, not
a plain hash, because a registration body holds a password.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import uuid
from dataclasses import dataclass
from typing import Any

from . import keys
from .errors import ShopError

HEADER = "Idempotency-Key"
FORM_FIELD = "idempotency_key"
MAX_KEY_LENGTH = 200
# Printable ASCII, no space at either end (HTTP strips those from a header, so
# a key with them could not be repeated as sent). /api/openapi.json says the same.
KEY_PATTERN = r"^[!-~]([ -~]*[!-~])?$"
_KEY_RE = re.compile(KEY_PATTERN.removeprefix("^").removesuffix("$"))
RECORD_TTL_SECONDS = 24 * 3600  # a retry or a resubmitted form comes long before this


@dataclass(frozen=True)
class IdempotencyClaim:
    """Where a request's first result is kept, and what the request looked like."""

    record_key: str
    fingerprint: str
    ttl_seconds: int = RECORD_TTL_SECONDS  # how long the first result is kept


def new_key() -> str:
    """A fresh key for an HTML form (one per rendered form)."""
    return str(uuid.uuid4())


def validate_key(value: str | None) -> str | None:
    """The key if present and well formed (1-200 printable ASCII characters, no space at
    either end), else 400."""
    if value is None:
        return None
    if not (len(value) <= MAX_KEY_LENGTH and _KEY_RE.fullmatch(value)):
        raise ShopError(
            400,
            "bad_idempotency_key",
            f"Idempotency-Key must be 1 to {MAX_KEY_LENGTH} printable ASCII characters, "
            "with no space at either end.",
        )
    return value


def make_claim(
    *,
    scope: str,
    key: str | None,
    secret: str | bytes,
    request_parts: list[Any],
    ttl_seconds: int = RECORD_TTL_SECONDS,
) -> IdempotencyClaim | None:
    """A claim for `key` in `scope`, fingerprinting `request_parts` (method, path, body...),
    whose result is kept `ttl_seconds` (at most RECORD_TTL_SECONDS)."""
    key = validate_key(key)
    if key is None:
        return None
    secret_bytes = secret.encode("utf-8") if isinstance(secret, str) else secret
    material = json.dumps(request_parts, sort_keys=True, separators=(",", ":"), default=str)
    fingerprint = hmac.new(secret_bytes, material.encode("utf-8"), hashlib.sha256).hexdigest()
    return IdempotencyClaim(
        record_key=keys.idempotency(scope, key),
        fingerprint=fingerprint,
        ttl_seconds=min(ttl_seconds, RECORD_TTL_SECONDS),
    )
