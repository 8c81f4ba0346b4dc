"""TellerService: what a teller workstation calls."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, TypeAlias

import grpc
from authq.batching import wants_batches
from authq.v1 import common_pb2 as cpb
from authq.v1 import teller_pb2 as tpb
from authq.v1 import teller_pb2_grpc

from server.api import convert, fallback_convert
from server.api.identity import Authenticator
from server.api.session_guard import while_login_holds_each
from server.api.status import translate_errors
from server.api.teller_session import TellerSession, begin_from_header, submit_reply
from server.archive.index import ArchiveIndex
from server.archive.notice import not_found_or_archived
from server.center import Center
from server.errors import InvalidArgument, NotFound
from server.images.api import serve_image
from server.intake import Upload

Context: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"


class TellerServicer(teller_pb2_grpc.TellerServiceServicer):
    def __init__(
        self, center: Center, auth: Authenticator, archive: ArchiveIndex | None = None
    ) -> None:
        # Says "archived" instead of "no such request" once hot keys are removed.
        self.archive = archive
        self.center = center
        self.auth = auth

    @translate_errors
    async def UploadImage(
        self, request_iterator: AsyncIterator[cpb.ImageChunk], context: Context
    ) -> cpb.ImageRef:
        await self.auth.identify(context, "TellerService.UploadImage")
        upload: Upload | None = None
        async for chunk in request_iterator:
            if upload is None:
                upload = begin_from_header(self.center, chunk)
            upload.add(chunk.data)
        if upload is None:
            raise InvalidArgument("header", "the upload ended before any chunk arrived")
        return convert.image_to_pb(await self.center.finish_upload(upload))

    @translate_errors
    async def Submit(self, request: tpb.SubmitRequest, context: Context) -> tpb.SubmitReply:
        identity = await self.auth.identify(context, "TellerService.Submit")
        submission = convert.submission_from_pb(request, identity, self.center.catalog())
        return await submit_reply(self.center, submission, identity)

    @translate_errors
    async def Watch(
        self, request: tpb.WatchRequest, context: Context
    ) -> AsyncIterator[cpb.RequestUpdate]:
        identity = await self.auth.identify(context, "TellerService.Watch")
        convert.check_request_id(request.request_id)
        updates = while_login_holds_each(
            self.center.watch(identity, request.request_id),
            self.auth.login_check(context, identity),
        )
        try:
            async for entry in updates:
                yield convert.entry_to_pb(entry)
        except NotFound:
            raise await not_found_or_archived(
                self.archive, request.request_id, identity.branch_id
            ) from None

    @translate_errors
    async def Get(self, request: tpb.GetRequest, context: Context) -> cpb.RequestView:
        identity = await self.auth.identify(context, "TellerService.Get")
        convert.check_request_id(request.request_id)
        try:
            record = await self.center.get_for_branch(identity, request.request_id)
        except NotFound:
            raise await not_found_or_archived(
                self.archive, request.request_id, identity.branch_id
            ) from None
        return convert.record_to_pb(record)

    @translate_errors
    async def Cancel(self, request: tpb.CancelRequest, context: Context) -> cpb.RequestUpdate:
        identity = await self.auth.identify(context, "TellerService.Cancel")
        convert.check_request_id(request.request_id)
        entry = await self.center.cancel(identity, request.request_id, request.note)
        return convert.entry_to_pb(entry)

    @translate_errors
    async def Supply(self, request: tpb.SupplyRequest, context: Context) -> cpb.RequestUpdate:
        identity = await self.auth.identify(context, "TellerService.Supply")
        convert.check_request_id(request.request_id)
        images = convert.images_from_pb(request.images, "images")
        entry = await self.center.supply(identity, request.request_id, images, request.note)
        return convert.entry_to_pb(entry)

    @translate_errors
    async def GetImage(
        self, request: cpb.RequestImageRequest, context: Context
    ) -> AsyncIterator[cpb.ImageChunk]:
        identity = await self.auth.identify(context, "TellerService.GetImage")
        async for chunk in serve_image(self.center, identity, request):
            yield chunk

    @translate_errors
    async def Session(
        self, request_iterator: AsyncIterator[tpb.TellerSessionIn], context: Context
    ) -> AsyncIterator[tpb.TellerSessionOut]:
        identity = await self.auth.identify(context, "TellerService.Session")
        session = TellerSession(
            self.center, identity, batches=wants_batches(context.invocation_metadata())
        )
        login_holds = self.auth.login_check(context, identity)
        async for message in session.run(request_iterator, login_holds):
            yield message

    @translate_errors
    async def ReportFallbacks(
        self, request: tpb.ReportFallbacksRequest, context: Context
    ) -> tpb.ReportFallbacksReply:
        identity = await self.auth.identify(context, "TellerService.ReportFallbacks")
        fallbacks = fallback_convert.fallbacks_from_pb(request.records)
        results = await self.center.report_fallbacks(identity, fallbacks)
        return tpb.ReportFallbacksReply(
            results=[fallback_convert.result_to_pb(result) for result in results]
        )
