"""Client side of the wire: a channel, logging in, and the token on every call."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, Self, TypeVar

import grpc
from google.protobuf.message import Message

from authq.batching import batched, unpacked
from authq.refusals import Refusal, refusal_of, session_refusal
from authq.v1 import auth_pb2 as upb
from authq.v1 import auth_pb2_grpc
from authq.v1 import common_pb2 as cpb
from authq.wire import CHANNEL_OPTIONS

AUTH_KEY = "authorization"
# The server's default --listen port; a target without a port means this one, not
# gRPC's own default (443).
DEFAULT_PORT = 50051
_GRPC_SCHEMES = ("dns:", "unix:", "unix-abstract:", "vsock:", "ipv4:", "ipv6:")
DEFAULT_TARGET = f"127.0.0.1:{DEFAULT_PORT}"


@dataclass(frozen=True, slots=True)
class ClientTLS:
    """TLS for a client channel: the CA that signed the server's certificate (None:
    the system's roots) and, for servers that require one, a client certificate."""

    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None

    def __post_init__(self) -> None:
        if (self.cert is None) != (self.key is None):
            raise ValueError("TLS client certificate and key: give both or neither")

    @classmethod
    def from_options(
        cls, ca: Path | str | None, cert: Path | str | None, key: Path | str | None
    ) -> ClientTLS | None:
        """From command line options: None (plaintext) when none is given."""
        if not (ca or cert or key):
            return None
        return cls(
            ca=Path(ca) if ca else None,
            cert=Path(cert) if cert else None,
            key=Path(key) if key else None,
        )

    def credentials(self) -> grpc.ChannelCredentials:
        """Reads the files; OSError names the one that cannot be read."""
        return grpc.ssl_channel_credentials(
            root_certificates=self.ca.read_bytes() if self.ca else None,
            private_key=self.key.read_bytes() if self.key else None,
            certificate_chain=self.cert.read_bytes() if self.cert else None,
        )


def with_default_port(target: str) -> str:
    """``host`` -> ``host:50051`` (``::1`` and ``[::1]`` too); a target that names a
    port, or a gRPC URI (``dns:///``, ``unix:``...), is left as it is."""
    if target.startswith(_GRPC_SCHEMES):
        return target
    if target.startswith("["):
        return target if "]:" in target else f"{target}:{DEFAULT_PORT}"
    if target.count(":") > 1:  # a bare IPv6 address
        return f"[{target}]:{DEFAULT_PORT}"
    host, _, port = target.partition(":")
    return target if port else f"{host}:{DEFAULT_PORT}"


# A client that lost the center tries to connect again after a pause that grows with
# each failure; gRPC lets it grow to two minutes, so a center back after a long
# outage would wait that long for a client that follows a request (authq.reconnect).
CLIENT_OPTIONS: list[tuple[str, int]] = [
    *CHANNEL_OPTIONS,
    ("grpc.max_reconnect_backoff_ms", 5_000),
]


def open_channel(target: str = DEFAULT_TARGET, *, tls: ClientTLS | None = None) -> grpc.aio.Channel:
    """A plaintext channel, or a TLS one when ``tls`` is given."""
    target = with_default_port(target)
    if tls is None:
        return grpc.aio.insecure_channel(target, options=CLIENT_OPTIONS)
    return grpc.aio.secure_channel(target, tls.credentials(), options=CLIENT_OPTIONS)


class AuthenticatedClient:
    """Holds a channel and a login token. Give a token from an earlier login, or a
    password: entering the client (``async with``) then logs in. ``tls`` makes the
    channel it opens a TLS one."""

    def __init__(
        self,
        target: str,
        user_id: str,
        password: str = "",
        *,
        token: str = "",
        channel: grpc.aio.Channel | None = None,
        tls: ClientTLS | None = None,
    ) -> None:
        self.user_id = user_id
        self.password = password
        self.token = token
        self.login_reply: upb.LoginReply | None = None
        self.channel = channel or open_channel(target, tls=tls)
        self._owns_channel = channel is None
        self.auth = auth_pb2_grpc.AuthServiceStub(self.channel)

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        return ((AUTH_KEY, f"Bearer {self.token}"),)

    async def login(self) -> upb.LoginReply:
        reply: upb.LoginReply = await self.auth.Login(
            upb.LoginRequest(user_id=self.user_id, password=self.password)
        )
        self.token, self.login_reply = reply.token, reply
        return reply

    async def change_password(self, new_password: str) -> upb.LoginReply:
        reply: upb.LoginReply = await self.auth.ChangePassword(
            upb.ChangePasswordRequest(
                user_id=self.user_id, old_password=self.password, new_password=new_password
            )
        )
        self.password, self.token, self.login_reply = new_password, reply.token, reply
        return reply

    async def logout(self) -> None:
        await self.auth.Logout(upb.LogoutRequest(), metadata=self.metadata)
        self.token = ""

    async def __aenter__(self) -> Self:
        if not self.token:
            await self.login()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._owns_channel:
            await self.channel.close()


