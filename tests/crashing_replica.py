"""A shop replica that crashes after it has applied a cart add, before it answers.

gunicorn serves this wrapper only when a test names it on the command line
(`crashing_replica:app`, with tests/ on PYTHONPATH); it lives in tests/, is
never installed, and no setting of the shop can turn it on. The shop itself
runs unchanged: the add is applied in Redis, the idempotency record written
and the session saved, exactly as for any request. Then, instead of sending
the answer, the whole replica (its gunicorn master and every worker, one
process group) is SIGKILLed, as `shop-cluster kill` would crash it: nginx has
sent the POST and gets no answer, the case `proxy_next_upstream ...
non_idempotent` and the Idempotency-Key exist for.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterable
from typing import Any

from shop.wsgi import app as shop

CRASH_ON = ("POST", "/api/cart/items")


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    answer = shop(environ, start_response)  # the view ran; nothing is sent yet
    if (environ["REQUEST_METHOD"], environ["PATH_INFO"]) == CRASH_ON:
        os.killpg(os.getpgid(0), signal.SIGKILL)
    return answer
