"""The blob store failing is the center's fault, never the teller's: an image whose
stored bytes cannot be read for now has no verdict, so its request goes back in the
queue (not back to the teller) and is checked again once the bytes can be read; one
the store has lost goes back to the teller as the center's loss. And a blob is
durable when acknowledged: its directory is fsynced, and each directory made for it
is fsynced into its parent."""

from __future__ import annotations

import asyncio
import errno
import os
import stat
from collections.abc import Callable
from pathlib import Path

import pytest
from authq import wire
from authq.v1 import common_pb2 as cpb

from server.blobs import LocalBlobStore
from server.images.checker import LOST, ImageChecker
from teller_client.client import TellerClient
from tests.conftest import RunningServer
from tests.helpers import images, request_with_front, store_unchecked

PUT_BACK_NOTE = "the image check could not finish"


def _blob_store(server: RunningServer) -> LocalBlobStore:
    blobs = server.runtime.center.blobs
    assert isinstance(blobs, LocalBlobStore)
    return blobs


def _checker(server: RunningServer) -> ImageChecker:
    checker = server.runtime.center.images
    assert checker is not None
    return checker


async def _unchecked_front(server: RunningServer, seed: int) -> str:
    """A stored ID_FRONT capture, fine in itself, whose check has not run yet."""
    ((_kind, data),) = images("ID_FRONT", seed=seed)
    return await store_unchecked(server, data)


async def _first_outcome(teller: TellerClient, request_id: str) -> cpb.RequestUpdate:
    """The entry that ended the first claim of the request: put back, or sent back."""
    found: list[cpb.RequestUpdate] = []

    async def look() -> None:
        view = await teller.get(request_id)
        found[:] = [e for e in view.history if e.event in ("RELEASED", "SUPPLEMENT_REQUESTED")]

    async with asyncio.timeout(10):
        await look()
        while not found:
            await asyncio.sleep(0.01)
            await look()
    return found[0]


async def _submitted_and_checked(server: RunningServer, teller: TellerClient, sha: str) -> str:
    """Submits the request with ``sha`` as its ID front, and waits for the checks of its
    other images: their renditions are written to the store, which must not fail (or,
    taken away, be made again) under them."""
    message = request_with_front(sha)
    request_id = (await teller.submit(message)).request.request_id
    checker = _checker(server)
    for ref in message.images:
        if ref.sha256 != sha:
            assert await checker.verdict(ref.sha256) == "OK"
    return request_id


def _missing(server: RunningServer, sha: str, aside: Path) -> Callable[[], None]:
    """Moves the blob's file away; returns what puts it back."""
    path = _blob_store(server).path(sha)
    moved = aside / path.name
    path.rename(moved)

    def restore() -> None:
        moved.rename(path)

    return restore


def _unmounted(server: RunningServer, _sha: str, aside: Path) -> Callable[[], None]:
    """Takes the whole store away, as an unmounted share would."""
    root = _blob_store(server).root
    moved = aside / root.name
    root.rename(moved)

    def restore() -> None:
        moved.rename(root)

    return restore


def _unreadable(server: RunningServer, sha: str, _aside: Path) -> Callable[[], None]:
    """Reading the blob fails with EIO, as on a failing disk."""
    blobs = _blob_store(server)
    get = blobs.get

    async def failing_get(sha256: str) -> bytes:
        if sha256 == sha:
            raise OSError(errno.EIO, os.strerror(errno.EIO), str(blobs.path(sha256)))
        return await get(sha256)

    blobs.get = failing_get  # type: ignore[method-assign]

    def restore() -> None:
        blobs.get = get  # type: ignore[method-assign]

    return restore


STORAGE_FAILURES = {"unmounted": _unmounted, "unreadable": _unreadable}


@pytest.mark.parametrize("failure", STORAGE_FAILURES)
async def test_an_unreadable_blob_puts_the_request_back_in_the_queue_not_to_the_teller(
    server: RunningServer, tmp_path: Path, failure: str
) -> None:
    sha = await _unchecked_front(server, seed=11)
    dispatcher = server.runtime.dispatcher
    async with server.teller() as teller:
        request_id = await _submitted_and_checked(server, teller, sha)
        restore = STORAGE_FAILURES[failure](server, sha, tmp_path)
        taker = asyncio.create_task(dispatcher.next_item("authorizer-1"))
        try:
            outcome = await _first_outcome(teller, request_id)
            view = await teller.get(request_id)
        finally:
            taker.cancel()
            restore()
    assert outcome.event == "RELEASED"
    assert outcome.note == PUT_BACK_NOTE
    assert view.state in (cpb.REQUEST_STATE_QUEUED, cpb.REQUEST_STATE_CLAIMED)
    assert _checker(server).known(sha) is None  # no verdict, neither bad nor good


