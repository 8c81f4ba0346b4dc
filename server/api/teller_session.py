"""One teller workstation's session stream.

Messages in are handled concurrently (up to MAX_IN_FLIGHT at once), so one stream
carries a workstation's whole traffic at stream-message cost rather than a unary
call's; the submits of a burst, with those of every other stream and unary call of
the process, go to Redis together: whatever is sent in one event-loop turn leaves
in one write (server/store/redis_pipe.py), each still answered on its own. Every request
submitted or watched on the session is followed: its changes are pushed until it
reaches a final state."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Sequence

from authq.batching import batched, unpacked
from authq.v1 import common_pb2 as cpb
from authq.v1 import teller_pb2 as tpb

from server.api import convert
from server.api.session_guard import LoginCheck, watch_login
from server.api.status import refused
from server.center import Center, Identity
from server.domain.records import HistoryEntry, Submission
from server.domain.states import FINAL_STATES
from server.errors import AuthqError, InvalidArgument, OnsiteFallbackRequired
from server.events import Resync, WatchItem
from server.intake import Upload

MAX_IN_FLIGHT = 256
FINAL_PB_STATES = frozenset(convert.state_value(state) for state in FINAL_STATES)
MAX_OPEN_UPLOADS = 16


class TellerSession:
    def __init__(self, center: Center, identity: Identity, batches: bool = False) -> None:
        self.center = center
        self.identity = identity
        self.batches = batches  # the client reads batches (authq.batching)
        self.out: asyncio.Queue[tpb.TellerSessionOut | None] = asyncio.Queue()
        self.events: asyncio.Queue[WatchItem] = asyncio.Queue()
        self.seen: dict[str, int] = {}  # followed request -> last version sent
        self.uploads: dict[str, Upload] = {}
        self.slots = asyncio.Semaphore(MAX_IN_FLIGHT)
        self.tasks: set[asyncio.Task[None]] = set()
        # Why the login no longer holds (session_guard.py): the stream ends with it.
        self.ended: AuthqError | None = None
        # Why the reader stopped before the client closed its side (a message that
        # does not parse): the stream ends with it.
        self.failure: Exception | None = None

    async def run(
        self, incoming: AsyncIterator[tpb.TellerSessionIn], login_holds: LoginCheck
    ) -> AsyncIterator[tpb.TellerSessionOut]:
        reader = asyncio.create_task(self._read(incoming))
        pump = asyncio.create_task(self._pump())
        guard = asyncio.create_task(watch_login(login_holds, self._end))
        try:
            async for message in batched(self.out, _out_batch, enabled=self.batches):
                yield message
        finally:
            for task in (reader, pump, guard, *self.tasks):
                task.cancel()
            for request_id in list(self.seen):
                self._unfollow(request_id)
        if self.ended is not None:
            raise self.ended
        if self.failure is not None:
            raise self.failure

    def _end(self, refusal: AuthqError) -> None:
        self.ended = refusal
        self.out.put_nowait(None)

    async def _read(self, incoming: AsyncIterator[tpb.TellerSessionIn]) -> None:
        try:
            async for received in incoming:
                for message in unpacked(received):
                    await self._handle(message)
        except Exception as exc:
            # Nobody awaits this task: unsaid, the stream would stay open with no
            # reader, answering nothing. What is in flight is still answered.
            self.failure = exc
        # The client closed its side (or sent what cannot be read): finish what is in
        # flight, then end the stream.
        while self.tasks:
            await asyncio.gather(*self.tasks, return_exceptions=True)
        self.out.put_nowait(None)

    async def _handle(self, message: tpb.TellerSessionIn) -> None:
        body = message.WhichOneof("body")
        if body == "chunk":
            self._chunk(message.ref, message.chunk)
        elif body == "submit":
            await self._spawn(message.ref, self._submit(message.ref, message.submit))
        elif body == "cancel":
            await self._spawn(message.ref, self._cancel(message.ref, message.cancel))
        elif body == "supply":
            await self._spawn(message.ref, self._supply(message.ref, message.supply))
        elif body == "watch":
            await self._spawn(message.ref, self._watch(message.ref, message.watch))
        elif body == "batch":  # only reached inside a batch
            self._error(message.ref, InvalidArgument("batch", "a batch cannot hold batches"))
        else:
            self._error(message.ref, InvalidArgument("body", "empty session message"))

    async def _spawn(self, ref: str, work: Awaitable[None]) -> None:
        await self.slots.acquire()

        async def guarded() -> None:
            try:
                await work
            except Exception as exc:
                self._error(ref, exc)
            finally:
                self.slots.release()

        task = asyncio.create_task(guarded())
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def _error(self, ref: str, exc: BaseException) -> None:
        self.out.put_nowait(tpb.TellerSessionOut(ref=ref, error=refused(exc).session_error()))

    # -- uploads: chunks of one upload arrive in order, so they are handled inline --

    def _chunk(self, ref: str, chunk: cpb.ImageChunk) -> None:
        upload_id = chunk.upload_id or ref
        try:
            upload = self.uploads.get(upload_id)
            if upload is None:
                if len(self.uploads) >= MAX_OPEN_UPLOADS:
                    raise InvalidArgument("chunk", f"at most {MAX_OPEN_UPLOADS} open uploads")
                upload = begin_from_header(self.center, chunk)
                self.uploads[upload_id] = upload
            upload.add(chunk.data)
        except Exception as exc:
            self.uploads.pop(upload_id, None)
            self._error(ref, exc)
            return
        if upload.complete:
            del self.uploads[upload_id]
            task = asyncio.create_task(self._finish_upload(ref, upload))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def _finish_upload(self, ref: str, upload: Upload) -> None:
        try:
            image = await self.center.finish_upload(upload)
        except Exception as exc:
            self._error(ref, exc)
            return
        self.out.put_nowait(tpb.TellerSessionOut(ref=ref, uploaded=convert.image_to_pb(image)))

    # -- requests --------------------------------------------------------------------

    async def _submit(self, ref: str, request: tpb.SubmitRequest) -> None:
        submission = convert.submission_from_pb(request, self.identity, self.center.catalog())
        rid = submission.request_id
        # Follow before storing, so no change slips past; version 1 is the reply itself.
        # A request the session already follows (submitted or watched before) stays
        # followed whatever this submit comes to: only a follow it added is undone.
        added = rid not in self.seen
        self._follow(rid, version=1)
        try:
            reply = await submit_reply(self.center, submission, self.identity)
        except BaseException:
            if added:
                self._unfollow(rid)
            raise
        self.out.put_nowait(tpb.TellerSessionOut(ref=ref, submitted=reply))
        if reply.HasField("fallback"):  # nothing was stored (R8)
            if added:
                self._unfollow(rid)
            return
        if rid not in self.seen:  # its final change was pushed while this waited
            return
        self.seen[rid] = max(self.seen[rid], reply.request.version)
        if reply.request.state in FINAL_PB_STATES:
            self._unfollow(rid)

    async def _watch(self, ref: str, request: tpb.WatchRequest) -> None:
        rid = convert.check_request_id(request.request_id)
        await self.center.get_for_branch(self.identity, rid)  # may the caller see it?
        self._follow(rid, version=0)
        await self._catch_up(rid, ref)

    async def _cancel(self, ref: str, request: tpb.CancelRequest) -> None:
        convert.check_request_id(request.request_id)
        entry = await self.center.cancel(self.identity, request.request_id, request.note)
        self.out.put_nowait(tpb.TellerSessionOut(ref=ref, update=convert.entry_to_pb(entry)))

    async def _supply(self, ref: str, request: tpb.SupplyRequest) -> None:
        convert.check_request_id(request.request_id)
        images = convert.images_from_pb(request.images, "images")
        entry = await self.center.supply(self.identity, request.request_id, images, request.note)
        self.out.put_nowait(tpb.TellerSessionOut(ref=ref, update=convert.entry_to_pb(entry)))

    # -- pushing changes -------------------------------------------------------------

    def _follow(self, request_id: str, version: int) -> None:
        if request_id not in self.seen:
            self.seen[request_id] = version
            self.center.hub.add_watch(request_id, self.events)

    def _unfollow(self, request_id: str) -> None:
        if self.seen.pop(request_id, None) is not None:
            self.center.hub.remove_watch(request_id, self.events)

    def _send(self, entry: HistoryEntry, ref: str = "") -> bool:
        """Pushes a change of a followed request the session has not seen; whether it
        did."""
        seen = self.seen.get(entry.request_id)
        if seen is None or entry.version <= seen:
            return False
        self.seen[entry.request_id] = entry.version
        self.out.put_nowait(tpb.TellerSessionOut(ref=ref, update=convert.entry_to_pb(entry)))
        if entry.state.is_final:
            self._unfollow(entry.request_id)
        return True

    async def _catch_up(self, request_id: str, ref: str = "") -> None:
        """Sends what the session has not seen of a request, from Redis. A request
        just followed (version 0) starts from its latest change. A watch (``ref``) is
        answered with the latest change even when the session has sent it already (it
        followed the request before, or a push got there first): a watch always has an
        answer."""
        history = (await self.center.store.get(request_id)).history
        if self.seen.get(request_id) == 0:
            history = history[-1:]
        *older, latest = history
        for entry in older:
            self._send(entry)
        if not self._send(latest, ref) and ref:
            self.out.put_nowait(tpb.TellerSessionOut(ref=ref, update=convert.entry_to_pb(latest)))

    async def _pump(self) -> None:
        while True:
            item = await self.events.get()
            if isinstance(item, Resync):
                for request_id in list(self.seen):
                    with contextlib.suppress(Exception):
                        await self._catch_up(request_id)
                continue
            seen = self.seen.get(item.request_id)
            if seen is None or item.version <= seen:
                continue
            if seen > 0 and item.version == seen + 1:
                self._send(item)
            else:
                with contextlib.suppress(Exception):
                    await self._catch_up(item.request_id)


def _out_batch(messages: Sequence[tpb.TellerSessionOut]) -> tpb.TellerSessionOut:
    return tpb.TellerSessionOut(batch=tpb.TellerSessionOutBatch(messages=messages))


def begin_from_header(center: Center, chunk: cpb.ImageChunk) -> Upload:
    if not chunk.HasField("header"):
        raise InvalidArgument("header", "the first chunk of an upload must carry the header")
    header = chunk.header
    kind = convert.kind_name(header.kind, "header.kind")
    return center.begin_upload(kind, header.sha256, header.size_bytes)


async def submit_reply(
    center: Center, submission: Submission, identity: Identity
) -> tpb.SubmitReply:
    """The answer to a submission: the stored request, or during an emergency (R8) the
    fallback telling the teller to authorize on site, which is not an error."""
    try:
        record, duplicate = await center.submit(submission, identity)
    except OnsiteFallbackRequired as exc:
        emergency = await center.fallback(exc)
        return tpb.SubmitReply(
            fallback=tpb.OnsiteFallback(
                emergency_id=emergency.emergency_id,
                reason=emergency.reason,
                declared_at_ms=emergency.declared_at_ms,
            )
        )
    return tpb.SubmitReply(request=convert.record_to_pb(record), duplicate=duplicate)
