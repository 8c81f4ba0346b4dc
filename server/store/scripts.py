"""Loads the Lua scripts of server/lua/, one per atomic operation.

Each script is registered with the shared prelude ``_lib.lua`` prepended; redis-py's
Script object runs it by SHA and reloads it after NOSCRIPT (a restarted Redis)."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from typing import Any

import redis.asyncio as aioredis
from redis.commands.core import AsyncScript

_NAMES = ("submit", "claim", "decide", "requeue", "renew", "cancel", "supply", "review")


def _source(name: str) -> str:
    return resources.files("server").joinpath("lua", f"{name}.lua").read_text("utf-8")


def load_script(client: aioredis.Redis, name: str) -> AsyncScript:
    """One script of server/lua/ with the shared prelude, ready to call."""
    return client.register_script(_source("_lib") + "\n" + _source(name))


@dataclass(frozen=True, slots=True)
class Scripts:
    submit: AsyncScript
    claim: AsyncScript
    decide: AsyncScript
    requeue: AsyncScript
    renew: AsyncScript
    cancel: AsyncScript
    supply: AsyncScript
    review: AsyncScript

    @classmethod
    def register(cls, client: aioredis.Redis) -> Scripts:
        loaded: dict[str, Any] = {name: load_script(client, name) for name in _NAMES}
        return cls(**loaded)
