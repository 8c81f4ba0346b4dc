"""The permanent archive (R15): ended requests written to files by day with a
hash-chained manifest, exactly once across server processes, swept up after a restart;
hot keys removed after the window; hot blobs collected; `authq-admin archive`."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import shutil
import time
from pathlib import Path

import grpc
import pytest
from authq import wire
from PIL import Image

from server.admin.cli import _run, build_parser
from server.app import Runtime
from server.archive.index import ArchivedMarker
from server.archive.layout import MANIFEST_NAME, day_dir, parse_day
from server.archive.sheet import PAGE_SIZE
from tests.conftest import RunningServer, StartServer
from tests.helpers import images, request

FAST = {"archive_sweep_s": 0.2, "archive_keep_hot_s": 3600}


def archive_root(server: RunningServer) -> Path:
    return server.runtime.settings.data_dir / "archive"


async def archived(runtime: Runtime, request_id: str, within_s: float = 10) -> ArchivedMarker:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        marker = await runtime.archive_index.marker(request_id)
        if marker is not None:
            return marker
        await asyncio.sleep(0.05)
    raise AssertionError(f"{request_id} was not archived within {within_s}s")


async def decided(server: RunningServer, outcome: str = "approve", supplement: bool = False) -> str:
    """A request taken through the queue to a decision; returns its id."""
    async with server.teller() as teller, server.authorizer() as authorizer:
        rid = (await teller.submit(request())).request.request_id
        offer = await authorizer.next(timeout=10)
        if supplement:
            await authorizer.decide(
                rid, offer.lease.fencing_token, "ask", kinds=["CUSTOMER_PHOTO"], note="face"
            )
            await teller.supply(rid, images("CUSTOMER_PHOTO", seed=3), note="here")
            offer = await authorizer.next(timeout=10)
        kwargs = {"reason_code": "ID_MISMATCH"} if outcome == "reject" else {}
        await authorizer.decide(rid, offer.lease.fencing_token, outcome, **kwargs)
    return rid


async def admin(server: RunningServer, *argv: str) -> tuple[int, str]:
    """authq-admin in this process, against the test server's Redis and data dir."""
    args = build_parser().parse_args(
        [
            "--redis-url",
            server.runtime.redis_url,
            "--data-dir",
            str(server.runtime.settings.data_dir),
            *argv,
        ]
    )
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = await _run(args)
    return code, out.getvalue()


def manifest_names(directory: Path) -> list[str]:
    return [line.split(" ")[1] for line in (directory / MANIFEST_NAME).read_text().splitlines()]


async def test_a_decided_request_is_archived_with_images_and_full_history(
    start_server: StartServer,
) -> None:
    server = await start_server(**FAST)
    rid = await decided(server, supplement=True)
    marker = await archived(server.runtime, rid)
    assert marker.state == "APPROVED"
    directory = day_dir(archive_root(server), parse_day(marker.day))
    document = json.loads((directory / f"{rid}.json").read_text())
    assert [entry["event"] for entry in document["history"]] == [
        "SUBMITTED",
        "CLAIMED",
        "SUPPLEMENT_REQUESTED",
        "SUPPLIED",
        "CLAIMED",
        "APPROVED",
    ]
    assert document["decision"]["actor"] == "authorizer-1"
    assert [image["kind"] for image in document["images"]] == [
        "ID_FRONT",
        "ID_BACK",
        "VOUCHER",
        "CUSTOMER_PHOTO",
    ]
    assert document["images"][-1]["supplement"] is True
    for image in document["images"]:
        data = (directory / image["file"]).read_bytes()
        assert wire.sha256_hex(data) == image["sha256"]
    names = manifest_names(directory)
    assert names[-1] == f"{rid}.json"
    assert len(names) == 5
    code, out = await admin(server, "archive", "verify")
    assert code == 0, out
    assert "archive OK: 5 files in 1 days" in out


