"""Session messages packed into batches (authq/batching.py): the packing rules, the
server reading batches in and sending them only to a client that asked, and the
clients sending and reading them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any

import grpc
import pytest
from authq.batching import BATCHES_METADATA, MAX_MESSAGES, batched, wants_batches
from authq.channel import SessionCallError
from authq.v1 import authorizer_pb2 as apb
from authq.v1 import common_pb2 as cpb
from authq.v1 import teller_pb2 as tpb
from authq.v1 import teller_pb2_grpc

from server.api import teller_session
from tests.conftest import RunningServer
from tests.helpers import request


def _chunk(size: int, tag: str = "") -> cpb.ImageChunk:
    return cpb.ImageChunk(upload_id=tag, data=b"x" * size)


async def _sent(messages: Sequence[cpb.ImageChunk | None], **options: Any) -> list[list[str] | str]:
    """What batched() yields for ``messages`` queued up front: a batch as the list of
    its tags, a lone message as its tag."""
    queue: asyncio.Queue[cpb.ImageChunk | None] = asyncio.Queue()
    for message in messages:
        queue.put_nowait(message)
    return [
        out.upload_id if isinstance(out, cpb.ImageChunk) else out
        async for out in batched(queue, lambda batch: [m.upload_id for m in batch], **options)
    ]


async def test_what_is_queued_together_goes_as_one_batch_in_order() -> None:
    assert await _sent([_chunk(10, "a"), None]) == ["a"]
    assert await _sent([_chunk(10, t) for t in "abc"] + [None]) == [["a", "b", "c"]]
    assert await _sent([_chunk(10, t) for t in "abc"] + [None], enabled=False) == ["a", "b", "c"]


async def test_a_batch_stays_within_its_count_and_byte_limits() -> None:
    many = [_chunk(1, str(i)) for i in range(MAX_MESSAGES + 2)]
    sent = await _sent([*many, None])
    assert sent == [
        [str(i) for i in range(MAX_MESSAGES)],
        [str(MAX_MESSAGES), str(MAX_MESSAGES + 1)],
    ]
    # 100 KB each: two fit under MAX_BYTES, the third starts the next batch.
    big = [_chunk(100_000, t) for t in "abcd"]
    assert await _sent([*big, None]) == [["a", "b"], ["c", "d"]]


async def test_a_message_marked_alone_is_never_batched_and_order_holds() -> None:
    messages = [_chunk(10, t) for t in ("a", "b", "ALONE", "c", "d")]
    sent = await _sent([*messages, None], alone=lambda m: m.upload_id == "ALONE")
    assert sent == [["a", "b"], "ALONE", ["c", "d"]]


async def test_the_end_marker_ends_after_what_was_queued_before_it() -> None:
    sent = await _sent([_chunk(1, "a"), _chunk(1, "b"), None, _chunk(1, "never")])
    assert sent == [["a", "b"]]


def test_only_the_batches_metadata_asks_for_batches() -> None:
    assert wants_batches((*BATCHES_METADATA, ("authorization", "Bearer x")))
    assert not wants_batches((("authorization", "Bearer x"),))
    assert not wants_batches(((BATCHES_METADATA[0][0], "0"),))
    assert not wants_batches(None)


class RawSession:
    """TellerService.Session driven message by message, without the client library."""

    def __init__(self, channel: grpc.aio.Channel, metadata: Sequence[tuple[str, str]]) -> None:
        self.outbox: asyncio.Queue[tpb.TellerSessionIn | None] = asyncio.Queue()
        stub = teller_pb2_grpc.TellerServiceStub(channel)
        self.call = stub.Session(self._outgoing(), metadata=tuple(metadata))

    async def _outgoing(self) -> AsyncIterator[tpb.TellerSessionIn]:
        while (message := await self.outbox.get()) is not None:
            yield message

    async def answers(self, count: int) -> tuple[dict[str, tpb.TellerSessionOut], int]:
        """The first ``count`` answers by ref, and how many stream messages held them."""
        answers: dict[str, tpb.TellerSessionOut] = {}
        received = 0
        while len(answers) < count:
            message = await asyncio.wait_for(self.call.read(), 10)
            received += 1
            inner = message.batch.messages if message.HasField("batch") else [message]
            for one in inner:
                assert one.ref not in answers, f"ref {one.ref} answered twice"
                answers[one.ref] = one
        return answers, received


async def test_the_server_reads_a_batch_as_its_messages_and_batches_its_answers(
    server: RunningServer,
) -> None:
    async with server.teller() as teller:
        raw = RawSession(teller.channel, teller.metadata + BATCHES_METADATA)
        submits = [request() for _ in range(20)]
        inner = [tpb.TellerSessionIn(ref=f"s{i}", submit=m) for i, m in enumerate(submits)]
        nested = tpb.TellerSessionIn(ref="nested", batch=tpb.TellerSessionInBatch())
        empty = tpb.TellerSessionIn(ref="empty")
        raw.outbox.put_nowait(
            tpb.TellerSessionIn(batch=tpb.TellerSessionInBatch(messages=[*inner, nested, empty]))
        )
        answers, received = await raw.answers(22)
        raw.outbox.put_nowait(None)
    for i, message in enumerate(submits):
        answer = answers[f"s{i}"]
        assert answer.WhichOneof("body") == "submitted", answer
        assert answer.submitted.request.request_id == message.request_id
    for ref, field in (("nested", "batch"), ("empty", "body")):
        assert answers[ref].error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
        assert field in answers[ref].error.message
    # Twenty submits land in one pipeline and are answered together.
    assert received < len(answers)


async def test_a_client_that_did_not_ask_gets_one_message_at_a_time(
    server: RunningServer,
) -> None:
    async with server.teller() as teller:
        raw = RawSession(teller.channel, teller.metadata)
        for i in range(20):
            raw.outbox.put_nowait(tpb.TellerSessionIn(ref=f"s{i}", submit=request()))
        answers, received = await raw.answers(20)
        raw.outbox.put_nowait(None)
    assert received == 20
    assert all(answer.WhichOneof("body") == "submitted" for answer in answers.values())


async def test_the_teller_client_sends_a_burst_in_fewer_stream_messages(
    server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    received: list[str | None] = []
    original = teller_session.TellerSession._read

    async def counting(
        self: teller_session.TellerSession, incoming: AsyncIterator[tpb.TellerSessionIn]
    ) -> None:
        async def seen() -> AsyncIterator[tpb.TellerSessionIn]:
            async for message in incoming:
                received.append(message.WhichOneof("body"))
                yield message

        await original(self, seen())

    monkeypatch.setattr(teller_session.TellerSession, "_read", counting)
    async with server.teller() as teller, teller.session() as session:
        messages = [request() for _ in range(30)]
        replies = await asyncio.gather(*(session.submit(m) for m in messages))
    assert [r.request.request_id for r in replies] == [m.request_id for m in messages]
    assert "batch" in received
    assert len(received) < len(messages)


async def test_an_authorizer_batch_is_read_as_its_messages_and_then_credit_stays_single(
    server: RunningServer,
) -> None:
    async with server.teller() as teller, server.authorizer() as authorizer:
        rids = [(await teller.submit(request())).request.request_id for _ in range(2)]
        async with authorizer.session() as console:
            batch = apb.AuthorizerSessionIn(
                batch=apb.AuthorizerSessionInBatch(
                    messages=[apb.AuthorizerSessionIn(ref="c1", credit=1)] * 2
                )
            )
            console.send("", batch=batch.batch)
            offers = [await asyncio.wait_for(console.offers.get(), 5) for _ in range(2)]
            assert sorted(o.request.request_id for o in offers) == sorted(rids)
            decisions = await asyncio.gather(
                *(console.decide(o.request.request_id, o.lease.fencing_token, "approve")
                  for o in offers)
            )  # fmt: skip
            assert all(d.state == cpb.REQUEST_STATE_APPROVED for d in decisions)
            # The envelope cannot carry then_credit: it belongs to a decide or release.
            refused = console.expect("envelope")
            console.send("envelope", batch=batch.batch, then_credit=1)
            with pytest.raises(SessionCallError) as caught:
                await asyncio.wait_for(refused, 5)
            assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
            assert "then_credit" in caught.value.message
