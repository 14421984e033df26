"""OCR through chat completions, as the reference serves its OCR models (issue 14, point 5): a scanned page sent as an
image part through the real Envoy with the unmodified `openai` SDK comes back as Markdown, streamed or not, with its
usage; the image checks give OpenAI-shaped 400s and a 413. The page is drawn here with Pillow, so the expected text
is known."""

from __future__ import annotations

import re
import secrets

import httpx
import openai
import pytest

from tests.e2e.test_metering import new_key, new_tenant, settled_usage
from tests.support.pages import LINES, TITLE, data_uri, page
from tests.support.stack import TEST_MODEL

pytestmark = pytest.mark.e2e

OCR_MODEL = "ppocr:v4"
INSTRUCTION = "Convert the document to markdown."
def message(*uris: str, text: str = INSTRUCTION) -> list[dict]:
    parts = [{"type": "text", "text": text}] + [{"type": "image_url", "image_url": {"url": u}} for u in uris]
    return [{"role": "user", "content": parts}]


def words(text: str) -> list[str]:
    return re.findall(r"[\w@.,:]+", text.lower())


def recognised(expected: str, got: str) -> float:
    """The share of the expected words found in the answer (OCR may merge or split a space)."""
    want = words(expected)
    flat = "".join(words(got))
    return sum(1 for w in want if w in flat) / len(want)


@pytest.fixture(scope="module")
def client(stack) -> openai.OpenAI:
    return openai.OpenAI(base_url=stack["base_url"], api_key=stack["api_key"], max_retries=0, timeout=120)


def test_a_scanned_page_comes_back_as_markdown_with_its_usage(client):
    r = client.chat.completions.create(model=OCR_MODEL, messages=message(data_uri(page())), temperature=0.0)
    text = r.choices[0].message.content
    assert r.choices[0].finish_reason == "stop"
    assert text.startswith("# ") and recognised(TITLE, text.splitlines()[0]) == 1.0  # the large title is a heading
    for line in LINES:
        assert recognised(line, text) >= 0.8, (line, text)
    # Usage: the image's vision tokens (1000 px on its longer side: the reference's Base mode, 256) and the
    # instruction's tokens in; the Markdown's tokens out.
    assert 256 < r.usage.prompt_tokens < 256 + 20
    assert 10 < r.usage.completion_tokens < len(text)


def test_streamed_the_same_text_and_the_simplified_image_form(client, stack):
    uri = data_uri(page())
    whole = client.chat.completions.create(model=OCR_MODEL, messages=message(uri)).choices[0].message.content
    chunks = list(client.chat.completions.create(model=OCR_MODEL, messages=message(uri), stream=True,
                                                 stream_options={"include_usage": True}))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == whole
    assert chunks[-1].usage.completion_tokens > 0
    # The reference's {"type": "image", "image": "data:..."} form.
    body = {"model": OCR_MODEL, "messages": [{"role": "user", "content": [{"type": "image", "image": uri}]}]}
    resp = httpx.post(stack["base_url"] + "/chat/completions", json=body, timeout=120,
                      headers={"Authorization": f"Bearer {stack['api_key']}"})
    assert resp.status_code == 200, resp.text
    assert resp.json()["choices"][0]["message"]["content"] == whole


def test_several_pages_in_order_and_max_tokens_cuts(client):
    second = page("Annex", ["Signed in Paris on 3 March 2026."])
    r = client.chat.completions.create(model=OCR_MODEL, messages=message(data_uri(page()), data_uri(second)))
    first, _, annex = r.choices[0].message.content.partition("\n\n---\n\n")
    assert recognised(LINES[0], first) >= 0.8 and recognised("Signed in Paris on 3 March 2026.", annex) >= 0.8
    cut = client.chat.completions.create(model=OCR_MODEL, messages=message(data_uri(page())), max_tokens=3)
    assert cut.choices[0].finish_reason == "length" and cut.usage.completion_tokens == 3


def test_billed_as_the_usage_says(stack):
    tenant_id = new_tenant(stack, f"ocr-{secrets.token_hex(3)}")
    _, key = new_key(stack, tenant_id)
    client = openai.OpenAI(base_url=stack["base_url"], api_key=key, max_retries=0, timeout=120)
    r = client.chat.completions.create(model=OCR_MODEL, messages=message(data_uri(page())))
    total = settled_usage(stack, tenant_id, 1)
    assert int(total["prompt_tokens"]) == r.usage.prompt_tokens
    assert int(total["completion_tokens"]) == r.usage.completion_tokens


def error(resp: httpx.Response, status: int, code: str, param: str | None = None) -> dict:
    assert resp.status_code == status, resp.text
    err = resp.json()["error"]
    assert err["code"] == code and (param is None or err["param"] == param), err
    return err


def post(stack, messages: list[dict], **extra) -> httpx.Response:
    return httpx.post(stack["base_url"] + "/chat/completions", json={"model": OCR_MODEL, "messages": messages, **extra},
                      timeout=120, headers={"Authorization": f"Bearer {stack['api_key']}"})


def test_bad_images_are_refused_before_any_work(stack):
    param = "messages[0].content"
    error(post(stack, message("https://example.com/scan.png")), 400, "unsupported_image_url", param)
    error(post(stack, message("data:image/png;base64,@@not base64@@")), 400, "invalid_image", param)
    error(post(stack, message(data_uri(b"GIF89a not really an image"))), 400, "invalid_image", param)
    error(post(stack, [{"role": "user", "content": INSTRUCTION}]), 400, "missing_image", "messages")
    error(post(stack, message(data_uri(page())), tools=[{"type": "function", "function": {"name": "f"}}]),
          400, "unsupported_parameter", "tools")
    # Over 10 MiB of image (within the edge's 16 MiB body): a 413, as the reference answers.
    big = page(size=(1000, 560)) + b"\0" * (10 * 1024 * 1024)
    err = error(post(stack, message(data_uri(big))), 413, "image_too_large", param)
    assert "10 MiB" in err["message"]
    # A text-only chat model refuses images, as before.
    resp = httpx.post(stack["base_url"] + "/chat/completions", timeout=60,
                      json={"model": TEST_MODEL, "messages": message(data_uri(page()))},
                      headers={"Authorization": f"Bearer {stack['api_key']}"})
    error(resp, 400, "unsupported_content", "messages")
