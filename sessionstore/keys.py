"""Every Redis key sessionstore uses is built here, and nowhere else.

Data model (all keys share the interface's `key_prefix`, default ``sess:``):

| key | type | TTL | written by |
|---|---|---|---|
| ``{prefix}{hmac}`` | hash | min(lifetime, absolute left), moved when due | save / load scripts |
| ``{prefix}user:{id}`` | zset | its longest-lived member | save, load (when TTL moves), destroy |

``{hmac}`` is the HMAC-SHA256 of the cookie's session id, keyed by a key
derived from the app's SECRET_KEY, truncated to 128 bits (base64url, 22
chars): a dump or a replica of Redis contains no usable cookie, and a lookup
compares nothing secret in Python (Redis finds the key by hash), so it leaks
no timing about valid ids. Cookies issued before this format (43 characters
long, where today's are 44) keep the full 256-bit HMAC (43 chars), so their
sessions stay where they are until they expire. During a key
rotation (Flask's ``SECRET_KEY_FALLBACKS``) a session may still sit under the
key an old secret derives; the load script moves it to the current one.

Fields of a session hash: one per top-level session key, holding tagged JSON
(a key starting with ``!`` is stored as ``!!key`` so it cannot clash), plus
metadata fields ``!c`` (created, ms since epoch, Redis clock), ``!a`` (last
write or TTL push-back, ms) and ``!u`` (the user id, when logged in).

The user index holds the session keys of one user scored by their expiry
(ms): pruned of expired members whenever it is touched, and itself expiring
with its last member, so it cannot grow without bound.
"""

from __future__ import annotations

import binascii
import hashlib
import hmac
from collections.abc import Sequence

META_CREATED = "!c"
META_ACTIVE = "!a"
META_USER = "!u"
META_PREFIX = "!"
LEGACY_SID_LENGTH = 43  # cookies issued before keys were truncated to 128 bits
_BASE64URL = bytes.maketrans(b"+/", b"-_")


class _SessionMac:
    """HMAC-SHA256 under one derived key, with the key's inner and outer hash
    states computed once (RFC 2104, as the hmac module does it): each id then
    costs two copies and two hashes, a third of keying an HMAC per request."""

    def __init__(self, key: bytes) -> None:
        block = key.ljust(hashlib.sha256().block_size, b"\0")
        self._inner = hashlib.sha256(block.translate(_IPAD))
        self._outer = hashlib.sha256(block.translate(_OPAD))

    def digest(self, message: bytes) -> bytes:
        inner = self._inner.copy()
        inner.update(message)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()


_IPAD = bytes(x ^ 0x36 for x in range(256))
_OPAD = bytes(x ^ 0x5C for x in range(256))


def _derive(secret: str | bytes) -> _SessionMac:
    """The MAC of session ids under `secret`."""
    if isinstance(secret, str):
        secret = secret.encode()
    # A key of its own, so the raw SECRET_KEY is never used for two purposes.
    return _SessionMac(hmac.new(secret, b"sessionstore/session-key/v1", hashlib.sha256).digest())


class KeySpace:
    """Builds the keys of one session store, under one secret (and its fallbacks)."""

    def __init__(
        self, prefix: str, secret: str | bytes, fallbacks: Sequence[str | bytes] | None = None
    ) -> None:
        if not secret:
            raise ValueError("sessionstore needs the app's SECRET_KEY to derive session keys")
        self.prefix = prefix
        self.secret = secret
        self.fallbacks = fallbacks  # as given, so `matches` can compare cheaply
        self._hmac_key = _derive(secret)
        # Flask tries the last fallback first ("order oldest to newest"); so do we.
        self._fallback_keys = [_derive(old) for old in reversed(fallbacks or ()) if old]

    def matches(self, secret: str | bytes, fallbacks: Sequence[str | bytes] | None) -> bool:
        """Whether this key space was built for `secret` and `fallbacks` (a per-request check)."""
        return secret == self.secret and fallbacks == self.fallbacks

    def session(self, sid: str) -> str:
        return self._session_key(self._hmac_key, sid)

    def fallback_sessions(self, sid: str) -> list[str]:
        """Where the session of `sid` would be under each fallback secret, newest first."""
        return [self._session_key(key, sid) for key in self._fallback_keys]

    def _session_key(self, mac: _SessionMac, sid: str) -> str:
        digest = mac.digest(sid.encode())
        # 128 bits identify a session as well as 256 (no two of 2**64 sessions
        # collide) and cost half the bytes, twice over: in the key, and as a
        # member of the user index (base64url, not hex, for the same reason).
        # A cookie of the first format (43 characters) keeps its full HMAC.
        if len(sid) != LEGACY_SID_LENGTH:
            digest = digest[:16]
        text = binascii.b2a_base64(digest, newline=False).translate(_BASE64URL).rstrip(b"=")
        return self.prefix + text.decode()

    @property
    def user_index_prefix(self) -> str:
        """The Lua scripts append a user id to this (they learn the id from ``!u``)."""
        return f"{self.prefix}user:"

    def user_index(self, user_id: str) -> str:
        return f"{self.user_index_prefix}{user_id}"


def field_name(session_key: str) -> str:
    """The hash field that stores `session_key` (escaping the metadata prefix)."""
    return META_PREFIX + session_key if session_key.startswith(META_PREFIX) else session_key


def session_key_of(field: str) -> str | None:
    """Inverse of field_name; None for metadata fields."""
    if not field.startswith(META_PREFIX):
        return field
    if field.startswith(META_PREFIX * 2):
        return field[1:]
    return None
