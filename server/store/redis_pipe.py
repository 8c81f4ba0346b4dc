"""One Redis connection that pipelines every command sent on it.

Each command a coroutine sends is appended to the connection's output buffer and its
reply is awaited on a future. Whatever is sent during one turn of the event loop
leaves in a single write; replies come back in order and settle their futures as
``data_received`` parses them with hiredis. So concurrent submits, claims and
decisions share round trips without waiting for each other (there is no batch in
flight to wait behind), and Redis, with ``appendfsync always``, fsyncs once for all
the writes it read together.

Why not redis-py for these calls: each of its commands takes a pooled connection,
wraps itself in retries, a timeout and a lock, and makes its own write and read. On
the event loop's one core that machinery cost more than the Lua script it carried.
redis-py stays for everything else (reads, admin, pub/sub).

After a lost connection a command that never left is sent again on the next one. A
command that left but whose reply was lost may have run: it is sent again only if
its caller says a repeat is safe (``repeat_safe``: submit, claim, decide and
audit_append recognise their own repeat, a read changes nothing). Any other fails with
``ReplyLost``, so that an emergency or an account change is never made twice; its
caller is told the outcome is unknown. A connection on which Redis has said nothing
for REPLY_DEADLINE_S while commands wait is treated as lost (a stopped Redis still
accepts and acknowledges).
A blocking command holds up every reply behind it, so it needs a pipe of its own
(the event hub's XREAD BLOCK, server/events.py).

A ``rediss://`` URL connects over TLS, with the certificate settings of the URL's
query read as redis-py reads them (``ssl_ca_certs``, ``ssl_certfile``,
``ssl_keyfile``, ``ssl_cert_reqs``, ``ssl_check_hostname``...), so the pipe and the
pooled client beside it (server/store/connect.py) trust the same server.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import socket
import ssl
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import parse_qsl, urlencode, urlsplit

import hiredis
from redis._parsers.base import BaseParser
from redis.asyncio.connection import RedisSSLContext
from redis.backoff import ExponentialBackoff
from redis.connection import SSLConnection, parse_url
from redis.exceptions import ConnectionError, NoScriptError, ResponseError

log = logging.getLogger(__name__)

# Ride out a Redis restart, here and in the pooled client (server/store/connect.py):
# about 7 s of exponential backoff before a call fails.
RETRIES = 10
BACKOFF = ExponentialBackoff(cap=1.0, base=0.05)
# A host that drops packets (down behind a firewall) leaves a connect waiting for the
# kernel's SYN retries, about two minutes; every caller would wait that long for its
# answer. A connect gets this long, and no attempt starts after the window, so a
# command is sent again at most RETRY_WINDOW_S + CONNECT_TIMEOUT_S after it was
# first (which claim.lua's repeat check relies on: CLAIM_REPEAT_TTL_MS).
CONNECT_TIMEOUT_S = 3.0
RETRY_WINDOW_S = 10.0

# The same host gone quiet after connecting (a partition, a crashed machine): left to
# the kernel, an idle connection is found dead after two hours and one with a command
# unanswered after some fifteen minutes of retransmissions, with every call waiting.
# Probes after 10 s idle and a 20 s bound on unacknowledged data find it in about
# 20 s either way; a slow but live Redis still acknowledges both.
KEEPALIVE_OPTIONS: dict[int, int] = {
    option: value
    for name, value in (
        ("TCP_KEEPIDLE", 10),
        ("TCP_KEEPINTVL", 3),
        ("TCP_KEEPCNT", 3),
        ("TCP_USER_TIMEOUT", 20_000),
    )
    if (option := getattr(socket, name, None)) is not None
}

# A Redis that is up but does not answer (stopped, its disk frozen, a script gone on
# far past its time limit) still acknowledges every packet, so neither bound above
# ends the wait. A connection on which commands have waited this long with not a byte
# from Redis is given up: the commands on it fail as on a lost connection (sent again
# if a repeat is safe, else ReplyLost), so a caller has its answer in seconds rather
# than never. Far above any wait of a live Redis: our scripts run in microseconds,
# Redis answers BUSY to the others after a script's 5 s time limit, and the event
# hub's blocking read returns within 2 s.
REPLY_DEADLINE_S = 10.0

# TLS errors that mean the connection closed, as in a restart: retried like any other
# loss. Every other TLS error is Redis (or its TLS front) refusing us with an alert (a
# client certificate missing or not trusted, no protocol version in common) or its
# certificate failing our check: a setting to fix, which retrying for seconds only hides.
_TLS_CLOSED = (ssl.SSLEOFError, ssl.SSLZeroReturnError, ssl.SSLSyscallError)


class ReplyLost(ConnectionError):
    """The connection was lost after the command was sent and before its reply: it may
    or may not have run, and it was not safe to send again."""


class _NotSent(ConnectionError):
    """The connection was lost before the command was written: safe to send again."""


def tls_refusal(error: BaseException) -> ssl.SSLError | None:
    """The TLS error behind ``error`` if the connection was refused rather than lost,
    looked for along the chain our and redis-py's wrapping make."""
    cause: BaseException | None = error
    for _ in range(8):  # the chains are short; a cycle must not hold us
        if cause is None:
            return None
        if isinstance(cause, ssl.SSLError) and not isinstance(cause, _TLS_CLOSED):
            return cause
        cause = cause.__cause__ or cause.__context__
    return None


