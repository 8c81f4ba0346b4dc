"""Content-addressed image storage behind one small interface.

The default keeps files under ``<data_dir>/blobs/ab/cd/<sha256>``, written to a
temporary name, fsynced and renamed, so a blob is either complete or absent and never
half-visible; then its directory is fsynced (and each directory made for it, in its
parent), so an acknowledged blob survives a power cut. Renditions made from an
original (server/images/renditions.py) live beside it as ``<sha256>.<name>.jpg``,
written the same way. Several server processes may share the directory: names are
content hashes (a rendition is a pure function of its original), writers use unique
temporary names and renames are atomic. An S3-compatible store would implement the
same protocol: one object per original and per rendition, keyed by the same names."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import time
import uuid
from pathlib import Path
from typing import Final, Protocol

from server.files import fsync_dir, make_dirs

RENDITION_NAMES: Final = ("preview", "thumbnail")

# A temporary file this old belongs to a writer that crashed: a live write takes
# milliseconds. Younger ones may belong to another process sharing the directory.
_LEFTOVER_AGE_S: Final = 3600

_SHA256 = re.compile(r"^[0-9a-f]{64}\Z")


class BlobStore(Protocol):
    async def put(self, sha256: str, data: bytes) -> None:
        """Stores ``data`` durably under its hash (the caller has checked the hash)."""

    async def exists(self, sha256: str) -> bool: ...

    def reachable(self) -> bool:
        """False when the store itself cannot be seen (a share not mounted): a blob it
        lacks then may be only out of reach, not lost."""
        ...

    async def get(self, sha256: str) -> bytes:
        """Raises FileNotFoundError for an unknown hash."""
        ...

    async def put_rendition(self, sha256: str, name: str, data: bytes) -> None:
        """Stores a rendition (one of RENDITION_NAMES) of the original ``sha256``."""

    async def get_rendition(self, sha256: str, name: str) -> bytes:
        """Raises FileNotFoundError when that rendition was not made (yet)."""
        ...

    async def stored(self) -> list[tuple[str, float]]:
        """Every original held, with when it was written (seconds since the epoch)."""
        ...

    async def delete(self, sha256: str) -> None:
        """Removes an original and its renditions (the blob GC); absent ones are fine."""


class LocalBlobStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.tmp = root / "tmp"
        make_dirs(self.tmp)
        self._clean_leftovers()

    def reachable(self) -> bool:
        # Its own tmp directory, made at start, is gone with an unmounted share.
        return self.tmp.is_dir()

    def path(self, sha256: str) -> Path:
        return self.root / sha256[:2] / sha256[2:4] / sha256

    def rendition_path(self, sha256: str, name: str) -> Path:
        # Both parts end up in a file name: refuse anything that could leave the tree.
        if not _SHA256.match(sha256) or name not in RENDITION_NAMES:
            raise ValueError(f"no rendition {name!r} of {sha256!r}")
        return self.path(sha256).with_name(f"{sha256}.{name}.jpg")

    async def put(self, sha256: str, data: bytes) -> None:
        await asyncio.to_thread(self._write, self.path(sha256), data)

    async def exists(self, sha256: str) -> bool:
        return await asyncio.to_thread(self.path(sha256).exists)

    async def get(self, sha256: str) -> bytes:
        return await asyncio.to_thread(self.path(sha256).read_bytes)

    async def put_rendition(self, sha256: str, name: str, data: bytes) -> None:
        await asyncio.to_thread(self._write, self.rendition_path(sha256, name), data)

    async def get_rendition(self, sha256: str, name: str) -> bytes:
        return await asyncio.to_thread(self.rendition_path(sha256, name).read_bytes)

    async def stored(self) -> list[tuple[str, float]]:
        return await asyncio.to_thread(self._stored)

    async def delete(self, sha256: str) -> None:
        await asyncio.to_thread(self._delete, sha256)

    def _stored(self) -> list[tuple[str, float]]:
        found = []
        for path in self.root.glob("[0-9a-f][0-9a-f]/[0-9a-f][0-9a-f]/*"):
            if _SHA256.match(path.name):
                with contextlib.suppress(FileNotFoundError):
                    found.append((path.name, path.stat().st_mtime))
        return found

    def _delete(self, sha256: str) -> None:
        original = self.path(sha256)
        for path in (original, *(self.rendition_path(sha256, n) for n in RENDITION_NAMES)):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        with contextlib.suppress(FileNotFoundError):
            fsync_dir(original.parent)

    def _write(self, final: Path, data: bytes) -> None:
        if final.exists():
            return  # identical bytes are stored once
        # A fan-out directory made here is fsynced into its parent, like the file into
        # its directory below: else a power cut could lose an acknowledged blob.
        make_dirs(final.parent)
        tmp = self.tmp / f"{final.name}.{uuid.uuid4().hex}"
        try:
            with open(tmp, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, final)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        fsync_dir(final.parent)

    def _clean_leftovers(self) -> None:
        """A crash mid-write leaves a temporary file nobody can see: remove it, but only
        once it is old enough not to be another process's write in progress."""
        cutoff = time.time() - _LEFTOVER_AGE_S
        for leftover in self.tmp.iterdir():
            with contextlib.suppress(OSError):
                if leftover.stat().st_mtime < cutoff:
                    leftover.unlink()
