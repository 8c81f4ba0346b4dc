"""Doing an action and staging its audit record (R15) in one atomic Redis step.

A Lua script takes the staging stream's key and the packed records off the end of its
KEYS and ARGV (take_audit, take_audits in server/lua/_lib.lua) and stages the action's
record where it answers OK; a MULTI/EXEC transaction stages it with stage_once.lua.
Either way an action done is an action audited, even if the server dies the moment
after: the audit writer chains what is staged (server/store/audit.py).

A record staged by a command of its own (a transaction's, a refusal's) goes through
stage_once.lua: redis-py sends a command again when its connection died before the
reply, and a plain XADD sent twice would put the record in the trail twice."""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import AsyncIterator, Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline

from server.store.audit_records import StagedAudit
from server.store.queue_reads import as_text
from server.store.scripts import ScriptCall, lua_source

# Longer than any resend could come (redis-py's retries take about 7 s).
ONCE_KEEP_MS = 60_000
_STAGE_ONCE = lua_source("stage_once")


def audit_tail(
    keys: list[str], args: list[Any], staged_key: str, audit: StagedAudit | None,
    templates: Sequence[bytes] = (),
) -> None:  # fmt: skip
    """Appends what take_audit(s) takes: the staging stream, the action's record (empty:
    none), then any templates the script completes and stages as it finds need."""
    keys.append(staged_key)
    args.append(audit.body if audit is not None else b"")
    args.extend(templates)


def settle(audit: StagedAudit | None, result: list[Any]) -> None:
    """Marks the record staged if the script did the action: each audited script
    stages its record exactly where it answers OK. A script that answers DUP found the
    action done by an earlier call: the caller records the retry as a repeat."""
    if audit is None:
        return
    status = as_text(result[0])
    if status == "OK":
        audit.staged = True
    elif status == "DUP":
        audit.repeat = True


def _once(staged_key: str, body: bytes) -> tuple[str, int, str, str, bytes, int]:
    """EVAL's arguments for stage_once.lua, with a fresh once key for this record."""
    once_key = f"{staged_key}:once:{secrets.token_hex(8)}"
    return _STAGE_ONCE, 2, staged_key, once_key, body, ONCE_KEEP_MS


async def stage_once(client: aioredis.Redis, staged_key: str, body: bytes) -> None:
    """Stages one record, once however often redis-py sends it."""
    await client.eval(*_once(staged_key, body))


async def run_audited(
    script: ScriptCall, staged_key: str, audit: StagedAudit | None, keys: list[str],
    args: list[Any], templates: Sequence[bytes] = (),
) -> list[Any]:  # fmt: skip
    """Runs a script that stages its action's audit record; ``audit.staged`` then says
    whether it did the action."""
    audit_tail(keys, args, staged_key, audit, templates)
    result: list[Any] = await script(keys=keys, args=args)
    settle(audit, result)
    return result


async def run_staging(
    script: ScriptCall, staged_key: str, keys: list[str], args: list[Any], template: bytes
) -> Any:
    """Runs a script that stages records only from a template it completes, as many as
    it finds actions (lapses swept, a fallback report's steps); the caller kicks the
    audit writer. An empty template: nothing to stage (no audit trail)."""
    audit_tail(keys, args, staged_key, StagedAudit(template))
    return await script(keys=keys, args=args)


@contextlib.asynccontextmanager
async def audited_transaction(
    client: aioredis.Redis, staged_key: str, audit: StagedAudit | None
) -> AsyncIterator[Pipeline]:
    """A MULTI/EXEC transaction for the action: the block queues its commands on the
    pipeline it is given; on leaving it, the record is queued after them, the
    transaction runs, and ``audit.staged`` is set. A block that raises runs nothing.
    The block's commands must be ones that may run twice (redis-py sends the
    transaction again if its reply was lost); the record is staged once."""
    async with client.pipeline(transaction=True) as pipe:
        yield pipe
        body = audit.body if audit is not None else b""
        if body:
            pipe.eval(*_once(staged_key, body))
        await pipe.execute()
    if audit is not None and body:
        audit.staged = True
