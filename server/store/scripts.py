"""Loads the Lua scripts of server/lua/, one per atomic operation.

Each script is registered with the shared prelude ``_lib.lua`` prepended. On the
server's client it runs on the pipelined connection (server/store/redis_pipe.py),
otherwise by redis-py's Script object; either runs it by SHA and sends the source
again after NOSCRIPT (a restarted Redis)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

import redis.asyncio as aioredis
from redis.commands.core import AsyncScript

from server.store.connect import PipedRedis
from server.store.redis_pipe import PipedScript

# How every script is called: ``await script(keys=..., args=...)``.
ScriptCall = PipedScript | AsyncScript

_NAMES = ("submit", "claim", "decide", "requeue", "renew", "cancel", "supply", "review")

# The scripts that answer their own repeat as they answered the first run (DUP, DONE,
# DUPLICATE, a claim by the same claimant, a queue claim that finds its call's nonce
# key set, a session opened that finds its token's key set) or whose repeat changes
# nothing (a renewal, a read, a sweep that finds its lapses marked): one whose reply was
# lost with the connection may be sent again (server/store/redis_pipe.py). The others
# (an emergency, an account change, a move...) would act twice or answer that they
# could not act: their callers are told the outcome is unknown (ReplyLost) instead.
REPEAT_SAFE = frozenset({
    "submit", "claim", "decide", "cancel", "supply", "renew", "authenticate", "logout",
    "audit_append", "audit_trim", "fallback_report", "move_sweep",
    "archive_claim", "archive_done", "archive_purge", "blob_gc", "session_open",
    "waiting_since_index",
})  # fmt: skip


def lua_source(name: str) -> str:
    """The text of server/lua/<name>.lua."""
    return resources.files("server").joinpath("lua", f"{name}.lua").read_text("utf-8")


def load_script(client: aioredis.Redis, name: str) -> ScriptCall:
    """One script of server/lua/ with the shared prelude, ready to call."""
    source = lua_source("_lib") + "\n" + lua_source(name)
    if isinstance(client, PipedRedis):  # server/store/connect.py
        return PipedScript(client.pipe, source, repeat_safe=name in REPEAT_SAFE)
    return client.register_script(source)


async def run_all(
    script: ScriptCall, calls: Sequence[tuple[Sequence[Any], Sequence[Any]]]
) -> list[Any]:
    """Runs the script once per (keys, args), all sent at once (on a pipe: one write,
    in this order); each reply is the script's result or the exception of that call
    alone."""
    return list(
        await asyncio.gather(
            *(script(keys=keys, args=args) for keys, args in calls), return_exceptions=True
        )
    )


@dataclass(frozen=True, slots=True)
class Scripts:
    submit: ScriptCall
    claim: ScriptCall
    decide: ScriptCall
    requeue: ScriptCall
    renew: ScriptCall
    cancel: ScriptCall
    supply: ScriptCall
    review: ScriptCall

    @classmethod
    def register(cls, client: aioredis.Redis) -> Scripts:
        loaded: dict[str, Any] = {name: load_script(client, name) for name in _NAMES}
        return cls(**loaded)
