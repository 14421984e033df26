"""Process settings every service's latency and CPU depend on."""

from __future__ import annotations

import gc


def settle() -> None:
    """Moves everything start-up built (modules, protobuf descriptors, models, the gRPC server: 100 000 objects and
    more) out of the garbage collector's reach. A full collection otherwise walks the whole heap (about 70 ms in the
    guard) inside whatever request happened to trigger it, and each younger collection still scans what start-up left
    in its generation; frozen, collections walk only what requests left behind. llmaas.common.server.serve calls it
    once the service serves; the guard again when a model built after start is loaded; benches call it as the
    services do."""
    gc.collect()
    gc.freeze()
