"""How a session value becomes a Redis hash field, and back.

Each top-level session key is one hash field holding tagged JSON: Flask's own
TaggedJSONSerializer, so bytes, datetime, tuple, UUID and Markup (flash
messages) round-trip exactly as they do in Flask's signed-cookie sessions.
Never pickle: a value read from Redis can never run code.
"""

from __future__ import annotations

import json
import logging
from json.encoder import encode_basestring_ascii
from typing import Any

from flask.json.tag import TaggedJSONSerializer

log = logging.getLogger(__name__)

_tagged = TaggedJSONSerializer()
# json.loads without its Python wrappers (a third of the cost for a small value).
_scan = json.JSONDecoder().scan_once


class CorruptValue(ValueError):
    """A stored field is not valid tagged JSON (written by something else, or damaged)."""


def dumps(value: Any) -> str:
    """Serialize one session value. Raises TypeError for values JSON cannot hold.

    An int, a bool, None or an ASCII string has no tag and serializes the same
    under every JSON setting of the app, so it skips Flask's serializer (which
    builds a JSON encoder per call: most of a small write's CPU here)."""
    kind = type(value)
    if kind is str:
        if value.isascii():
            return encode_basestring_ascii(value)
    elif kind is int:
        return int.__repr__(value)
    elif kind is bool:
        return "true" if value else "false"
    elif value is None:
        return "null"
    return _tagged.dumps(value)


def loads(raw: str | bytes) -> Any:
    try:
        # Every tag is a one-key object whose key starts with a space, so it
        # always serializes as `{" x":`. With no quote-space pair anywhere,
        # there is no tag to undo and the C decoder alone gives the same result.
        if (b'" ' if isinstance(raw, bytes) else '" ') not in raw:
            if isinstance(raw, str):
                try:
                    value, end = _scan(raw, 0)
                except StopIteration:
                    pass  # not JSON where it starts: json.loads says why
                else:
                    if end == len(raw):
                        return value
            return json.loads(raw)
        return _tagged.loads(raw)
    except (ValueError, TypeError, KeyError) as exc:
        raise CorruptValue(str(exc)) from exc