async def test_a_blob_the_store_lost_goes_back_to_the_teller_as_the_centers_loss(
    server: RunningServer, tmp_path: Path
) -> None:
    """The store is there and the image is not: nobody could decide the request, so the
    teller is asked for the image again, told it is not the capture's fault."""
    sha = await _unchecked_front(server, seed=14)
    _missing(server, sha, tmp_path)
    async with server.teller() as teller:
        request_id = (await teller.submit(request_with_front(sha))).request.request_id
        taker = asyncio.create_task(server.runtime.dispatcher.next_item("authorizer-1"))
        try:
            outcome = await _first_outcome(teller, request_id)
        finally:
            taker.cancel()
    assert outcome.event == "SUPPLEMENT_REQUESTED"
    assert outcome.actor == "system"
    assert LOST in outcome.note
    assert _checker(server).known(sha) is None  # not remembered: a restore brings it back


async def test_an_image_is_checked_and_offered_once_its_blob_can_be_read_again(
    server: RunningServer, tmp_path: Path
) -> None:
    sha = await _unchecked_front(server, seed=12)
    async with server.teller() as teller, server.authorizer() as authorizer:
        request_id = await _submitted_and_checked(server, teller, sha)
        restore = _unmounted(server, sha, tmp_path)
        offered = asyncio.create_task(authorizer.next(timeout=30))
        try:
            await _first_outcome(teller, request_id)  # put back while the blob is away
        finally:
            restore()
        offer = await offered
        view = await teller.get(request_id)
    assert offer.request.request_id == request_id
    assert "SUPPLEMENT_REQUESTED" not in [e.event for e in view.history]
    assert _checker(server).known(sha) == "OK"


# -- durable writes ------------------------------------------------------------------


class FsyncedDirectories:
    """Records which directories os.fsync was called on, as (device, inode)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.seen: set[tuple[int, int]] = set()
        real = os.fsync

        def fsync(fd: int) -> None:
            info = os.fstat(fd)
            if stat.S_ISDIR(info.st_mode):
                self.seen.add((info.st_dev, info.st_ino))
            real(fd)

        monkeypatch.setattr(os, "fsync", fsync)

    def __contains__(self, directory: Path) -> bool:
        info = directory.stat()
        return (info.st_dev, info.st_ino) in self.seen


SHA_A = "abcd" + "0" * 60
SHA_B = "abcd" + "1" * 60


async def test_a_blob_in_new_fan_out_directories_is_fsynced_into_each_parent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = LocalBlobStore(tmp_path / "blobs")
    fsynced = FsyncedDirectories(monkeypatch)
    await store.put(SHA_A, b"image bytes")
    blob_dir = store.path(SHA_A).parent
    assert blob_dir in fsynced  # the file's entry
    assert blob_dir.parent in fsynced  # "cd", made now, in "ab"
    assert store.root in fsynced  # "ab", made now, in the root


async def test_a_blob_beside_others_fsyncs_only_its_own_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = LocalBlobStore(tmp_path / "blobs")
    await store.put(SHA_A, b"image bytes")
    fsynced = FsyncedDirectories(monkeypatch)
    await store.put(SHA_B, b"other bytes")
    blob_dir = store.path(SHA_B).parent
    assert blob_dir in fsynced
    assert blob_dir.parent not in fsynced
    assert store.root not in fsynced


def test_a_new_blob_store_is_fsynced_into_its_parent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fsynced = FsyncedDirectories(monkeypatch)
    store = LocalBlobStore(tmp_path / "data" / "blobs")
    assert tmp_path in fsynced  # "data"
    assert store.root.parent in fsynced  # "blobs"
    assert store.root in fsynced  # "tmp"


async def test_an_uploaded_blob_is_durable_when_acknowledged(
    server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    ((kind, data),) = images("CUSTOMER_PHOTO", seed=13)
    blob_dir = _blob_store(server).path(wire.sha256_hex(data)).parent
    made = [d for d in (blob_dir, blob_dir.parent) if not d.exists()]
    fsynced = FsyncedDirectories(monkeypatch)
    async with server.teller() as teller:
        await teller.upload_image(kind, data)
    assert blob_dir in fsynced
    for directory in made:
        assert directory.parent in fsynced
