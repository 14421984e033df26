"""Chat templates, rendered here because Triton's vLLM backend applies none: the router sends the full prompt.

Templates are the model's own Jinja2 (as in its tokenizer config), run in a sandbox with the same conventions as
Hugging Face transformers (trim_blocks, lstrip_blocks, raise_exception, add_generation_prompt).
"""

from __future__ import annotations

import functools

from jinja2 import TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from llmaas.common.errors import internal_error, invalid_request
from llmaas.router import tool_prompt
from llmaas.router.params import Message
from llmaas.router.tools import ToolSpec


class _TemplateRaised(Exception):
    pass


def _raise_exception(message: str):
    raise _TemplateRaised(message)


@functools.lru_cache(maxsize=64)
def _compile(source: str):
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = _raise_exception
    return env.from_string(source)


def _content_view(message: Message) -> str | list[dict]:
    """A message's content as the template sees it: its text, or, with images, the parts list of Hugging Face's
    vision templates (an `{"type": "image"}` part where each image goes, then the text), which write the model's
    image placeholder for each image part; the images themselves travel in the contract's `image` input."""
    if not message.images:
        return message.content
    return [{"type": "image"} for _ in message.images] + [{"type": "text", "text": message.content}]


def render_prompt(template: str, messages: tuple[Message, ...], bos_token: str = "", eos_token: str = "",
                  tools: ToolSpec | None = None, reasoning_effort: str = "") -> str:
    """`tools`: a conversation with tools (or with calls in its history) is rendered as llmaas.router.tool_prompt
    says: by the template itself if it knows tools, else in the Hermes format. `reasoning_effort` (only for a model
    whose catalogue entry takes it): a template variable, as transformers' apply_chat_template passes it (gpt-oss's
    template writes it into the system message); undefined when the request has none, so the template's default
    holds."""
    if not template:
        raise internal_error()
    extra = {"reasoning_effort": reasoning_effort} if reasoning_effort else {}
    if tools is None and not any(m.tool_calls or m.role == "tool" for m in messages):
        views = [{"role": m.role, "content": _content_view(m)} for m in messages]
    elif tool_prompt.template_knows_tools(template):
        views = tool_prompt.structured(messages)
        if tools is not None and tools.renders_tools:
            extra["tools"] = tools.definitions()
    else:
        views = tool_prompt.hermes(messages, tools)
    try:
        return _compile(template).render(
            messages=views, add_generation_prompt=True, bos_token=bos_token, eos_token=eos_token, **extra)
    except _TemplateRaised as e:
        # The model's template refuses this conversation (e.g. roles out of order): the client's to fix.
        raise invalid_request(f"Invalid 'messages' for this model: {e}", param="messages",
                              code="invalid_conversation") from None
    except TemplateError:
        raise internal_error() from None