@dataclass(slots=True)
class Counts:
    """Writes made and commands sent over a pipe's connections, for tests and
    profiling: commands sent in one event-loop turn share a write."""

    writes: int = 0
    commands: int = 0


class _Connection(asyncio.Protocol):
    """One socket: an output buffer flushed once per loop turn, and the futures of
    the replies still to come, oldest first."""

    def __init__(self, counts: Counts, reply_deadline_s: float) -> None:
        self.counts = counts
        self.reply_deadline_s = reply_deadline_s
        self.transport: asyncio.Transport | None = None
        self.waiting: deque[asyncio.Future[Any]] = deque()
        self.lost: BaseException | None = None
        self._reader = hiredis.Reader(replyError=ResponseError)
        self._out: list[bytes] = []
        self._flush_due = False
        self._loop = asyncio.get_running_loop()
        # When Redis last sent anything, or a command came to wait on an idle
        # connection: the reply deadline's start. One timer checks it, not one per call.
        self._heard_at = 0.0
        self._watchdog: asyncio.TimerHandle | None = None

    @property
    def usable(self) -> bool:
        return self.transport is not None and self.lost is None

    def send(self, packed: bytes) -> asyncio.Future[Any]:
        loop = self._loop
        future: asyncio.Future[Any] = loop.create_future()
        self.counts.commands += 1
        if not self.waiting:
            self._heard_at = loop.time()
        self._out.append(packed)
        self.waiting.append(future)
        if not self._flush_due:
            self._flush_due = True
            loop.call_soon(self._flush)
        if self._watchdog is None and self.lost is None:
            self._watchdog = loop.call_at(self._heard_at + self.reply_deadline_s, self._watch)
        return future

    def _watch(self) -> None:
        self._watchdog = None
        if not self.waiting or self.lost is not None:
            return  # armed again by the next send
        due = self._heard_at + self.reply_deadline_s
        if self._loop.time() >= due:
            self._fail(ConnectionError(f"no reply from Redis within {self.reply_deadline_s:g}s"))
        else:
            self._watchdog = self._loop.call_at(due, self._watch)

    def _flush(self) -> None:
        self._flush_due = False
        out, self._out = self._out, []
        if self.transport is not None and self.lost is None and out:
            self.counts.writes += 1
            self.transport.write(b"".join(out))

    def close(self) -> None:
        self._stop_watching()
        if self.transport is not None:
            self.transport.close()

    def _stop_watching(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None

    # -- asyncio.Protocol ---------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self._heard_at = self._loop.time()
        reader = self._reader
        reader.feed(data)
        waiting = self.waiting
        while True:
            reply = reader.gets()
            if reply is False:
                return
            if not waiting:  # a reply nobody asked for: the stream is out of step
                self._fail(ConnectionError("Redis sent a reply nobody was waiting for"))
                return
            future = waiting.popleft()
            if future.done():  # its caller gave up
                continue
            if isinstance(reply, ResponseError):
                future.set_exception(_error(reply))
            else:
                future.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(exc or ConnectionError("Redis closed the connection"))

    def _fail(self, exc: BaseException) -> None:
        if self.lost is None:
            if isinstance(exc, ConnectionError):
                self.lost = exc
            else:  # the cause kept for tls_refusal
                self.lost = ConnectionError(str(exc))
                self.lost.__cause__ = exc
        self._stop_watching()
        if self.transport is not None:
            self.transport.close()
        # The newest len(_out) futures wait for commands still in the buffer.
        sent = len(self.waiting) - len(self._out)
        self._out = []
        for index, future in enumerate(self.waiting):
            if not future.done():  # one exception each: each caller's traceback its own
                error = (ConnectionError if index < sent else _NotSent)(str(self.lost))
                error.__cause__ = self.lost
                future.set_exception(error)
        self.waiting.clear()


class RedisPipe:
    """Sends commands on one pipelined connection, opened on first use and opened
    again after a loss. Bound to the event loop that first uses it."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._settings: dict[str, Any] = parse_url(url)  # type: ignore[no-untyped-call]
        self._tls = tls_context(self._settings)
        self._connection: _Connection | None = None
        self._connecting: asyncio.Task[_Connection] | None = None
        self._closed = False
        # Connections opened, for tests and logs.
        self.connects = 0
        self.counts = Counts()

    @property
    def writes(self) -> int:
        return self.counts.writes

    @property
    def commands(self) -> int:
        return self.counts.commands

    async def execute(self, *args: Any, repeat_safe: bool = True) -> Any:
        """Sends one command and returns its reply; a Redis error reply is raised as
        redis-py raises it. Sent again on a new connection if the connection is lost
        before the command left, or before its reply came if ``repeat_safe``; else
        ReplyLost."""
        packed = hiredis.pack_command(args)
        clock = asyncio.get_running_loop().time
        give_up_at = clock() + RETRY_WINDOW_S
        for attempt in range(RETRIES + 1):
            connection = self._connection
            try:
                if connection is None or not connection.usable:
                    connection = await self._connect()
            except (OSError, ConnectionError) as exc:
                error: BaseException = exc
            else:
                try:
                    return await connection.send(packed)
                except ConnectionError as exc:
                    if not (repeat_safe or isinstance(exc, _NotSent)):
                        raise ReplyLost(
                            f"Redis at {shown_url(self.url)}: {exc}; the command was sent "
                            "before the connection was lost, so whether it ran is unknown"
                        ) from exc
                    error = exc
            refusal = tls_refusal(error)
            if refusal is not None or attempt == RETRIES or self._closed or clock() > give_up_at:
                shown = shown_url(self.url)
                raise ConnectionError(f"Redis at {shown}: {refusal or error}") from error
            await asyncio.sleep(BACKOFF.compute(attempt))
        raise AssertionError("unreachable")

    async def aclose(self) -> None:
        self._closed = True
        if self._connecting is not None:
            self._connecting.cancel()
            with contextlib.suppress(BaseException):
                await self._connecting
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    async def _connect(self) -> _Connection:
        if self._closed:
            raise ConnectionError("the Redis pipe is closed")
        if self._connecting is None or self._connecting.done():
            self._connecting = asyncio.create_task(self._open(), name="redis-pipe-connect")
        # Every caller that finds the connection gone waits on the same attempt.
        return await asyncio.shield(self._connecting)

    async def _open(self) -> _Connection:
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT_S):
                return await self._open_now()
        except TimeoutError:
            raise ConnectionError(
                f"no answer to connecting within {CONNECT_TIMEOUT_S:g}s"
            ) from None

    async def _open_now(self) -> _Connection:
        loop = asyncio.get_running_loop()
        settings = self._settings
        counts = self.counts
        deadline = REPLY_DEADLINE_S
        if "path" in settings:
            _, connection = await loop.create_unix_connection(
                lambda: _Connection(counts, deadline), settings["path"]
            )
        else:
            transport, connection = await loop.create_connection(
                lambda: _Connection(counts, deadline),
                settings.get("host", "localhost"),
                settings.get("port", 6379),
                ssl=self._tls,
            )
            keep_alive(transport.get_extra_info("socket"))
        try:
            if settings.get("password"):
                user = [settings["username"]] if settings.get("username") else []
                auth: tuple[Any, ...] = ("AUTH", *user, settings["password"])
                await connection.send(hiredis.pack_command(auth))
            if settings.get("db"):
                select: tuple[Any, ...] = ("SELECT", settings["db"])
                await connection.send(hiredis.pack_command(select))
        except BaseException:
            connection.close()
            raise
        self.connects += 1
        if self._connection is not None:
            log.info("Redis pipe to %s connected again", shown_url(self.url))
        self._connection = connection
        return connection


def keep_alive(sock: Any) -> None:
    """Has a TCP connection to Redis probed while idle, and dropped when what it sent
    goes unacknowledged (KEEPALIVE_OPTIONS)."""
    if sock is None:
        return
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for option, value in KEEPALIVE_OPTIONS.items():
        sock.setsockopt(socket.IPPROTO_TCP, option, value)


_SECRETS = frozenset({"password", "ssl_password"})


def shown_url(url: str) -> str:
    """``url`` as logs and error messages show it: its password and its key file's
    passphrase (``ssl_password``) replaced by ``***``."""
    parts = urlsplit(url)
    fields = parse_qsl(parts.query, keep_blank_values=True)
    if parts.password is None and not any(key in _SECRETS for key, _ in fields):
        return url  # as given: rebuilt, unix:///path would lose its slashes
    user, _, host = parts.netloc.rpartition("@")
    netloc = f"{user.partition(':')[0]}:***@{host}" if parts.password is not None else host
    shown = [(key, "***" if key in _SECRETS else value) for key, value in fields]
    return parts._replace(netloc=netloc, query=urlencode(shown, safe="/*")).geturl()


def tls_context(settings: dict[str, Any]) -> ssl.SSLContext | None:
    """The TLS context redis-py would build for these URL settings (None: plaintext),
    with its defaults: the server's certificate required and its name checked."""
    if settings.get("connection_class") is not SSLConnection:
        return None
    return RedisSSLContext(
        keyfile=settings.get("ssl_keyfile"),
        certfile=settings.get("ssl_certfile"),
        cert_reqs=settings.get("ssl_cert_reqs", "required"),
        include_verify_flags=settings.get("ssl_include_verify_flags"),
        exclude_verify_flags=settings.get("ssl_exclude_verify_flags"),
        ca_certs=settings.get("ssl_ca_certs"),
        ca_path=settings.get("ssl_ca_path"),
        check_hostname=settings.get("ssl_check_hostname", True),
        min_version=settings.get("ssl_min_version"),
        ciphers=settings.get("ssl_ciphers"),
        password=settings.get("ssl_password"),  # of an encrypted ssl_keyfile
    ).get()


class PipedScript:
    """A Lua script run by SHA on a RedisPipe, called like redis-py's AsyncScript:
    ``await script(keys=..., args=...)``. A Redis that lost its script cache (a
    restart) gets the source once, with that call. ``repeat_safe``: the script
    answers its own repeat as it answered the first run, so a call whose reply was
    lost may be sent again (RedisPipe.execute)."""

    def __init__(self, pipe: RedisPipe, source: str, repeat_safe: bool = False) -> None:
        self.pipe = pipe
        self.source = source
        self.repeat_safe = repeat_safe
        self.sha = hashlib.sha1(source.encode("utf-8")).hexdigest()
        # Calls made, for tests and profiling.
        self.calls = 0

    async def __call__(self, keys: Sequence[Any] = (), args: Sequence[Any] = ()) -> Any:
        self.calls += 1
        try:
            return await self.pipe.execute(
                "EVALSHA", self.sha, len(keys), *keys, *args, repeat_safe=self.repeat_safe
            )
        except NoScriptError:
            # EVAL also caches the script, so the calls after this go by SHA again.
            return await self.pipe.execute(
                "EVAL", self.source, len(keys), *keys, *args, repeat_safe=self.repeat_safe
            )


def _error(reply: ResponseError) -> ResponseError:
    """The exception redis-py raises for this error reply (NoScriptError for NOSCRIPT,
    and so on)."""
    error: ResponseError = BaseParser.parse_error(str(reply))  # type: ignore[no-untyped-call]
    return error
