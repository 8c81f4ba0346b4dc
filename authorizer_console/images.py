"""Getting an item's images to the screen: the one place that fetches them (the
server's watermarked preview, long side about 1600 px, R14) and the Pillow work done
off the Tk thread."""

from __future__ import annotations

from PIL import Image

from authorizer_console.client import AuthorizerClient
from authorizer_console.image_view import decode, thumbnail


async def fetch_image(client: AuthorizerClient, request_id: str, sha256: str) -> bytes:
    """The preview of one image of an item the caller holds."""
    return await client.image(request_id, sha256, "preview")


def prepare(data: bytes) -> tuple[Image.Image, Image.Image]:
    """(the decoded image, its thumbnail): CPU work, run in a worker thread."""
    image = decode(data)
    return image, thumbnail(image)
