"""Process settings the guard's latency depends on."""

from __future__ import annotations

import gc


def settle() -> None:
    """Moves everything start-up built (modules, the model, the gRPC server: about 130 000 objects) out of the
    garbage collector's reach. A full collection otherwise walks the whole heap, about 70 ms, inside whatever request
    happened to trigger it; frozen, it walks only what requests left behind. The service calls it once it serves and
    again when a model built after start is loaded; bench/guard_rules.py calls it as the service does."""
    gc.collect()
    gc.freeze()
