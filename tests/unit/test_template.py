import pytest
from llmaas.catalog.entries import load_catalog
from llmaas.common.errors import ApiError
from llmaas.router.params import Message
from llmaas.router.template import render_prompt
from llmaas.stack.paths import DEFAULT_CATALOG


def test_smollm2_template_renders_chatml_with_generation_prompt():
    entry = load_catalog([DEFAULT_CATALOG]).lookup("smollm2:135m")
    prompt = render_prompt(entry.chat_template, (Message("user", "Bonjour"),))
    assert prompt.startswith("<|im_start|>system\n")  # the model's default system prompt
    assert prompt.endswith("<|im_start|>user\nBonjour<|im_end|>\n<|im_start|>assistant\n")


def test_template_refusal_is_a_client_error():
    tpl = "{% if messages[0]['role'] != 'user' %}{{ raise_exception('first must be user') }}{% endif %}x"
    with pytest.raises(ApiError) as e:
        render_prompt(tpl, (Message("assistant", "a"),))
    assert e.value.param == "messages" and "first must be user" in e.value.message


def test_sandbox_blocks_unsafe_templates():
    with pytest.raises(ApiError) as e:
        render_prompt("{{ ''.__class__.__mro__ }}", (Message("user", "a"),))
    assert e.value.type == "server_error"