async def test_verify_names_an_edited_file_a_removed_file_and_reordered_lines(
    start_server: StartServer, tmp_path: Path
) -> None:
    server = await start_server(**FAST)
    rid = await decided(server)
    marker = await archived(server.runtime, rid)
    root = archive_root(server)
    relative = day_dir(root, parse_day(marker.day)).relative_to(root)

    def broken_copy(name: str) -> Path:
        copy = tmp_path / name
        shutil.copytree(root, copy)
        return copy

    edited = broken_copy("edited")
    record = edited / relative / f"{rid}.json"
    record.write_text(record.read_text().replace('"APPROVED"', '"REJECTED"'))
    code, out = await admin(server, "archive", "--archive-dir", str(edited), "verify")
    assert code == 1
    assert f"{record} changed" in out

    removed = broken_copy("removed")
    image = next((removed / relative).glob("*.jpg"))
    image.unlink()
    code, out = await admin(
        server, "archive", "--archive-dir", str(removed), "verify", "--day", marker.day
    )
    assert code == 1
    assert f"{image} is missing" in out

    reordered = broken_copy("reordered")
    manifest = reordered / relative / MANIFEST_NAME
    lines = manifest.read_text().splitlines(keepends=True)
    manifest.write_text(lines[1] + lines[0] + "".join(lines[2:]))
    code, out = await admin(server, "archive", "--archive-dir", str(reordered), "verify")
    assert code == 1
    assert f"{manifest} line 1: numbered 2" in out
    assert f"{manifest} line 2: chain broken" in out

    truncated = broken_copy("truncated")
    manifest = truncated / relative / MANIFEST_NAME
    manifest.write_text("".join(manifest.read_text().splitlines(keepends=True)[:-1]))
    (truncated / relative / f"{rid}.json").unlink()
    code, out = await admin(server, "archive", "--archive-dir", str(truncated), "verify")
    assert code == 1
    assert "lines removed or rewritten at the end" in out

    code, out = await admin(server, "archive", "verify")
    assert code == 0, out


async def test_two_server_processes_archive_a_request_exactly_once(
    start_server: StartServer,
) -> None:
    first = await start_server(**FAST)
    second = await start_server(**FAST)
    rids = [await decided(first), await decided(second, "reject")]
    for rid in rids:
        await archived(first.runtime, rid)
    # A late duplicate event, a retry, and a crash between writing and marking done.
    for server in (first, second):
        assert not await server.runtime.archiver.archive(rids[0])
    await first.runtime.client.delete(first.runtime.store.keys.archive_marker(rids[1]))
    assert await second.runtime.archiver.archive(rids[1])
    marker = await archived(first.runtime, rids[1])
    assert marker.state == "REJECTED"
    names = manifest_names(day_dir(archive_root(first), parse_day(marker.day)))
    assert names.count(f"{rids[0]}.json") == 1
    assert names.count(f"{rids[1]}.json") == 1
    assert len(names) == len(set(names))  # the shared images are listed once
    code, out = await admin(first, "archive", "verify")
    assert code == 0, out


async def test_a_restarted_server_archives_what_ended_while_no_archiver_ran(
    start_server: StartServer,
) -> None:
    down = await start_server(**FAST)
    await down.runtime.archiver.stop()
    rid = await decided(down)
    await asyncio.sleep(0.5)
    assert await down.runtime.archive_index.marker(rid) is None
    restarted = await start_server(**FAST)
    marker = await archived(restarted.runtime, rid)
    assert marker.state == "APPROVED"


async def test_hot_keys_go_after_the_window_and_get_says_where_the_record_is(
    start_server: StartServer,
) -> None:
    server = await start_server(archive_sweep_s=0.2, archive_keep_hot_s=1)
    rid = await decided(server)
    await archived(server.runtime, rid)
    keys = server.runtime.store.keys
    async with server.teller() as teller:
        assert (await teller.get(rid)).state  # still hot within the window
        deadline = time.monotonic() + 10
        while await server.runtime.client.exists(keys.request(rid)):
            assert time.monotonic() < deadline, "hot keys not removed"
            await asyncio.sleep(0.1)
        assert not await server.runtime.client.exists(keys.history(rid))
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await teller.get(rid)
        assert failure.value.code() == grpc.StatusCode.NOT_FOUND
        message = failure.value.details() or ""
        assert "ended APPROVED and is in the permanent archive" in message
        assert f"authq-admin archive show {rid} --reason" in message
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            async for _ in teller.watch(rid):
                pass
        assert failure.value.code() == grpc.StatusCode.NOT_FOUND
        assert "permanent archive" in (failure.value.details() or "")
    async with server.teller("teller-7", "branch-7") as other:
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await other.get(rid)
        assert "archive" not in (failure.value.details() or "")
    code, out = await admin(server, "archive", "show", rid, "--reason", "customer dispute")
    assert code == 0
    assert "APPROVED" in out
    # The id stays used: a new submit with it is refused, not stored as a new request.
    async with server.teller() as teller:
        with pytest.raises(grpc.aio.AioRpcError) as reused:
            await teller.submit(request(request_id=rid))
        assert reused.value.code() == grpc.StatusCode.ALREADY_EXISTS
        assert "archived" in (reused.value.details() or "")


