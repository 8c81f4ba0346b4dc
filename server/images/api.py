"""Protobuf side of image views, shared by the three services that serve images."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Protocol

from authq import wire
from authq.v1 import common_pb2 as cpb

from server.api.convert import check_request_id
from server.errors import InvalidArgument
from server.images.views import Rendition
from server.intake import check_sha256

if TYPE_CHECKING:
    from server.center import Center, Identity


class ImageRequest(Protocol):
    """GetImageRequest (authorizers) and RequestImageRequest (tellers, supervisors)."""

    @property
    def request_id(self) -> str: ...
    @property
    def sha256(self) -> str: ...
    @property
    def rendition(self) -> int: ...


_RENDITIONS = {
    cpb.RENDITION_UNSPECIFIED: Rendition.ORIGINAL,
    cpb.RENDITION_ORIGINAL: Rendition.ORIGINAL,
    cpb.RENDITION_PREVIEW: Rendition.PREVIEW,
    cpb.RENDITION_THUMBNAIL: Rendition.THUMBNAIL,
}


def rendition_of(value: int) -> Rendition:
    rendition: Rendition | None = _RENDITIONS.get(value)  # type: ignore[call-overload]
    if rendition is None:
        raise InvalidArgument("rendition", "must be ORIGINAL, PREVIEW or THUMBNAIL")
    return rendition


def image_chunks(sha256: str, data: bytes) -> Iterator[cpb.ImageChunk]:
    """The image in wire-sized chunks; the first names it (``sha256`` is the
    original's: a rendition's own bytes hash differently)."""
    for index, piece in enumerate(wire.chunks(data)):
        header = cpb.ImageRef(sha256=sha256, size_bytes=len(data)) if index == 0 else None
        yield cpb.ImageChunk(header=header, data=piece)


async def serve_image(
    center: Center, caller: Identity, request: ImageRequest
) -> AsyncIterator[cpb.ImageChunk]:
    """Checks the request's fields and streams the image the caller may see. The
    handler identifies the caller first, as every RPC does, so that one without a
    valid token is told so and nothing about its request."""
    check_request_id(request.request_id)
    check_sha256(request.sha256, "sha256")
    rendition = rendition_of(request.rendition)
    data = await center.view_image(caller, request.request_id, request.sha256, rendition)
    for chunk in image_chunks(request.sha256, data):
        yield chunk
