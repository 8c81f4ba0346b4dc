"""What a viewer is sent for one image: the original bytes as uploaded (the evidence,
unchanged, hash and all), or a rendition stamped with the viewer and the time."""

from __future__ import annotations

import asyncio
import time
from enum import StrEnum

from server.blobs import BlobStore
from server.errors import FailedPrecondition, NotFound
from server.images.checker import OK, ImageChecker
from server.images.renditions import bare_preview
from server.images.watermark import watermark


class Rendition(StrEnum):
    ORIGINAL = "ORIGINAL"
    PREVIEW = "PREVIEW"
    THUMBNAIL = "THUMBNAIL"


def stamp_text(viewer: str, now_s: float) -> str:
    return f"{viewer} {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime(now_s))} CONFIDENTIAL"


async def image_view(
    blobs: BlobStore,
    checker: ImageChecker | None,
    sha256: str,
    rendition: Rendition,
    viewer: str,
) -> bytes:
    try:
        if rendition is Rendition.ORIGINAL:
            return await blobs.get(sha256)
        if checker is None:
            raise FailedPrecondition("renditions are not made by this server: ask for ORIGINAL")
        # Usually known already; after a restart this makes the renditions now.
        verdict = await checker.verdict(sha256)
        if verdict != OK:
            raise FailedPrecondition(
                f"image {sha256} failed the full check ({verdict}): it has no "
                f"{rendition.value.lower()}; ask for ORIGINAL"
            )
        plain = await plain_rendition(blobs, sha256, rendition)
    except FileNotFoundError:
        raise NotFound(f"the bytes of image {sha256} are not in the blob store") from None
    # Decoding, drawing and encoding take milliseconds: not on the event loop.
    return await asyncio.to_thread(watermark, plain, stamp_text(viewer, time.time()))


async def plain_rendition(blobs: BlobStore, sha256: str, rendition: Rendition) -> bytes:
    """A rendition of a checked image as made, before any stamp. The preview of an
    upright capture no larger than a preview is the original without its metadata,
    made now rather than stored (server/images/renditions.py)."""
    name = rendition.value.lower()
    try:
        return await blobs.get_rendition(sha256, name)
    except FileNotFoundError:
        if rendition is not Rendition.PREVIEW:
            raise
    bare = await asyncio.to_thread(bare_preview, await blobs.get(sha256))
    if bare is None:
        raise FileNotFoundError(f"no {name} of {sha256}")
    return bare
