"""Session messages packed into batches, for both ends of the session streams.

A stream message costs the same fixed work on both sides whatever it holds (in the
gRPC core, its poller thread and the event loop), and a stream carries one message at
a time: the next is written only once the last has gone. Under load, answers and
updates pile up behind that write; sending whatever is waiting as one batch pays the
fixed cost once and lets the queue drain at the rate it fills. Nothing waits to form
a batch: a message alone in the queue goes out alone, so at low load nothing changes.
bench/ measures the effect (the full cycle and the session submit)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, Final, Protocol, TypeVar

# Call metadata by which a client asks the server to batch what it sends.
BATCHES_KEY: Final = "authq-session-batches"
BATCHES_METADATA: Final = ((BATCHES_KEY, "1"),)

MAX_MESSAGES: Final = 64
# Far below wire.MAX_MESSAGE_BYTES, which a batch must never reach.
MAX_BYTES: Final = 256 * 1024


class SizedMessage(Protocol):
    def ByteSize(self) -> int: ...


M = TypeVar("M", bound=SizedMessage)
B = TypeVar("B")


async def batched(
    queue: asyncio.Queue[M | None],
    wrap: Callable[[Sequence[M]], B],
    *,
    enabled: bool = True,
    alone: Callable[[M], bool] = lambda message: False,
) -> AsyncIterator[M | B]:
    """The messages of ``queue`` until its end marker (None): each one alone, or with
    the ones already queued behind it wrapped by ``wrap`` into one batch, within
    MAX_MESSAGES and MAX_BYTES. A message for which ``alone`` is true (an image chunk)
    is never batched."""
    carried: M | None = None
    ended = False
    while not ended:
        if carried is not None:
            message, carried = carried, None
        else:
            got = await queue.get()
            if got is None:
                return
            message = got
        if not enabled or queue.empty() or alone(message):
            yield message
            continue
        batch = [message]
        size = message.ByteSize()
        while len(batch) < MAX_MESSAGES and not queue.empty():
            more = queue.get_nowait()
            if more is None:
                ended = True
                break
            more_size = more.ByteSize()
            if alone(more) or size + more_size > MAX_BYTES:
                carried = more
                break
            batch.append(more)
            size += more_size
        yield wrap(batch) if len(batch) > 1 else batch[0]


def unpacked(message: B) -> Sequence[B]:
    """The messages a received message stands for: a batch's, in order, or itself."""
    received: Any = message
    if received.WhichOneof("body") == "batch":
        inner: Sequence[B] = received.batch.messages
        return inner
    return (message,)


def wants_batches(metadata: Sequence[tuple[str, str | bytes]] | None) -> bool:
    """Whether a call's metadata asks for batches."""
    return any(key == BATCHES_KEY and value == "1" for key, value in metadata or ())
