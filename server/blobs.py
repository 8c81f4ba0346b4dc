"""Content-addressed image storage behind one small interface.

The default keeps files under ``<data_dir>/blobs/ab/cd/<sha256>``, written to a
temporary name, fsynced and renamed, so a blob is either complete or absent and never
half-visible. Several server processes may share the directory: names are content
hashes and renames are atomic. An S3-compatible store would implement the same
protocol."""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from pathlib import Path
from typing import Protocol


class BlobStore(Protocol):
    async def put(self, sha256: str, data: bytes) -> None:
        """Stores ``data`` durably under its hash (the caller has checked the hash)."""

    async def exists(self, sha256: str) -> bool: ...

    async def get(self, sha256: str) -> bytes:
        """Raises FileNotFoundError for an unknown hash."""
        ...


class LocalBlobStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.tmp = root / "tmp"
        self.tmp.mkdir(parents=True, exist_ok=True)
        self._clean_leftovers()

    def path(self, sha256: str) -> Path:
        return self.root / sha256[:2] / sha256[2:4] / sha256

    async def put(self, sha256: str, data: bytes) -> None:
        await asyncio.to_thread(self._put, sha256, data)

    async def exists(self, sha256: str) -> bool:
        return await asyncio.to_thread(self.path(sha256).exists)

    async def get(self, sha256: str) -> bytes:
        return await asyncio.to_thread(self.path(sha256).read_bytes)

    def _put(self, sha256: str, data: bytes) -> None:
        final = self.path(sha256)
        if final.exists():
            return  # identical bytes are stored once
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.tmp / f"{sha256}.{uuid.uuid4().hex}"
        try:
            with open(tmp, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, final)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        _fsync_dir(final.parent)

    def _clean_leftovers(self) -> None:
        """A crash mid-write leaves a temporary file nobody can see: remove it."""
        for leftover in self.tmp.iterdir():
            with contextlib.suppress(OSError):
                leftover.unlink()


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
