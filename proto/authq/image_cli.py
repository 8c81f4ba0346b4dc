"""The ``image`` command both command lines share: save one rendition of an image of a
request to a file (every fetch is audited, and previews carry the viewer's id)."""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path

from authq.render import SHORT_SHA

RENDITIONS = ["original", "preview", "thumbnail"]
SHA256_HEX = 64
# Shorter prefixes would too easily match two images of one request.
MIN_PREFIX = 8
_HEX = frozenset("0123456789abcdef")

# Fetches (request id, sha256, rendition) and returns the image's bytes.
Fetch = Callable[[str, str, str], Awaitable[bytes]]
# The sha256 of each image of a request (None: the caller cannot list them).
ListImages = Callable[[str], Awaitable[Iterable[str]]]


def add_image_command(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], help_text: str, listed_by: str
) -> argparse.ArgumentParser:
    """``image REQUEST_ID SHA256 [--rendition R] --out FILE``; returns the parser for
    command-specific options."""
    image = commands.add_parser("image", help=help_text)
    image.add_argument("request_id", help="the request the image belongs to")
    image.add_argument(
        "sha256",
        help=f"as `{listed_by}` lists it: the whole sha256 or its first {MIN_PREFIX} or more "
        "hex digits",
    )
    image.add_argument(
        "--rendition",
        default="preview",
        choices=RENDITIONS,
        help="preview and thumbnail carry your id and the time (default preview)",
    )
    image.add_argument("--out", type=Path, required=True, help="file to write")
    return image


def hex_digits(given: str) -> str:
    """A whole sha256 or a prefix of one, in lower case; ValueError otherwise."""
    text = given.strip().lower()
    if not text or not set(text) <= _HEX or len(text) > SHA256_HEX:
        raise ValueError(f"{given!r} is not a sha256: {SHA256_HEX} hex digits, or a prefix")
    if len(text) < MIN_PREFIX:
        raise ValueError(f"{given!r}: give at least {MIN_PREFIX} hex digits of the sha256")
    return text


def unique_match(request_id: str, prefix: str, listed: Iterable[str]) -> str:
    """The one sha256 of the request's images that starts with ``prefix``."""
    matches = sorted({sha for sha in listed if sha.startswith(prefix)})
    if not matches:
        raise ValueError(f"no image of {request_id} has a sha256 starting with {prefix}")
    if len(matches) > 1:
        found = ", ".join(sha[:SHORT_SHA] for sha in matches)
        raise ValueError(f"{prefix} matches {len(matches)} images of {request_id} ({found}): "
                         "give more digits")  # fmt: skip
    return matches[0]


async def save_image(fetch: Fetch, args: argparse.Namespace, images: ListImages | None) -> int:
    """Saves the image. A prefix of its sha256 is looked up in the request's images
    as ``images`` lists them (None: only a whole sha256 will do)."""
    sha256 = hex_digits(args.sha256)
    if len(sha256) < SHA256_HEX:
        if images is None:
            raise ValueError(
                f"{args.sha256!r}: give the whole sha256 (no list of the images of "
                f"{args.request_id} to find a prefix in)"
            )
        sha256 = unique_match(args.request_id, sha256, await images(args.request_id))
    data = await fetch(args.request_id, sha256, args.rendition)
    try:
        args.out.write_bytes(data)
    except OSError as exc:
        # Both command lines take a ValueError as a bad argument: one line, exit 2.
        raise ValueError(f"--out {args.out}: cannot write it ({exc.strerror or exc})") from None
    print(f"{args.rendition} of {sha256[:SHORT_SHA]} written to {args.out} ({len(data)} bytes)")
    return 0
