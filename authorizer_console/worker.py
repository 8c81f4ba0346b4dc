"""The console's network side: an asyncio loop in a thread of its own, so the Tk
thread never waits on the network. Commands come in through ``send`` (thread-safe);
events go out through the ``post`` callback (the Tk side puts them on a queue it
polls with ``after``).

It logs in, then keeps one connection alive: an authorizer's session stream (offers
pushed, leases renewed by the server) or a supervisor's WatchQueue stream. When the
connection drops it says so and tries again with backoff (0.5 s doubling to 10 s).
A refused login (wrong password, disabled account) ends the retrying."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Awaitable, Callable

import grpc
from authq.channel import ClientTLS, SessionCallError
from authq.exits import local_reason
from authq.login import password_change_needed
from authq.refusals import reason_of, refusal_of
from authq.render import state_name
from authq.v1 import auth_pb2 as upb

from authorizer_console.client import AuthorizerClient, AuthorizerSessionClient
from authorizer_console.images import fetch_image, prepare
from authorizer_console.messages import (
    ActionDone,
    ActionRefused,
    AwayChanged,
    Command,
    ConfirmMove,
    Connected,
    Connecting,
    Credit,
    Decide,
    DeclareEmergency,
    EndEmergency,
    Event,
    ImageFailed,
    ImageReady,
    LeaseLost,
    LoginFailed,
    OfferArrived,
    Release,
    RequestMove,
    SetAccountEnabled,
    SetAway,
    SnapshotArrived,
)

log = logging.getLogger(__name__)

FIRST_RETRY_S = 0.5
MAX_RETRY_S = 10.0
ORPHAN_RENEW_S = 5.0
# Login refusals that retrying cannot fix.
_FINAL = {
    grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.INVALID_ARGUMENT,
}
# A call cut by the connection, not answered: whether it was carried out is unknown.
_TRANSPORT = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED}
_ACTION_NAMES = {
    Decide: "decide",
    Release: "release",
    SetAway: "away",
    RequestMove: "move",
    ConfirmMove: "confirm",
    DeclareEmergency: "declare",
    EndEmergency: "end",
    SetAccountEnabled: "account",
}


def role_names(reply: upb.LoginReply) -> tuple[str, ...]:
    return tuple(upb.Role.Name(r).removeprefix("ROLE_") for r in reply.roles)


def _target_of(command: Command) -> str:
    for attribute in ("request_id", "emergency_id", "user_id"):
        value = getattr(command, attribute, None)
        if isinstance(value, str):
            return value
    return ""


def _not_held(exc: grpc.aio.AioRpcError) -> bool:
    """The center says the item is not this authorizer's any more: another holds it,
    the lease ran out, it was taken again, it was decided or handed back meanwhile (a
    state with no lease), or it is gone. Anything else (the center away, at capacity)
    may pass: the renewals go on."""
    codes = (grpc.StatusCode.ABORTED, grpc.StatusCode.NOT_FOUND)
    return exc.code() in codes or reason_of(exc) == "ILLEGAL_TRANSITION"


def _state_named(exc: grpc.aio.AioRpcError) -> str:
    """The item's state a refusal names (ILLEGAL_TRANSITION says it), else ""."""
    refusal = refusal_of(exc)
    return refusal.metadata.get("state", "") if refusal is not None else ""


