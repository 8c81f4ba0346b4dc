"""Verifying the audit trail once and then only what was added since (R15): a verify
from an anchor (the seq and hash a previous verify ended on), in Redis and through the
segment files, what it catches and what it leaves to the whole verify, and the
command's anchor option and progress line."""

from __future__ import annotations

import io
from pathlib import Path

import redis.asyncio as aioredis

from server.admin.audit_cli import Progress
from server.store.audit import Anchor, AuditLog
from tests.test_audit import Entries, entry, filled, rewrite
from tests.test_audit_segments import admin, moved, segmented
from tests.test_audit_segments import filled as filled_segmented


async def test_a_verify_from_an_anchor_checks_what_came_after_it(
    redis_client: aioredis.Redis,
) -> None:
    log = await filled(redis_client, 10)
    first = await log.verify()
    assert first.last == Anchor(10, (await log.head())[1])
    await log.append_many(entry(n) for n in range(11, 16))

    since = await log.verify(after=first.last)
    assert (since.ok, since.checked) == (True, 5)
    assert since.last == Anchor(15, (await log.head())[1])
    # Nothing added since: nothing to check, and the head must still be the anchor.
    again = await log.verify(after=since.last)
    assert (again.ok, again.checked) == (True, 0)


async def test_a_changed_record_after_the_anchor_or_a_wrong_anchor_is_caught(
    redis_client: aioredis.Redis,
) -> None:
    log = await filled(redis_client, 12)
    anchor = (await log.verify()).last
    assert anchor is not None

    wrong = await log.verify(after=Anchor(8, "0" * 64))
    assert wrong.problems == [
        "seq 9: prev does not match the hash of seq 8 (a record before it was changed or replaced)"
    ]
    at_head = await log.verify(after=Anchor(12, "0" * 64))
    assert not at_head.ok
    assert at_head.problems[0].startswith("the chain head points at seq 12")

    await change_body(redis_client, log, 3)
    # Before the anchor: for the whole verify to find, not for this one.
    assert (await log.verify(after=Anchor(8, await hash_of(log, 8)))).ok
    assert not (await log.verify()).ok
    await change_body(redis_client, log, 10)
    after = await log.verify(after=Anchor(8, await hash_of(log, 8)))
    assert after.problems == ["seq 10: stored hash does not match its content (record changed)"]


async def change_body(client: aioredis.Redis, log: AuditLog, seq: int) -> None:
    def edit(entries: Entries) -> None:
        entries[seq - 1][1][b"body"] = entry(99).pack()

    await rewrite(client, log, edit)


async def hash_of(log: AuditLog, seq: int) -> str:
    (record,) = [r async for r in log.read(seq, 1)]
    return record.hash


async def test_an_anchor_past_the_segment_files_needs_no_files(
    redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    log = await moved(redis_client, tmp_path, 12)
    # Through the files: from seq 3, inside the first file.
    inside = await log.verify(after=Anchor(3, await hash_of(log, 3)))
    assert (inside.ok, inside.checked) == (True, 9)
    # From seq 10 on everything is in Redis: a log given no files checks it all.
    blind = AuditLog(redis_client)
    past = await blind.verify(after=Anchor(10, await hash_of(log, 10)))
    assert (past.ok, past.checked) == (True, 2)
    before = await blind.verify(after=Anchor(3, await hash_of(log, 3)))
    assert before.problems == [
        "seqs 4..10 are archived in segment files, which were not given: not checked"
    ]


async def test_the_command_prints_its_anchor_and_takes_it_back(
    redis_client: aioredis.Redis, redis_url: str, tmp_path: Path
) -> None:
    log = segmented(redis_client, tmp_path)
    await filled_segmented(log, 7)
    code, out = await admin(redis_url, tmp_path, "audit", "verify")
    assert code == 0
    option = out.splitlines()[1].rpartition(": ")[2]
    assert option.startswith("--after 7:")
    await log.append_many(entry(n) for n in range(8, 11))
    code, out = await admin(redis_url, tmp_path, "audit", "verify", *option.split())
    assert (code, out.splitlines()[0]) == (0, "audit chain OK: 3 records verified after seq 7")


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


async def test_progress_shows_on_a_terminal_at_most_once_a_second(
    redis_client: aioredis.Redis,
) -> None:
    log = await filled(redis_client, 10)
    now = [0.0]
    terminal = Terminal()
    progress = Progress(terminal, total=10, clock=lambda: now[0])

    def tick(checked: int, seq: int) -> None:
        now[0] += 0.6  # every record "takes" 0.6 s on this clock
        progress(checked, seq)

    assert (await log.verify(progress=tick, progress_every=2)).ok
    progress.done()
    lines = terminal.getvalue().split("\r")
    assert lines == [
        "",
        "verifying: 4 of 10 records (40.0%), at seq 4",
        "verifying: 8 of 10 records (80.0%), at seq 8\n",
    ]
    piped = io.StringIO()  # output to a file or a pipe: no progress line in it
    to_pipe = Progress(piped, total=10, clock=lambda: now[0])
    for checked in (4, 8):
        now[0] += 5
        to_pipe(checked, checked)
    to_pipe.done()
    assert piped.getvalue() == ""
