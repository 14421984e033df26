"""Image parts for a vision chat model (issue 14, point 5): carried through the real Envoy and router to the backend in
the vLLM contract's `image` input, with the model's chat template writing a placeholder for each. The test model is the
deterministic engine in vision mode: it says the size of each image it received and how many placeholders the prompt
has, so the test sees what the backend got. (The OCR model: test_ocr.py.)"""

from __future__ import annotations

import openai
import pytest

from tests.support.pages import data_uri, page

pytestmark = pytest.mark.e2e

VISION_MODEL = "llmaas-test:vision"


@pytest.fixture(scope="module")
def client(stack) -> openai.OpenAI:
    return openai.OpenAI(base_url=stack["base_url"], api_key=stack["api_key"], max_retries=0, timeout=120)


def parts(*uris: str, text: str = "What is on these pages?") -> list[dict]:
    return [{"type": "text", "text": text}] + [{"type": "image_url", "image_url": {"url": u}} for u in uris]


def test_the_images_reach_the_backend_with_a_placeholder_each(client):
    plain = client.chat.completions.create(model=VISION_MODEL, messages=[
        {"role": "user", "content": "What is on these pages?"}])
    assert not plain.choices[0].message.content.startswith("Images:")
    r = client.chat.completions.create(model=VISION_MODEL, messages=[
        {"role": "system", "content": "You read documents."},
        {"role": "user", "content": parts(data_uri(page()))}])
    assert r.choices[0].message.content.startswith("Images: 1000x560; placeholders: 1. Echo:")
    # The backend's own count: the image's 64 tokens and its placeholder are in the prompt.
    assert r.usage.prompt_tokens >= plain.usage.prompt_tokens + 64


def test_several_images_streamed(client):
    small = page("Receipt", ["Coffee 3.50"], size=(400, 300))
    stream = client.chat.completions.create(model=VISION_MODEL, stream=True, stream_options={"include_usage": True},
                                            messages=[{"role": "user", "content": parts(data_uri(page()),
                                                                                        data_uri(small))}])
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.startswith("Images: 1000x560, 400x300; placeholders: 2.")
    assert chunks[-1].usage.prompt_tokens > 128


def test_low_detail_sends_a_512_px_copy(client):
    """`detail: low`: the backend receives the image at most 512 px on its longer side (aspect kept); `high` and
    `auto` send it whole."""
    def seen(detail: str) -> str:
        content = [{"type": "text", "text": "What is on this page?"},
                   {"type": "image_url", "image_url": {"url": data_uri(page()), "detail": detail}}]
        return client.chat.completions.create(model=VISION_MODEL, messages=[{"role": "user", "content": content}]
                                              ).choices[0].message.content

    assert seen("low").startswith("Images: 512x287; placeholders: 1.")
    assert seen("high").startswith("Images: 1000x560;") and seen("auto").startswith("Images: 1000x560;")


def test_tools_and_remote_images_are_refused(client):
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=VISION_MODEL, messages=[{"role": "user", "content": parts(
            data_uri(page()))}], tools=[{"type": "function", "function": {"name": "f"}}])
    assert e.value.param == "tools"  # this model has no tools; one with both refuses images with tools
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=VISION_MODEL, messages=[{"role": "user", "content": parts(
            "https://example.com/page.png")}])
    assert e.value.code == "unsupported_image_url" and e.value.param == "messages[0].content"
