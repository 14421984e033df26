"""Models at the end of their life: served with Deprecation, Sunset and Link headers, or refused once retired."""

from __future__ import annotations

import httpx
import openai
import pytest

from tests.support.stack import SUNSETTING_MODEL, TEST_MODEL

pytestmark = pytest.mark.e2e

BODY = {"model": SUNSETTING_MODEL, "messages": [{"role": "user", "content": "still there?"}], "max_tokens": 3}


def _post(stack, **extra) -> httpx.Response:
    return httpx.post(stack["base_url"] + "/chat/completions", json={**BODY, **extra}, timeout=60,
                      headers={"Authorization": f"Bearer {stack['api_key']}"})


@pytest.mark.parametrize("stream", [False, True])
def test_model_in_notice_carries_deprecation_headers(stack, stream):
    resp = _post(stack, stream=stream)
    assert resp.status_code == 200
    assert resp.headers["x-llmaas-model-phase"] == "notice"
    assert resp.headers["deprecation"].startswith("@") and resp.headers["sunset"].endswith("GMT")
    assert resp.headers["link"] == f'</v1/models/{TEST_MODEL}>; rel="successor-version"'


def test_model_in_production_carries_no_deprecation(stack):
    resp = _post(stack, model=TEST_MODEL)
    assert resp.status_code == 200 and "deprecation" not in resp.headers and "sunset" not in resp.headers


def test_retired_model_names_its_migration(stack):
    client = openai.OpenAI(base_url=stack["base_url"], api_key=stack["api_key"], max_retries=0)
    # cogito:32b reached its end of support on 2026-06-30; the reference recommends gpt-oss:120b.
    with pytest.raises(openai.NotFoundError) as e:
        client.chat.completions.create(model="cogito:32b", messages=BODY["messages"])
    assert e.value.code == "model_retired" and "gpt-oss:120b" in e.value.message
