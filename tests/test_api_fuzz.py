"""Fuzzing the JSON API from its own OpenAPI document, as a hostile user's fuzzer would.

schemathesis runs from its command line with every check it has
(``--checks all``) and every phase (examples, coverage, fuzzing, stateful)
against a real gunicorn replica on a real redis-server. Any finding fails the
test: a 5xx, a status the document does not list, an answer whose shape it
does not describe, a request it calls valid that the server refuses, or one
it calls invalid that the server accepts. So the document says exactly what
the server does (shop/openapi.py).

Two runs, each bounded in examples per operation and in wall time:

- anonymous, every operation (logging in and out included);
- logged in: the session cookie is given as the document's ``session``
  security scheme, so the ``ignored_auth`` check also sends each logged-in
  operation without it and expects a 401. Logging in and out are left out of
  this run, since either would end the session the run is using.

One check is told one thing the schema cannot say: a key reused for a
different request is answered 422 (as the IETF Idempotency-Key draft says),
which depends on what the same session sent before, so a schema-valid
request may meet it.

The seed is fixed, so a finding reproduces; ``SHOP_FUZZ_SEED`` picks another
for an exploratory run.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from shop_support import PASSWORD, gunicorn_replica

SCHEMATHESIS = Path(sys.executable).parent / "schemathesis"
SEED = os.environ.get("SHOP_FUZZ_SEED", "18")
# Per operation and phase: enough for every rule of the document to be hit
# (about 700 requests a run, 20 to 30 s here), few enough for CI.
MAX_EXAMPLES = 25
# A run takes under a minute on this 2-core machine; five means it hangs.
RUN_TIMEOUT = 300
LOGGED_IN_ONLY = ["/api/login", "/api/logout"]

CONFIG = """
# Written by tests/test_api_fuzz.py.
[auth.openapi.session]
api_key = "${SHOP_FUZZ_SESSION}"

[checks.positive_data_acceptance]
# The defaults, plus 422: an Idempotency-Key reused for a different request.
expected-statuses = ["2xx", "3xx", "401", "403", "404", "409", "422", "429", "5xx"]
"""


@pytest.fixture
def fuzzed_replica(own_redis, tmp_path):
    env = {"SHOP_HEARTBEAT_INTERVAL": "0", "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics")}
    with gunicorn_replica("fuzz", own_redis.url, tmp_path, env=env) as replica:
        yield replica


def logged_in_session(base: str) -> str:
    """Register and log in a user with one cart line; its session cookie."""
    with requests.Session() as client:
        account = {"username": "fuzz-owner", "password": PASSWORD}
        assert client.post(f"{base}/api/register", json=account, timeout=5).status_code == 201
        assert client.post(f"{base}/api/login", json=account, timeout=5).status_code == 200
        line = {"product_id": "house-blend", "qty": 1}
        assert client.post(f"{base}/api/cart/items", json=line, timeout=5).status_code == 201
        return client.cookies["session"]


def fuzz(base: str, workdir: Path, session: str, *extra: str) -> subprocess.CompletedProcess:
    config = workdir / "schemathesis.toml"
    config.write_text(CONFIG)
    argv = [
        str(SCHEMATHESIS), "--no-color", "--config-file", str(config),
        "run", f"{base}/api/openapi.json",
        "--checks", "all",
        "--phases", "examples,coverage,fuzzing,stateful",
        "--max-examples", str(MAX_EXAMPLES),
        "--seed", SEED,
        "--workers", "1",
        "--request-timeout", "5",
        *extra,
    ]  # fmt: skip
    env = {**os.environ, "SHOP_FUZZ_SESSION": session}
    return subprocess.run(
        argv, cwd=workdir, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT
    )


def test_the_fuzzer_finds_nothing_anonymous_or_logged_in(fuzzed_replica, tmp_path):
    base = fuzzed_replica.url
    session = logged_in_session(base)  # before the anonymous run meets the login throttle
    excluded = [arg for path in LOGGED_IN_ONLY for arg in ("--exclude-path", path)]
    runs = {
        "anonymous": fuzz(base, tmp_path, "no-session-cookie"),
        "logged in": fuzz(base, tmp_path, session, *excluded),
    }
    for name, run in runs.items():
        summary = run.stdout[-6000:]
        assert run.returncode == 0, f"the {name} run found something:\n{summary}\n{run.stderr}"
        assert " passed" in run.stdout and "Stateful" in run.stdout, summary
