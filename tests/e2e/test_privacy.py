"""No prompt or completion text is written to disk: not in any component's log, not in the databases."""

from __future__ import annotations

import secrets
from pathlib import Path

import openai
import pytest

from tests.support.stack import TEST_MODEL

pytestmark = pytest.mark.e2e


def test_prompt_and_completion_never_reach_disk(stack):
    marker = "confidential" + secrets.token_hex(6)
    client = openai.OpenAI(base_url=stack["base_url"], api_key=stack["api_key"], max_retries=0)
    r = client.chat.completions.create(model=TEST_MODEL, messages=[{"role": "user", "content": f"{marker} plan"}],
                                       max_tokens=16)
    assert marker in r.choices[0].message.content  # the test model echoes it, so the completion holds it too
    list(client.chat.completions.create(model=TEST_MODEL, stream=True, max_tokens=16,
                                        messages=[{"role": "user", "content": f"{marker} stream"}]))
    with pytest.raises(openai.BadRequestError):  # refused requests are not logged either
        client.chat.completions.create(model=TEST_MODEL, temperature=9,
                                       messages=[{"role": "user", "content": f"{marker} refused"}])
    files = [p for p in Path(stack["data_dir"]).rglob("*") if p.is_file()]
    assert any(p.suffix == ".log" for p in files)
    leaked = [str(p) for p in files if marker.encode() in p.read_bytes()]
    assert not leaked, f"prompt text written to {leaked}"
