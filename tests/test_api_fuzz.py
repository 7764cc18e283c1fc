"""Property-based fuzzing of the JSON API from its own OpenAPI document.

schemathesis generates requests from /api/openapi.json (valid and invalid
bodies, odd path parameters, wrong types) and runs them in-process against a
real app on a real redis-server. Whatever it sends, the API must answer with
a JSON error and never a 500: bad input is a clear 4xx. Both schemathesis
modes run: positive (valid by the schema) and negative (deliberately not).
"""

from __future__ import annotations

import itertools

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode
from shop_support import make_app


@pytest.fixture
def fuzzed_app(redis_server, redis_client):
    return make_app(redis_server.url, "fuzz", WTF_CSRF_ENABLED=False)


def api_operations(app):
    schema = schemathesis.openapi.from_wsgi("/api/openapi.json", app)
    return [result.ok() for result in schema.get_all_operations()]


def fuzz_operation(operation, mode: GenerationMode, tried: list) -> None:
    """Send up to 20 generated requests to one operation and check every answer."""

    @given(case=operation.as_strategy(mode))
    @settings(
        max_examples=20, deadline=None, database=None, suppress_health_check=list(HealthCheck)
    )
    def fuzz(case):
        response = case.call()
        tried.append((operation.label, mode.value, response.status_code))
        case.validate_response(response, checks=[not_a_server_error])
        if response.status_code >= 400 and response.status_code != 405:
            assert {"error", "message"} <= set(response.json()), (operation.label, response.text)

    try:
        fuzz()
    except Unsatisfiable:
        # No way to make this operation's input invalid (nothing to send):
        # only possible in negative mode, where there is nothing to fuzz.
        assert mode is GenerationMode.NEGATIVE


def test_api_never_answers_fuzzed_input_with_a_server_error(fuzzed_app):
    operations = api_operations(fuzzed_app)
    assert len(operations) >= 12  # every route of the JSON API contract is documented
    tried: list = []
    for operation, mode in itertools.product(operations, GenerationMode):
        fuzz_operation(operation, mode, tried)

    negative = [status for _, mode, status in tried if mode == "negative"]
    assert negative and all(400 <= status < 500 for status in negative), negative
