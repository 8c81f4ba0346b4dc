"""The ``image`` command both command lines share: save one rendition of an image of a
request to a file (every fetch is audited, and previews carry the viewer's id)."""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable
from pathlib import Path

RENDITIONS = ["original", "preview", "thumbnail"]

# Fetches (request id, sha256, rendition) and returns the image's bytes.
Fetch = Callable[[str, str, str], Awaitable[bytes]]


def add_image_command(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], help_text: str, listed_by: str
) -> argparse.ArgumentParser:
    """``image REQUEST_ID SHA256 [--rendition R] --out FILE``; returns the parser for
    command-specific options."""
    image = commands.add_parser("image", help=help_text)
    image.add_argument("request_id")
    image.add_argument("sha256", help=f"as `{listed_by}` lists it")
    image.add_argument(
        "--rendition",
        default="preview",
        choices=RENDITIONS,
        help="preview and thumbnail carry your id and the time (default preview)",
    )
    image.add_argument("--out", type=Path, required=True, help="file to write")
    return image


async def save_image(fetch: Fetch, args: argparse.Namespace) -> int:
    data = await fetch(args.request_id, args.sha256, args.rendition)
    args.out.write_bytes(data)
    print(f"{args.rendition} of {args.sha256[:12]} written to {args.out} ({len(data)} bytes)")
    return 0
