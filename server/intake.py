"""Receives one image upload chunk by chunk and stores it once it is proven whole:
the declared size reached, the sha256 matching, the structure of an accepted image
format. Nothing is written before that, so an abandoned or bad upload leaves nothing
behind."""

from __future__ import annotations

import hashlib
import re

from server.blobs import BlobStore
from server.domain.records import IMAGE_KINDS, Image
from server.errors import InvalidArgument
from server.images.probe import ImageLimits, ImageRejected, probe_image

SHA256_RE = re.compile(r"^[0-9a-f]{64}\Z")


def check_sha256(value: str, field: str) -> str:
    if not SHA256_RE.match(value):
        raise InvalidArgument(field, f"must be 64 lower-case hex digits, got {value[:80]!r}")
    return value


class Upload:
    def __init__(self, kind: str, sha256: str, size: int, limits: ImageLimits) -> None:
        self.kind = kind
        self.sha256 = sha256
        self.size = size
        self.limits = limits
        self._parts: list[bytes] = []
        self._received = 0
        self._hash = hashlib.sha256()

    @property
    def complete(self) -> bool:
        return self._received >= self.size

    def add(self, data: bytes) -> None:
        self._received += len(data)
        if self._received > self.size:
            raise InvalidArgument(
                "image", f"more bytes than the declared size_bytes {self.size} arrived"
            )
        self._hash.update(data)
        self._parts.append(data)

    async def finish(self, blobs: BlobStore) -> tuple[Image, bytes]:
        if self._received < self.size:
            raise InvalidArgument(
                "image",
                f"upload ended after {self._received} of {self.size} declared bytes",
            )
        digest = self._hash.hexdigest()
        if digest != self.sha256:
            raise InvalidArgument(
                "image.sha256",
                f"does not match the bytes received (declared {self.sha256}, computed {digest})",
            )
        data = b"".join(self._parts)
        self._parts.clear()
        try:
            info = probe_image(data, self.limits)
        except ImageRejected as exc:
            raise InvalidArgument(f"image ({self.kind})", str(exc)) from None
        await blobs.put(self.sha256, data)
        return Image(self.kind, self.sha256, self.size, info.content_type), data


def begin_upload(kind: str, sha256: str, size: int, limits: ImageLimits) -> Upload:
    if kind not in IMAGE_KINDS:
        raise InvalidArgument("header.kind", f"must be one of {', '.join(IMAGE_KINDS)}")
    check_sha256(sha256, "header.sha256")
    if size <= 0:
        raise InvalidArgument("header.size_bytes", "an image cannot be empty")
    if size > limits.max_bytes:
        raise InvalidArgument(
            "header.size_bytes", f"{size} bytes exceeds the limit of {limits.max_bytes} per image"
        )
    return Upload(kind, sha256, size, limits)
