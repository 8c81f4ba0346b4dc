"""Client side of the wire: a channel, logging in, and the token on every call."""

from __future__ import annotations

from typing import Self

import grpc

from authq.v1 import auth_pb2 as upb
from authq.v1 import auth_pb2_grpc
from authq.wire import CHANNEL_OPTIONS

AUTH_KEY = "authorization"
DEFAULT_TARGET = "127.0.0.1:50051"


def open_channel(target: str = DEFAULT_TARGET) -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS)


class AuthenticatedClient:
    """Holds a channel and a login token. Give a token from an earlier login, or a
    password: entering the client (``async with``) then logs in."""

    def __init__(
        self,
        target: str,
        user_id: str,
        password: str = "",
        *,
        token: str = "",
        channel: grpc.aio.Channel | None = None,
    ) -> None:
        self.user_id = user_id
        self.password = password
        self.token = token
        self.login_reply: upb.LoginReply | None = None
        self.channel = channel or open_channel(target)
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
    call would have got."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message

    @classmethod
    def from_wire(cls, code: int, message: str) -> SessionCallError:
        status = next((s for s in grpc.StatusCode if s.value[0] == code), grpc.StatusCode.UNKNOWN)
        return cls(status, message)
