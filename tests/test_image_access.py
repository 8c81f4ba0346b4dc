"""Who may look at a request's images (R13, R14), in which rendition, and that every
look (and every refusal) is in the audit trail."""

from __future__ import annotations

import asyncio
import io
import time

import grpc
import pytest
from PIL import Image, ImageChops, ImageStat

from server.accounts.model import Role
from server.domain.states import State
from server.images.jpeg_bare import without_metadata
from server.images.renditions import THUMBNAIL_SIDE
from server.images.views import Rendition, plain_rendition
from teller_client.client import TellerClient
from tests.conftest import PASSWORD, RunningServer, StartServer
from tests.helpers import request, standard_images


def _decoded(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data)).convert("RGB")


def _mean_difference(a: Image.Image, b: Image.Image) -> float:
    return sum(ImageStat.Stat(ImageChops.difference(a, b)).mean) / 3


async def test_holder_gets_watermarked_renditions_never_the_original(
    server: RunningServer,
) -> None:
    async with server.teller() as teller, server.authorizer() as authorizer:
        rid = (await teller.submit(request())).request.request_id
        offer = await authorizer.next(timeout=10)
        sha = offer.request.images[0].sha256
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await authorizer.image(rid, sha, "original")
        assert refused.value.code() is grpc.StatusCode.PERMISSION_DENIED
        assert "not the original capture (R14)" in (refused.value.details() or "")
        preview = await authorizer.image(rid, sha, "preview")
        thumbnail = await authorizer.image(rid, sha, "thumbnail")
    blobs = server.runtime.center.blobs
    plain_preview = await plain_rendition(blobs, sha, Rendition.PREVIEW)
    plain_thumb = await blobs.get_rendition(sha, "thumbnail")
    # The synthetic ID card is 1600x1010 and upright: the original is its own preview
    # (made when viewed, never stored), the thumbnail shrinks it.
    assert plain_preview == without_metadata(await blobs.get(sha))
    with pytest.raises(FileNotFoundError):
        await blobs.get_rendition(sha, "preview")
    assert _decoded(preview).size == (1600, 1010)
    assert _decoded(thumbnail).size == (THUMBNAIL_SIDE, 202)
    assert preview != plain_preview
    assert thumbnail != plain_thumb
    # The stamp changes the picture visibly, beyond JPEG re-encoding noise (~1 level).
    assert _mean_difference(_decoded(preview), _decoded(plain_preview)) > 3
    assert _mean_difference(_decoded(thumbnail), _decoded(plain_thumb)) > 3


async def test_supervisor_and_the_branch_may_look(server: RunningServer) -> None:
    await server.account("reviewer-1", [Role.ONSITE_REVIEWER], "branch-1")
    async with server.teller() as teller, server.supervisor() as supervisor:
        rid = (await teller.submit(request())).request.request_id
        sha = (await teller.get(rid)).images[1].sha256
        by_teller = await teller.image(rid, sha, "thumbnail")
        by_supervisor = await supervisor.supervisor_image(rid, sha, "preview")
        async with TellerClient(server.target, "reviewer-1", PASSWORD) as reviewer:
            by_reviewer = await reviewer.image(rid, sha, "original")
    assert _decoded(by_teller).size[0] == THUMBNAIL_SIDE
    assert _decoded(by_supervisor).size[0] == 1600
    assert by_reviewer == standard_images()[1][1]
    await server.runtime.center.flush_audit()
    seen = {
        (r.entry.action, r.entry.actor, r.entry.details.get("rendition"), r.entry.outcome)
        async for r in server.runtime.audit.read()
    }
    assert ("IMAGE_VIEW", "teller-1", "THUMBNAIL", "OK") in seen
    assert ("IMAGE_VIEW", "supervisor-1", "PREVIEW", "OK") in seen
    assert ("IMAGE_VIEW", "reviewer-1", "ORIGINAL", "OK") in seen


async def test_others_are_refused_naming_the_rule(server: RunningServer) -> None:
    async with (
        server.teller() as teller,
        server.teller("teller-2", "branch-2") as stranger,
        server.authorizer() as holder,
        server.authorizer("authorizer-2") as other,
    ):
        rid = (await teller.submit(request())).request.request_id
        offer = await holder.next(timeout=10)
        sha = offer.request.images[0].sha256
        with pytest.raises(grpc.aio.AioRpcError) as not_holder:
            await other.image(rid, sha, "preview")
        with pytest.raises(grpc.aio.AioRpcError) as other_branch:
            await stranger.image(rid, sha, "preview")
        with pytest.raises(grpc.aio.AioRpcError) as wrong_service:
            await other.supervisor_image(rid, sha, "preview")
    for refused in (not_holder, other_branch, wrong_service):
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "R13" in (refused.value.details() or "")
    assert "not held by authorizer-2" in (not_holder.value.details() or "")
    assert "another branch" in (other_branch.value.details() or "")
    await server.runtime.center.flush_audit()
    refusals = {
        (r.entry.action, r.entry.actor)
        async for r in server.runtime.audit.read()
        if r.entry.outcome != "OK"
    }
    assert ("IMAGE_VIEW", "authorizer-2") in refusals
    assert ("IMAGE_VIEW", "teller-2") in refusals


async def test_bad_rendition_and_unknown_image(server: RunningServer) -> None:
    async with server.teller() as teller, server.authorizer() as authorizer:
        rid = (await teller.submit(request())).request.request_id
        await authorizer.next(timeout=10)
        with pytest.raises(grpc.aio.AioRpcError) as unknown:
            await authorizer.image(rid, "ab" * 32, "preview")
        with pytest.raises(grpc.aio.AioRpcError) as malformed:
            await authorizer.image(rid, "not-a-hash", "preview")
    assert malformed.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "sha256" in (malformed.value.details() or "")
    # A well-formed hash the request does not have: not there, as an unknown request.
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
    assert f"{rid} has no image with sha256 {'ab' * 32}" in (unknown.value.details() or "")


async def test_a_lease_that_ran_out_shows_nothing_before_the_reaper_came(
    start_server: StartServer,
) -> None:
    """The item is still CLAIMED by the authorizer (the reaper has not put it back) but
    its lease has run out: its Decide is refused, and so is a look at its images."""
    server = await start_server(lease_ms=300)
    await server.runtime.reaper.stop()
    async with server.teller() as teller, server.authorizer() as authorizer:
        rid = (await teller.submit(request())).request.request_id
        offer = await authorizer.next(timeout=10)
        sha = offer.request.images[0].sha256
        assert await authorizer.image(rid, sha, "thumbnail")  # while held
        await asyncio.sleep(max(0.0, offer.lease.expires_at_ms / 1000 - time.time()) + 0.2)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await authorizer.image(rid, sha, "preview")
    assert refused.value.code() is grpc.StatusCode.PERMISSION_DENIED
    assert (refused.value.details() or "").startswith(
        f"the lease of authorizer-1 on request {rid} has run out"
    )
    assert (await server.runtime.store.get(rid)).state is State.CLAIMED
