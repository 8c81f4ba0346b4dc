"""What servers and clients of the authq API agree on beyond the .proto files:
chunk sizes, message limits, image hashing and channel options."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

# Images travel in chunks of this size. Per-message overhead dominates small chunks
# (on the reference 2-core machine 1 MB moved as 64 KB chunks ran at about half the
# rate of one 1 MB message), so chunks are large, yet far below gRPC's 4 MB
# default message limit; a typical 200 KB capture travels as a single chunk.
# bench/ measures the choice (scenario `chunk_size`).
CHUNK_BYTES = 512 * 1024

# The largest message either side accepts: one chunk plus headroom for its fields.
MAX_MESSAGE_BYTES = CHUNK_BYTES + 64 * 1024

CHANNEL_OPTIONS: list[tuple[str, int]] = [
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    # Long-lived session streams must notice a dead peer without application traffic.
    ("grpc.keepalive_time_ms", 20_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
]


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def chunks(data: bytes, size: int = CHUNK_BYTES) -> Iterator[bytes]:
    """Splits image bytes into wire chunks without copying them (memoryview slices)."""
    view = memoryview(data)
    for start in range(0, len(view), size):
        yield bytes(view[start : start + size])
