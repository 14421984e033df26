"""The project's own public OpenAPI description (gateway/openapi.yaml, generated from the protos by protos/generate.sh),
fuzzed by schemathesis against the real stack: every operation, its parameters' boundary values (coverage), valid
(positive) and invalid (negative) requests.
Never a server error, every error in OpenAI's shape, every response valid against the description.

/v1 runs with the stack's API key, /admin/v1 with the admin token. The admin calls act on a throwaway tenant (and a key
of it) made for this test, most of the time, so that they reach the services' real work rather than a 404, and never
on the tenant the other tests use: revoking, rotating or re-tiering that tenant's key would break them. Derandomized:
the same requests every run (tests/e2e/test_fuzz_openai_spec.py fuzzes OpenAI's own description)."""

from __future__ import annotations

import itertools
import os
import secrets
from collections import Counter

import httpx
import pytest
import schemathesis
import yaml
from hypothesis import HealthCheck, given, settings
from llmaas.stack.paths import REPO_ROOT
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.generation.hypothesis.builder import HypothesisTestConfig, HypothesisTestMode, create_test
from schemathesis.specs.openapi.checks import response_schema_conformance

from tests.support.stack import TEST_MODEL

pytestmark = pytest.mark.e2e

SPEC = REPO_ROOT / "gateway" / "openapi.yaml"
# Per operation and generation mode (22 operations, 16 with negative cases).
EXAMPLES = int(os.environ.get("LLMAAS_FUZZ_GENERATED_EXAMPLES", "30"))


def _origin(stack: dict) -> str:
    return stack["base_url"].removesuffix("/v1")


@pytest.fixture(scope="module")
def throwaway(stack) -> dict[str, str]:
    """A tenant of this test's own, with one key, and a tier that exists: the admin operations' parameters."""
    admin = httpx.Client(base_url=_origin(stack) + "/admin/v1", timeout=30,
                         headers={"Authorization": f"Bearer {stack['admin_token']}"})
    created = admin.post("/tenants", json={"name": f"fuzz-{secrets.token_hex(4)}"})
    assert created.status_code == 200, created.text
    tenant_id = created.json()["tenant"]["tenant_id"]
    key = admin.post(f"/tenants/{tenant_id}/keys", json={"name": "fuzz"})
    assert key.status_code == 200, key.text
    tiers = admin.get("/tiers")
    assert tiers.status_code == 200, tiers.text
    return {"tenant_id": tenant_id, "key_id": key.json()["key_id"], "tier": tiers.json()["tiers"][0]["id"]}