class SessionCallError(Exception):
    """A refusal that arrived inside a session stream, with the gRPC status a unary
    call would have got, and ``refusal``, its reason and facts (authq.refusals)."""

    def __init__(self, code: grpc.StatusCode, message: str, refusal: Refusal | None = None) -> None:
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message
        self.refusal = refusal

    @classmethod
    def from_wire(cls, error: cpb.SessionError) -> SessionCallError:
        code = error.code
        status = next((s for s in grpc.StatusCode if s.value[0] == code), grpc.StatusCode.UNKNOWN)
        return cls(status, error.message, session_refusal(error))


In = TypeVar("In", bound=Message)


class SessionStream(Generic[In]):
    """The machinery shared by the session-stream clients: messages out through a
    queue, answers matched to calls by ``ref``, a refusal inside the stream raised
    as SessionCallError, and, once the stream has ended, every later call failing at
    once with the reason. Subclasses route what the server sends unasked
    (``unsolicited``)."""

    def __init__(
        self,
        start: Callable[[AsyncIterator[In]], Any],
        message_type: Callable[..., In],
        batch: Callable[[Sequence[In]], In],
        alone: Callable[[In], bool] = lambda message: False,
    ) -> None:
        """``start`` opens the call (with BATCHES_METADATA); ``batch`` wraps several
        messages into one; ``alone`` tells a message never to batch (image chunks)."""
        self._start = start
        self._message_type = message_type
        self._batch = batch
        self._alone = alone
        self._outbox: asyncio.Queue[In | None] = asyncio.Queue()
        self._pending: dict[str, asyncio.Future[Any]] = {}
        self._refs = itertools.count(1)
        self._call: Any = None
        self._reader: asyncio.Task[None] | None = None
        self._closing = False
        self.failure: SessionCallError | None = None

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def open(self) -> None:
        self._call = self._start(batched(self._outbox, self._batch, alone=self._alone))
        self._reader = asyncio.create_task(self._read())

    async def close(self) -> None:
        self._closing = True
        self._outbox.put_nowait(None)
        if self._reader is not None:
            with contextlib.suppress(asyncio.CancelledError, grpc.aio.AioRpcError):
                await self._reader

    def abort(self) -> None:
        """Drops the stream as a crashed client would."""
        if self._call is not None:
            self._call.cancel()

    def next_ref(self) -> str:
        return str(next(self._refs))

    def expect(self, ref: str) -> asyncio.Future[Any]:
        """A future for the answer to ``ref`` (several messages may share one ref)."""
        if self.failure is not None:
            raise self.failure
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[ref] = future
        return future

    def send(self, ref: str, **body: Any) -> None:
        if self.failure is not None:
            raise self.failure
        self._outbox.put_nowait(self._message_type(ref=ref, **body))

    def request(self, **body: Any) -> asyncio.Future[Any]:
        ref = self.next_ref()
        future = self.expect(ref)
        self.send(ref, **body)
        return future

    def unsolicited(self, message: Any) -> bool:
        """Takes what the server sent unasked; True when nothing waits for it."""
        return False

    def _take(self, message: Any) -> None:
        if self.unsolicited(message):
            return
        body = message.WhichOneof("body")
        future = self._pending.pop(message.ref, None)
        if future is None or future.done():
            return
        if body == "error":
            future.set_exception(SessionCallError.from_wire(message.error))
        else:
            future.set_result(getattr(message, body))

    async def _read(self) -> None:
        try:
            async for received in self._call:
                for message in unpacked(received):
                    self._take(message)
        except grpc.aio.AioRpcError as exc:
            self._end(
                SessionCallError(exc.code(), exc.details() or "session ended", refusal_of(exc))
            )
            raise
        # Ended with OK: nothing more will be answered, and what waits must not wait
        # forever. UNAVAILABLE, as for a lost link: the clients reconnect on it.
        why = "session closed by this client" if self._closing else "session ended by the server"
        self._end(SessionCallError(grpc.StatusCode.UNAVAILABLE, why))

    def _end(self, failure: SessionCallError) -> None:
        """Fails every call waiting for an answer, and every later one, with ``failure``."""
        self.failure = failure
        for future in self._pending.values():
            if not future.done():
                future.set_exception(failure)
        self._pending.clear()