class Worker:
    def __init__(
        self,
        target: str,
        user_id: str,
        password: str,
        post: Callable[[Event], None],
        tls: ClientTLS | None = None,
    ) -> None:
        self.target = target
        self.user_id = user_id
        self.password = password
        self.post = post
        self.tls = tls
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stop: asyncio.Event | None = None
        self._handler: Callable[[Command], Awaitable[None]] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        # Items offered and not yet decided, across reconnects: request id -> token.
        self._held: dict[str, int] = {}
        # The Decide sent for a held item and not answered yet, across reconnects: a
        # connection cut before its answer leaves it unknown whether it was recorded,
        # so it is sent again, the same, once reconnected (the center answers a
        # repeat with the decision it recorded).
        self._deciding: dict[str, Decide] = {}
        self._ready = threading.Event()

    # -- thread side -------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._thread_main, name="authq-net", daemon=True)
        self._thread.start()
        self._ready.wait(5)

    def send(self, command: Command) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._spawn_command, command)

    def stop(self, timeout_s: float = 5.0) -> None:
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(stop.set)
        if self._thread is not None:
            self._thread.join(timeout_s)

    def _thread_main(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._main())
        finally:
            loop.close()

    # -- loop side ---------------------------------------------------------------

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        self._ready.set()
        runner = asyncio.create_task(self._connect_forever())
        stopper = asyncio.create_task(self._stop.wait())
        await asyncio.wait({runner, stopper}, return_when=asyncio.FIRST_COMPLETED)
        # An open session ends itself on stop (a clean half-close lets the server
        # wind it down); give it a moment before cutting what is left.
        await asyncio.wait({runner}, timeout=1.5)
        for task in (runner, stopper, *self._tasks):
            task.cancel()
        await asyncio.gather(runner, stopper, *self._tasks, return_exceptions=True)

    def _spawn(self, work: Awaitable[None]) -> None:
        async def run() -> None:
            await work

        task = asyncio.create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _spawn_command(self, command: Command) -> None:
        handler = self._handler
        if handler is None:
            if not isinstance(command, Credit):
                self.post(
                    ActionRefused(
                        _ACTION_NAMES.get(type(command), "action"),
                        _target_of(command),
                        "UNAVAILABLE",
                        "not connected: reconnecting, try again in a moment",
                    )
                )
            return
        self._spawn(handler(command))

    async def _connect_forever(self) -> None:
        attempt, delay = 0, FIRST_RETRY_S
        while True:
            attempt += 1
            self.post(Connecting(attempt, 0))
            try:
                client = AuthorizerClient(self.target, self.user_id, self.password, tls=self.tls)
            except OSError as exc:  # opening the channel reads the TLS files
                self.post(LoginFailed(f"TLS: {local_reason(exc)}"))
                return
            reason = "the server closed the connection"
            try:
                try:
                    reply = await client.login()
                except grpc.aio.AioRpcError as exc:
                    if exc.code() in _FINAL:
                        # The server names the call; the person needs the command.
                        needed = password_change_needed(exc, "authq-authorizer")
                        self.post(LoginFailed(str(needed or exc.details() or exc.code().name)))
                        return
                    raise
                roles = role_names(reply)
                attempt, delay = 0, FIRST_RETRY_S
                if "AUTHORIZER" in roles:
                    self.post(Connected(self.user_id, roles))
                    await self._authorizer(client)
                    if self._stop is not None and self._stop.is_set():
                        return
                elif "SUPERVISOR" in roles or "DIRECTOR" in roles:
                    self.post(Connected(self.user_id, roles))
                    await self._supervisor(client)
                else:
                    self.post(LoginFailed(f"{self.user_id} holds no center role: {roles}"))
                    return
            except grpc.aio.AioRpcError as exc:
                reason = exc.details() or exc.code().name
            except (SessionCallError, OSError) as exc:
                reason = str(exc)
            finally:
                self._handler = None
                await client.close()
            self.post(Connecting(attempt, delay, reason))
            await asyncio.sleep(delay)
            delay = min(delay * 2, MAX_RETRY_S)

    # -- authorizer --------------------------------------------------------------

    async def _authorizer(self, client: AuthorizerClient) -> None:
        async with client.session() as session:
            orphans = dict(self._held)  # held from an earlier stream: renew them here
            pumps = [
                asyncio.create_task(self._offers(client, session)),
                asyncio.create_task(self._lost(session)),
                asyncio.create_task(self._leftovers(client, orphans)),
            ]

            async def handle(command: Command) -> None:
                await self._authorizer_command(client, session, command, orphans)

            self._handler = handle
            assert self._stop is not None
            ended = asyncio.create_task(session.closed())
            stopping = asyncio.create_task(self._stop.wait())
            try:
                await asyncio.wait({ended, stopping}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                ended.cancel()
                stopping.cancel()
                self._handler = None
                for pump in pumps:
                    pump.cancel()
                await asyncio.gather(*pumps, return_exceptions=True)
            if self._stop.is_set():
                return
            if session.failure is not None:
                raise session.failure

    async def _offers(self, client: AuthorizerClient, session: AuthorizerSessionClient) -> None:
        while True:
            offer = await session.offers.get()
            self._held[offer.lease.request_id] = offer.lease.fencing_token
            self.post(OfferArrived(offer))
            self._spawn(self._images(client, offer.request.request_id,
                                     [ref.sha256 for ref in offer.request.images]))  # fmt: skip

    async def _images(self, client: AuthorizerClient, request_id: str, hashes: list[str]) -> None:
        for index, sha256 in enumerate(hashes):
            try:
                data = await fetch_image(client, request_id, sha256)
                image, thumb = await asyncio.to_thread(prepare, data)
            except grpc.aio.AioRpcError as exc:
                self.post(ImageFailed(request_id, index, exc.details() or exc.code().name))
            except (OSError, ValueError) as exc:  # Pillow cannot read it
                self.post(ImageFailed(request_id, index, f"cannot show this image: {exc}"))
            else:
                self.post(ImageReady(request_id, index, image, thumb))

    async def _lost(self, session: AuthorizerSessionClient) -> None:
        while True:
            message = await session.lost.get()
            request_id = message.lease_lost.request_id
            self._held.pop(request_id, None)
            self._deciding.pop(request_id, None)
            self.post(LeaseLost(request_id, message.cause if message.HasField("cause") else None))

    async def _leftovers(self, client: AuthorizerClient, orphans: dict[str, int]) -> None:
        """The items held from an earlier stream: first the decisions a cut
        connection left unanswered, sent again, then the renewals of the rest."""
        for request_id in list(orphans):
            command = self._deciding.get(request_id)
            if command is not None:
                await self._decide_again(client, command, orphans)
        await self._renew_orphans(client, orphans)

    async def _decide_again(
        self, client: AuthorizerClient, command: Decide, orphans: dict[str, int]
    ) -> None:
        """The same Decide (token, outcome) again: a repeat of one the center
        recorded is answered as that decision, so the console shows its own."""
        request_id = command.request_id
        try:
            update = await client.decide(
                request_id, command.token, command.outcome,
                reason_code=command.reason_code, note=command.note, kinds=command.kinds,
            )  # fmt: skip
        except grpc.aio.AioRpcError as exc:
            if exc.code() in _TRANSPORT:
                return  # cut again: the next connection sends it
            self._deciding.pop(request_id, None)
            if _not_held(exc):
                self._forget(request_id, orphans)
                self.post(LeaseLost(request_id, state=_state_named(exc)))
            else:
                self.post(ActionRefused("decide", request_id, exc.code().name, exc.details() or ""))
            return
        self._forget(request_id, orphans)
        self.post(ActionDone("decide", request_id, state_name(update.state), update))

    async def _renew_orphans(self, client: AuthorizerClient, orphans: dict[str, int]) -> None:
        while orphans:
            for request_id, token in list(orphans.items()):
                try:
                    await client.renew(request_id, token)
                except grpc.aio.AioRpcError as exc:
                    if _not_held(exc):
                        orphans.pop(request_id, None)
                        self._held.pop(request_id, None)
                        self._deciding.pop(request_id, None)
                        self.post(LeaseLost(request_id, state=_state_named(exc)))
            if orphans:
                await asyncio.sleep(ORPHAN_RENEW_S)

    async def _authorizer_command(
        self,
        client: AuthorizerClient,
        session: AuthorizerSessionClient,
        command: Command,
        orphans: dict[str, int],
    ) -> None:
        name = _ACTION_NAMES.get(type(command), "action")
        target = _target_of(command)
        try:
            if isinstance(command, Credit):
                session.credit(1)
            elif isinstance(command, Decide):
                self._deciding[command.request_id] = command
                update = await session.decide(
                    command.request_id, command.token, command.outcome,
                    reason_code=command.reason_code, note=command.note, kinds=command.kinds,
                )  # fmt: skip
                self._forget(command.request_id, orphans)
                self.post(ActionDone(name, target, state_name(update.state), update))
            elif isinstance(command, Release):
                update = await session.release(command.request_id, command.token, command.note)
                self._forget(command.request_id, orphans)
                self.post(ActionDone(name, target, "handed back", update))
            elif isinstance(command, SetAway):
                away = await client.set_away(command.away)
                self.post(AwayChanged(away))
            else:
                self.post(ActionRefused(name, target, "INVALID_ARGUMENT",
                                        "not an authorizer's action"))  # fmt: skip
        except SessionCallError as exc:
            message = exc.message
            if isinstance(command, Decide):
                if exc.code in _TRANSPORT:
                    message += ": the decision is sent again once reconnected"
                else:
                    self._deciding.pop(command.request_id, None)
            self.post(ActionRefused(name, target, exc.code.name, message))
        except grpc.aio.AioRpcError as exc:
            self.post(ActionRefused(name, target, exc.code().name, exc.details() or ""))

    def _forget(self, request_id: str, orphans: dict[str, int]) -> None:
        self._held.pop(request_id, None)
        self._deciding.pop(request_id, None)
        orphans.pop(request_id, None)

    # -- supervisor --------------------------------------------------------------

    async def _supervisor(self, client: AuthorizerClient) -> None:
        async def handle(command: Command) -> None:
            await self._supervisor_command(client, command)

        self._handler = handle
        async for snapshot in client.watch_queue():
            self.post(SnapshotArrived(snapshot))

    async def _supervisor_command(self, client: AuthorizerClient, command: Command) -> None:
        name = _ACTION_NAMES.get(type(command), "action")
        target = _target_of(command)
        try:
            if isinstance(command, RequestMove):
                move = await client.request_move(command.request_id, command.reason)
                text = (
                    f"move of {move.request_id} requested: a second supervisor confirms it "
                    f"within {(move.expires_at_ms - move.requested_at_ms) // 60000} min (R6)"
                )
            elif isinstance(command, ConfirmMove):
                move = await client.confirm_move(command.request_id)
                text = f"move of {move.request_id} confirmed: now at position {move.position + 1}"
            elif isinstance(command, DeclareEmergency):
                emergency = await client.declare_emergency(command.reason, command.branch_ids)
                scope = ",".join(emergency.branch_ids) or "center-wide"
                text = f"emergency {emergency.emergency_id} declared ({scope}): on-site fallback"
            elif isinstance(command, EndEmergency):
                emergency = await client.end_emergency(command.emergency_id, command.note)
                text = f"emergency {emergency.emergency_id} ended"
            elif isinstance(command, SetAccountEnabled):
                reply = await client.set_account_enabled(
                    command.user_id, command.enabled, command.reason
                )
                text = f"account {reply.user_id} is now {reply.status}"
            else:
                return  # authorizer commands mean nothing here
        except grpc.aio.AioRpcError as exc:
            self.post(ActionRefused(name, target, exc.code().name, exc.details() or ""))
            return
        self.post(ActionDone(name, target, text))
