"""OpenAI's own description of its API (tests/e2e/openai-openapi.yaml: openai/openai-openapi, MIT licence, snapshot of
2026-08-21, vendored unchanged), fuzzed by schemathesis against the real stack for the endpoints we implement: never a server error, every error in OpenAI's shape. A share
of the generated chat requests name the served test model, so generated values reach the model, not only the
catalogue's 404."""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from tests.support.stack import TEST_MODEL

pytestmark = pytest.mark.e2e

SPEC = Path(os.environ.get("LLMAAS_OPENAI_SPEC", Path(__file__).with_name("openai-openapi.yaml")))
IMPLEMENTED = (r"^/(chat/completions|models|models/\{model\}|embeddings|files|files/\{file_id\}|files/\{file_id\}/content"
               r"|batches|batches/\{batch_id\}|batches/\{batch_id\}/cancel)$")
EMBEDDING_MODEL = "all-minilm:22m"
EXAMPLES = int(os.environ.get("LLMAAS_FUZZ_EXAMPLES", "60"))


_bodies = itertools.count()


@schemathesis.hook
def map_body(context, body):
    # Every other chat request names the served model: its other generated fields then reach validation and Triton.
    if isinstance(body, dict) and "messages" in body and next(_bodies) % 2 == 0:
        body["model"] = TEST_MODEL
    elif isinstance(body, dict) and "input" in body and next(_bodies) % 2 == 0:
        body["model"] = EMBEDDING_MODEL
        # OpenAI's schema describes `embedding` as numbers only, though its API (and ours) answers base64 with a
        # string: the served model's answers are checked in float (base64: tests/e2e/test_embeddings.py).
        if body.get("encoding_format") == "base64":
            body["encoding_format"] = "float"
    return body


def test_no_server_error_and_errors_in_openai_shape(stack):
    schema = schemathesis.openapi.from_path(SPEC)
    schema.config.update(base_url=stack["base_url"], headers={"Authorization": f"Bearer {stack['api_key']}"})
    operations = [result.ok() for result in schema.include(path_regex=IMPLEMENTED).get_all_operations()]
    assert {f"{op.method.upper()} {op.path}" for op in operations} >= {"POST /chat/completions", "GET /models"}
    statuses: list[int] = []
    for operation in operations:
        # The pytest plugin's parametrize does not work with this pytest; hypothesis drives the cases directly.
        @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
                  suppress_health_check=list(HealthCheck))
        @given(case=operation.as_strategy())
        def fuzz(case):
            response = case.call(timeout=60)
            statuses.append(response.status_code)
            case.validate_response(response, checks=[not_a_server_error, response_schema_conformance])
            if response.status_code >= 400:
                error = response.json()["error"]
                assert set(error) >= {"message", "type", "param", "code"} and error["message"], response.text

        fuzz()
    assert 200 in statuses  # the served model was reached, not only refused
    print(f"\nfuzzed {len(statuses)} requests: " + ", ".join(f"{s}x{statuses.count(s)}" for s in sorted(set(statuses))))
