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


def test_get_model_by_id_and_alias(stack):
    client = openai.OpenAI(base_url=stack["base_url"], api_key=stack["api_key"], max_retries=0)
    m = client.models.retrieve("smollm2:135m")  # ':' in the path is part of the id
    assert m.id == "smollm2:135m" and m.object == "model"
    for path in ("HuggingFaceTB/SmolLM2-135M-Instruct", "HuggingFaceTB%2FSmolLM2-135M-Instruct", "smollm2%3A135m"):
        raw = httpx.get(stack["base_url"] + "/models/" + path, timeout=30,
                        headers={"Authorization": f"Bearer {stack['api_key']}"}).json()
        assert raw["id"] == "smollm2:135m" and raw["type"] == "chat" and raw["lifecycle"]["phase"] == "production"
    sunsetting = client.models.retrieve(SUNSETTING_MODEL).model_dump()
    assert sunsetting["lifecycle"]["phase"] == "notice" and sunsetting["lifecycle"]["successor"] == TEST_MODEL
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("no-such-model")


def test_public_lifecycle_endpoint(stack):
    resp = httpx.get(stack["base_url"].removesuffix("/v1") + "/v1/lifecycle", params={"date": "2026-11-23"},
                     timeout=30)  # no key: public, like the reference's status page
    assert resp.status_code == 200
    body = resp.json()
    by_id = {m["id"]: m for m in body["data"]}
    assert body["date"] == "2026-11-23" and len(by_id) > 90
    cogito = by_id["cogito:32b"]["lifecycle"]
    assert cogito == {"phase": "end_of_support", "production_date": "2025-06-13", "end_of_support": "2026-06-30",
                      "notice_start": "2026-03-30", "sunset": "2026-06-30", "lts": False, "successor": "gpt-oss:120b"}
    assert by_id["smollm2:135m"]["served"] is True and by_id["cogito:32b"]["served"] is False
    bad = httpx.get(stack["base_url"] + "/lifecycle", params={"date": "tomorrow"}, timeout=30)
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "date"
