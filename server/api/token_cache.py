"""Verified login tokens kept in memory for a moment, so that a unary call does not pay
a Redis round trip to learn who is calling.

Revocation stays immediate (R12), whichever process or tool (``authq-admin``) made the
change:
- every change that ends a token key in Redis (the DEL when an account is disabled or
  deregistered, the GETDEL of a logout, an expiry or eviction) is pushed to every
  server process as a keyspace notification, and the entry goes as it arrives;
- every change to an account (roles, qualification, status, a password reset) is
  published by its script on the account changes channel, and every token of the
  account goes as it arrives. Not a keyspace notification of the account hash:
  following hash writes would make Redis notify on every queue write.
The process that made a change does not wait for either: its AccountStore tells the
cache as the change's call returns (``ChangeFollower``), so the caller's next call
finds it made. TTL_S bounds what no message covers (a change written to Redis by hand).
While the subscription is not confirmed (starting, lost, or a Redis that refuses
CONFIG SET) nothing is served from the cache at all."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable, Mapping
from typing import Any

import redis.asyncio as aioredis

from server.accounts.model import Account
from server.background import BackgroundLoop
from server.store.queue_reads import as_text

log = logging.getLogger(__name__)

TTL_S = 2.0
MAX_ENTRIES = 50_000
# K: keyspace channels; g: generic commands (DEL, GETDEL, RENAME...); x: expiries;
# e: evictions. Merged with whatever flags the Redis already has.
KEYSPACE_FLAGS = "Kgxe"
_GLOB_SPECIAL = re.compile(r"([*?\[\]\\])")
# Events that leave the token key in place: the login's own SET ... EX is followed by an
# "expire" event, which must not take away the entry its first call puts (the token's
# end comes later, as "expired" or "del"). Any other event on a token key revokes it.
_NOT_AN_END = frozenset({"expire"})

Clock = Callable[[], float]


class TokenCache:
    """token digest -> the account it authenticated, for at most ``ttl_s``."""

    def __init__(
        self,
        client: aioredis.Redis,
        token_prefix: str,
        account_changes: str,
        *,
        ttl_s: float = TTL_S,
        clock: Clock = time.monotonic,
    ) -> None:
        self.client = client
        self.token_prefix = token_prefix
        self.account_changes = account_changes
        self.ttl_s = ttl_s
        self.clock = clock
        self.pattern = "__keyspace@*__:" + _GLOB_SPECIAL.sub(r"\\\1", token_prefix) + "*"
        self._entries: dict[str, tuple[Account, float]] = {}
        # Bumped by every revocation: a lookup that started before one may have read
        # the token before it was deleted, so its answer is not kept (see put).
        self.generation = 0
        self.live = False
        self.loop = BackgroundLoop("token-revocations")
        self._subscribed = asyncio.Event()
        # Told the user id of each account change from any process (app.py: an
        # authorizer back from away may be waiting on this server).
        self.on_account_change: Callable[[str], None] | None = None

    # -- the cache -------------------------------------------------------------------

    def get(self, digest: str) -> Account | None:
        if not self.live:
            return None
        hit = self._entries.get(digest)
        if hit is None:
            return None
        account, deadline = hit
        if self.clock() >= deadline:
            del self._entries[digest]
            return None
        return account

    def put(self, digest: str, account: Account, generation: int) -> None:
        """Keeps what a lookup begun at ``generation`` found, unless a revocation
        arrived meanwhile."""
        if not self.live or generation != self.generation:
            return
        if len(self._entries) >= MAX_ENTRIES:
            self._entries.clear()  # a flood of distinct tokens: start afresh
        self._entries[digest] = (account, self.clock() + self.ttl_s)

    def revoke(self, digest: str) -> None:
        self.generation += 1
        self._entries.pop(digest, None)

    def account_changed(self, user_id: str) -> None:
        """Forgets every token of the account. A scan, but of a cache kept small, on
        an administrator's change."""
        self.generation += 1
        held = [d for d, (account, _) in self._entries.items() if account.user_id == user_id]
        for digest in held:
            del self._entries[digest]

    def clear(self) -> None:
        self.generation += 1
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)

    # -- the pushed revocations ------------------------------------------------------

    async def start(self) -> None:
        self.loop.start(self._follow)

    async def stop(self) -> None:
        await self.loop.stop()
        self.live = False
        self.clear()

    async def wait_live(self, timeout_s: float = 5.0) -> bool:
        """True once the subscription is confirmed (for start-up and tests)."""
        try:
            await asyncio.wait_for(self._subscribed.wait(), timeout_s)
        except TimeoutError:
            return False
        return self.live

    async def _enable_notifications(self) -> None:
        current = await self.client.config_get("notify-keyspace-events")
        raw = next(iter(current.values()), "") if current else ""
        flags = raw.decode() if isinstance(raw, bytes) else str(raw)
        missing = "".join(flag for flag in KEYSPACE_FLAGS if flag not in flags)
        # "A" stands for every event class ("g$lshzxet"), so with it only K can be missing.
        if "A" in flags:
            missing = "".join(flag for flag in missing if flag == "K")
        if missing:
            await self.client.config_set("notify-keyspace-events", flags + missing)

    async def _follow(self) -> None:
        backoff = 0.05
        while not self.loop.stopping:
            pubsub = self.client.pubsub()
            try:
                await self._enable_notifications()
                await pubsub.psubscribe(self.pattern)
                await pubsub.subscribe(self.account_changes)
                confirmed: set[str] = set()
                while not self.live and not self.loop.stopping:
                    # What comes before both are confirmed can go: the cache is empty.
                    message = await pubsub.get_message(timeout=1.0)
                    if message is not None and message["type"] in ("psubscribe", "subscribe"):
                        confirmed.add(message["type"])
                        if len(confirmed) == 2:
                            # Revocations from now on reach us; anything older is gone
                            # from Redis, and the cache was empty while not live.
                            self.clear()
                            self.live = True
                            self._subscribed.set()
                backoff = 0.05
                while not self.loop.stopping:
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                    if message is not None:
                        self._on_message(message)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("token revocation feed lost (%s): retrying in %.2fs", exc, backoff)
            finally:
                self.live = False
                self.clear()
                await pubsub.aclose()  # type: ignore[no-untyped-call]
            if not self.loop.stopping:
                self._subscribed.set()  # wait_live answers (False) rather than hangs
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)

    def _on_message(self, message: Mapping[str, Any]) -> None:
        if message["type"] == "message":  # the account changes channel
            user_id = as_text(message["data"])
            self.account_changed(user_id)
            if self.on_account_change is not None:
                self.on_account_change(user_id)
            return
        if as_text(message["data"]) in _NOT_AN_END:
            return
        key = as_text(message["channel"]).partition("__:")[2]
        if key.startswith(self.token_prefix):
            self.revoke(key[len(self.token_prefix) :])
        else:
            self.clear()  # not a key we expected: be safe