def _steer(case, n: int, known: dict[str, str]) -> None:
    """Three cases in four name the throwaway tenant, key and a tier (and the served model), one in four keeps a single
    field of its body; every other chat request names the served model with a well-formed message, one in eight is a
    minimal valid request (streamed or not): generated values then reach the services' validation and the model, not
    only the 404 of an unknown id or the 400 of another field (the description knows few constraints: a generated
    field is most often out of range)."""
    if n % 4 == 1 and isinstance(case.body, dict) and len(case.body) > 1:
        # One field alone: its values reach the service's own checks, not masked by another field's 400.
        keep = sorted(case.body)[n // 4 % len(case.body)]
        for key in [key for key in case.body if key != keep]:
            del case.body[key]
    if n % 4 != 3 and case.path_parameters:
        for name in known.keys() & case.path_parameters.keys():
            case.path_parameters[name] = known[name]
    if n % 4 != 3 and case.operation.path.endswith("/tier") and isinstance(case.body, dict):
        case.body["tier"] = known["tier"]
    if case.operation.path == "/v1/chat/completions" and isinstance(case.body, dict) and n % 2 == 0:
        # Not one prompt again and again: the guard refuses a tenant's 30th identical prompt in a row.
        chat = {"model": TEST_MODEL, "messages": [{"role": "user", "content": f"hi {n}"}]}
        if n % 8 == 0:
            chat |= {"max_tokens": 4, "stream": case.body.get("stream") is True}
            case.body.clear()
        case.body.update(chat)


def _error_shape(response) -> None:
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"] and error["type"], response.text


def load_schema(stack: dict):
    """The description without its security requirements: each call carries the right credential, and the negative
    cases then vary parameters and bodies instead of only leaving the key out (tests/e2e/test_auth.py covers that)."""
    raw = yaml.safe_load(SPEC.read_text())
    raw.pop("security")
    for operations in raw["paths"].values():
        for operation in operations.values():
            operation.pop("security", None)
    schema = schemathesis.openapi.from_dict(raw)
    schema.config.update(base_url=_origin(stack))
    return schema


def _modes(operation) -> list[GenerationMode]:
    """Negative cases only where there is something to get wrong: a free string in the path has no invalid value."""
    raw = operation.definition.raw
    query = any(parameter["in"] == "query" for parameter in raw.get("parameters", []))
    return list(GenerationMode) if query or "requestBody" in raw else [GenerationMode.POSITIVE]


def fuzz_operation(operation, mode: GenerationMode, token: str, steer, statuses: Counter[int]) -> None:
    """EXAMPLES requests of one mode to one operation; raises what schemathesis or the shape check found.
    steer(case): what _steer does with the case first."""

    # The pytest plugin's parametrize does not work with this pytest; hypothesis drives the cases directly.
    @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy(generation_mode=mode))
    def fuzz(case):
        steer(case)
        response = case.call(headers={"Authorization": f"Bearer {token}"}, timeout=60)
        statuses[response.status_code] += 1
        case.validate_response(response, checks=[not_a_server_error, response_schema_conformance])
        if response.status_code >= 400:
            _error_shape(response)

    fuzz()


def cover_operation(schema, operation, token: str, steer, statuses: Counter[int]) -> None:
    """Schemathesis's coverage phase for one operation: each parameter's boundary values (a uint32's 0 and 2^32 - 1, a
    uint64 string of 20 digits, an empty string...), other methods on the path, missing and wrong-typed fields: a
    few dozen deterministic requests. (schemathesis 4.32's own test builder: its public entry points are the CLI and
    the pytest plugin, which does not work with this pytest.)"""

    @settings(deadline=None, database=None, suppress_health_check=list(HealthCheck))
    def check(case):
        steer(case)
        response = case.call(headers={"Authorization": f"Bearer {token}"}, timeout=60)
        statuses[response.status_code] += 1
        case.validate_response(response, checks=[not_a_server_error, response_schema_conformance])
        if response.status_code >= 400:
            _error_shape(response)

    create_test(operation=operation, test_func=check,
                config=HypothesisTestConfig(project=schema.config, modes=[HypothesisTestMode.COVERAGE]))()


def operations_in_order(schema) -> list:
    """Every operation, revocation last: the throwaway key stays usable for the operations on it before."""
    return sorted((result.ok() for result in schema.get_all_operations()), key=lambda op: op.path.endswith("/revoke"))


def test_generated_openapi_fuzzed(stack, throwaway):
    schema = load_schema(stack)
    operations = operations_in_order(schema)
    assert len(operations) >= 22 and all(op.path.startswith(("/v1/", "/v2/rerank", "/admin/v1/")) for op in operations)
    known = {**throwaway, "model": TEST_MODEL}
    statuses: Counter[int] = Counter()
    counter = itertools.count()

    def steer(case):
        _steer(case, next(counter), known)

    for operation in operations:
        token = stack["admin_token"] if operation.path.startswith("/admin/") else stack["api_key"]
        cover_operation(schema, operation, token, steer, statuses)
        for mode in _modes(operation):
            fuzz_operation(operation, mode, token, steer, statuses)
    assert statuses[200] > 0 and any(400 <= s < 500 for s in statuses)
    print(f"\nfuzzed {statuses.total()} requests: " + ", ".join(f"{s}x{n}" for s, n in sorted(statuses.items())))
