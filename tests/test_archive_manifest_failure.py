"""A manifest append the disk refuses (here the file-size limit RLIMIT_FSIZE, so the
write fails with EFBIG, whole or after part of a line got in): the file keeps only its
acknowledged lines, the request stays unarchived, and the retry once the disk takes
writes again lists it once, chained on from the last real line, so that
`authq-admin archive verify` passes and later appends go on from there."""

from __future__ import annotations

import errno
import resource
import signal
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import date
from pathlib import Path

import pytest

from server.archive.layout import MANIFEST_NAME, day_dir, parse_day
from server.archive.manifest import FileEntry, ManifestWriter
from tests.conftest import RunningServer, StartServer
from tests.helpers import until
from tests.test_archive import FAST, admin, archive_root, archived, decided, manifest_names


@contextmanager
def file_size_limit(size: int) -> Iterator[None]:
    """Files of this process cannot grow past ``size`` bytes: a write beyond fails
    with EFBIG (SIGXFSZ ignored), one that crosses the limit is cut short there."""
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    limits = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (size, limits[1]))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, limits)
        signal.signal(signal.SIGXFSZ, previous)


def refusals_seen(server: RunningServer, monkeypatch: pytest.MonkeyPatch) -> list[OSError]:
    """The errors the server's manifest appends raise from now on."""
    manifests: ManifestWriter = server.runtime.archiver.writer.manifests
    append = manifests.append
    refused: list[OSError] = []

    def spy(day: date, entries: Sequence[FileEntry]) -> tuple[int, str]:
        try:
            return append(day, entries)
        except OSError as exc:
            refused.append(exc)
            raise

    monkeypatch.setattr(manifests, "append", spy)
    return refused


async def a_full_manifest(server: RunningServer) -> Path:
    """The manifest of today's archive, grown past the size of any record file (so a
    limit at its size refuses only the manifest)."""
    marker = await archived(server.runtime, await decided(server))
    manifest = day_dir(archive_root(server), parse_day(marker.day)) / MANIFEST_NAME
    while manifest.stat().st_size < 4000:
        await archived(server.runtime, await decided(server))
    return manifest


async def refused_then_retried(
    server: RunningServer, monkeypatch: pytest.MonkeyPatch, manifest: Path, room: int
) -> str:
    """A request whose manifest append is refused with ``room`` bytes left in the
    file, checked left unlisted and unarchived, then archived once the limit is lifted."""
    before = manifest.read_bytes()
    refused = refusals_seen(server, monkeypatch)
    with file_size_limit(len(before) + room):
        rid = await decided(server)
        await until(lambda: len(refused) > 0)
        assert refused[0].errno == errno.EFBIG
        # Not a byte of the refused lines stays, torn or whole.
        assert manifest.read_bytes() == before
    assert await server.runtime.archive_index.marker(rid) is None
    await archived(server.runtime, rid)
    return rid


async def test_a_refused_manifest_append_is_listed_when_retried(
    start_server: StartServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = await start_server(**FAST)
    manifest = await a_full_manifest(server)
    rid = await refused_then_retried(server, monkeypatch, manifest, room=0)
    assert manifest_names(manifest.parent).count(f"{rid}.json") == 1
    code, out = await admin(server, "archive", "verify")
    assert code == 0, out
    # Later appends chain on from the last line the file really has.
    later = await decided(server)
    await archived(server.runtime, later)
    assert manifest_names(manifest.parent)[-1] == f"{later}.json"
    code, out = await admin(server, "archive", "verify")
    assert code == 0, out


async def test_an_append_cut_short_mid_line_leaves_no_torn_line(
    start_server: StartServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = await start_server(**FAST)
    manifest = await a_full_manifest(server)
    # Room for part of the first new line only (a line is well over 60 bytes).
    rid = await refused_then_retried(server, monkeypatch, manifest, room=60)
    text = manifest.read_text()
    assert text.endswith("\n")
    assert manifest_names(manifest.parent).count(f"{rid}.json") == 1
    code, out = await admin(server, "archive", "verify")
    assert code == 0, out