async def test_blob_gc_removes_old_unreferenced_images_and_keeps_the_others(
    start_server: StartServer,
) -> None:
    server = await start_server(blob_gc_grace_s=1, **FAST)
    runtime = server.runtime
    blobs = runtime.center.blobs
    async with server.teller() as teller:
        await teller.submit(request())  # references the standard images
        (orphan,) = await teller.upload_images(images("OTHER", seed=11))
        (touched,) = await teller.upload_images(images("OTHER", seed=12))
    old = time.time() - 3600
    for sha256, _ in await blobs.stored():
        os.utime(blobs.path(sha256), (old, old))  # type: ignore[attr-defined]
    await asyncio.sleep(2.2)  # Redis counts idle time in whole seconds
    # A submission resolving it right now (the race the grace period guards).
    await runtime.store.blob_meta([touched.sha256])
    report = await runtime.archiver.collector.collect()
    assert report.deleted == [orphan.sha256]
    assert report.referenced == 3
    assert report.fresh == 1
    assert not await blobs.exists(orphan.sha256)
    assert not await runtime.client.exists(runtime.store.keys.blob(orphan.sha256))
    assert await blobs.exists(touched.sha256)
    # Uploaded again, it can be used again.
    async with server.teller() as teller:
        await teller.upload_images(images("OTHER", seed=11))
        message = request()
        message.images.append(orphan)
        assert (await teller.submit(message)).request.request_id == message.request_id


async def test_archive_show_needs_a_reason_is_audited_and_renders_a_sheet(
    start_server: StartServer, tmp_path: Path
) -> None:
    server = await start_server(**FAST)
    rid = await decided(server, supplement=True)
    await archived(server.runtime, rid)
    with pytest.raises(SystemExit), contextlib.redirect_stderr(io.StringIO()):
        await admin(server, "archive", "show", rid)
    code, out = await admin(server, "archive", "show", rid, "--reason", "  ")
    assert code == 1
    assert "needs a reason" in out
    png, pdf = tmp_path / "sheet.png", tmp_path / "sheet.pdf"
    code, out = await admin(
        server, "archive", "show", rid, "--reason", "court order 17",
        "--png", str(png), "--pdf", str(pdf),
    )  # fmt: skip
    assert code == 0, out
    assert "SUPPLEMENT_REQUESTED" in out
    assert "CUSTOMER_PHOTO" in out
    with Image.open(png) as sheet:
        assert sheet.size == PAGE_SIZE
        colours = sheet.convert("RGB").getcolors(maxcolors=1_000_000)
        assert colours is not None
        assert len(colours) > 100
    assert pdf.read_bytes().startswith(b"%PDF")
    await server.runtime.center.flush_audit()
    shows = [
        record.entry
        async for record in server.runtime.audit.read()
        if record.entry.action == "ARCHIVE_SHOW"
    ]
    assert [entry.outcome for entry in shows] == ["refused: no reason given", "OK"]
    assert shows[-1].details["reason"] == "court order 17"
    assert shows[-1].details["render"] == "png,pdf"


async def test_a_batch_archives_the_good_requests_and_leaves_a_bad_one_to_retry(
    start_server: StartServer,
) -> None:
    server = await start_server(**FAST)
    archiver = server.runtime.archiver
    assert archiver is not None
    await archiver.stop()  # this test drives the archiving itself
    good = [await decided(server), await decided(server, "reject")]
    async with server.teller() as teller, server.authorizer() as authorizer:
        own = images("ID_FRONT", "ID_BACK", "VOUCHER", seed=11)
        bad = (await teller.submit(request(with_images=False), own)).request.request_id
        offer = await authorizer.next(timeout=10)
        await authorizer.decide(bad, offer.lease.fencing_token, "approve")
    # The bad request's voucher has gone from the hot store (a damaged disk, say).
    await server.runtime.center.blobs.delete(wire.sha256_hex(own[2][1]))
    assert await archiver.archive_batch([good[0], bad, good[1]]) == 2
    for rid in good:
        assert (await archived(server.runtime, rid)).state in ("APPROVED", "REJECTED")
    assert await server.runtime.archive_index.marker(bad) is None
    code, out = await admin(server, "archive", "verify")
    assert code == 0, out
