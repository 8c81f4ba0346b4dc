"""Every refusal carries the standard rich status (google.rpc.ErrorInfo, domain "authq")
with a stable reason and the facts a client acts on, read back by authq.refusals: no
client has to read the words of a message. Provoked against a real server."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

import grpc
import pytest
import redis.exceptions
from authq.channel import SessionCallError
from authq.refusals import DETAILS_KEY, DOMAIN, FieldViolation, Refusal, refusal_of
from authq.v1 import auth_pb2, auth_pb2_grpc, authorizer_pb2, authorizer_pb2_grpc
from google.protobuf.message import DecodeError
from google.rpc.error_details_pb2 import ErrorInfo
from google.rpc.status_pb2 import Status as RpcStatus

from authorizer_console.cli import not_held
from authorizer_console.client import AuthorizerClient
from authorizer_console.lease_book import LeaseBook
from server import errors
from server.accounts.model import Role, Status
from server.api import admission, status
from server.api.status import refused
from server.store.redis_pipe import ReplyLost
from teller_client.client import TellerClient
from tests.conftest import PASSWORD, RunningServer, StartServer
from tests.helpers import request, until
from tests.test_status_codes import _every_domain_error

DAY_MS = 86_400_000
CORRUPT = b"\xff\xff\xff"  # field number 0: no message type parses it
README = Path(__file__).resolve().parents[1] / "README.md"


async def refusal(call: Awaitable[Any], code: grpc.StatusCode) -> Refusal:
    """The refusal the failed call carries, having checked its status code."""
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await call
    assert failure.value.code() == code, failure.value.details()
    said = refusal_of(failure.value)
    assert said is not None, f"no ErrorInfo with {failure.value.details()!r}"
    return said


def _stub(channel: grpc.aio.Channel) -> Any:
    return authorizer_pb2_grpc.AuthorizerServiceStub(channel)


async def login_refusal(server: RunningServer, user: str, password: str) -> Refusal:
    client = TellerClient(server.target, user, password)
    try:
        return await refusal(client.login(), grpc.StatusCode.FAILED_PRECONDITION)
    finally:
        await client.close()


# -- fields and parsing -----------------------------------------------------------


async def test_a_field_at_fault_is_named_with_a_bad_request(server: RunningServer) -> None:
    async with server.teller() as teller:
        said = await refusal(
            teller.submit(request(request_id="short")), grpc.StatusCode.INVALID_ARGUMENT
        )
    assert said.reason == "INVALID_FIELD"
    assert said.metadata == {"field": "request_id"}
    assert said.violations == (
        FieldViolation("request_id", "must be 8 to 64 of A-Z a-z 0-9 . _ : - (a UUID is ideal)"),
    )


async def test_a_request_that_does_not_parse_names_its_type(server: RunningServer) -> None:
    async with grpc.aio.insecure_channel(server.target) as channel:
        login = channel.unary_unary("/authq.v1.AuthService/Login")
        said = await refusal(login(CORRUPT), grpc.StatusCode.INVALID_ARGUMENT)
    assert said == Refusal("REQUEST_UNPARSABLE", {"message_type": "authq.v1.LoginRequest"})


# -- the request's state and its lease ----------------------------------------------


async def test_an_illegal_transition_names_the_state_action_and_rule(
    server: RunningServer,
) -> None:
    async with server.teller() as teller, server.authorizer() as authorizer:
        rid = (await teller.submit(request())).request.request_id
        offer = await authorizer.next(timeout=10)
        said = await refusal(teller.cancel(rid), grpc.StatusCode.FAILED_PRECONDITION)
        assert said.reason == "ILLEGAL_TRANSITION"
        assert said.metadata == {
            "request_id": rid,
            "state": "CLAIMED",
            "action": "cancel",
            "rule": "R4: review has started, a request can only be withdrawn before that",
        }
        await authorizer.decide(rid, offer.lease.fencing_token, "approve")
        said = await refusal(
            authorizer.release(rid, offer.lease.fencing_token), grpc.StatusCode.FAILED_PRECONDITION
        )
    assert said == Refusal(
        "ILLEGAL_TRANSITION", {"request_id": rid, "state": "APPROVED", "action": "hand back"}
    )


async def test_a_lease_held_by_another_and_a_stale_token_are_told_apart(
    server: RunningServer,
) -> None:
    async with (
        server.teller() as teller,
        server.authorizer("a-1") as first,
        server.authorizer("a-2") as second,
    ):
        rid = (await teller.submit(request())).request.request_id
        mine = await first.next(timeout=10)
        await first.release(rid, mine.lease.fencing_token)
        again = await first.next(timeout=10)
        said = await refusal(
            first.decide(rid, mine.lease.fencing_token, "approve"), grpc.StatusCode.ABORTED
        )
        assert said == Refusal(
            "STALE_FENCING_TOKEN",
            {
                "request_id": rid,
                "token": str(mine.lease.fencing_token),
                "current_token": str(again.lease.fencing_token),
            },
        )
        await first.release(rid, again.lease.fencing_token)
        assert (await second.next(timeout=10)).request.request_id == rid
        said = await refusal(
            first.decide(rid, again.lease.fencing_token, "approve"), grpc.StatusCode.ABORTED
        )
    assert said == Refusal("LEASE_HELD_BY_OTHER", {"request_id": rid})


async def test_renew_and_release_tell_the_lease_reasons_apart_in_words_too(
    server: RunningServer,
) -> None:
    async with (
        server.teller() as teller,
        server.authorizer("a-1") as first,
        server.authorizer("a-2") as second,
    ):
        rid = (await teller.submit(request())).request.request_id
        old = (await first.next(timeout=10)).lease.fencing_token
        await first.release(rid, old)
        current = (await first.next(timeout=10)).lease.fencing_token
        stale = {"request_id": rid, "token": str(old), "current_token": str(current)}
        for action, call in (("renew the lease of", first.renew), ("hand back", first.release)):
            with pytest.raises(grpc.aio.AioRpcError) as failure:
                await call(rid, old)
            assert failure.value.code() == grpc.StatusCode.ABORTED
            assert refusal_of(failure.value) == Refusal("STALE_FENCING_TOKEN", stale)
            assert failure.value.details() == (
                f"cannot {action} request {rid}: stale fencing token {old} (current {current})"
            )
        await first.release(rid, current)
        taken = (await second.next(timeout=10)).lease.fencing_token
        for call in (first.renew, first.release):
            said = await refusal(call(rid, taken), grpc.StatusCode.ABORTED)
            assert said == Refusal("LEASE_HELD_BY_OTHER", {"request_id": rid})


async def test_a_lease_that_ran_out_before_the_reaper_came_is_expired(
    start_server: StartServer, tmp_path: Path
) -> None:
    server = await start_server(lease_ms=300)
    await server.runtime.reaper.stop()  # the item stays CLAIMED past its lease
    async with server.teller() as teller, server.authorizer() as authorizer:
        rid = (await teller.submit(request())).request.request_id
        offer = await authorizer.next(timeout=10)
        await asyncio.sleep(max(0.0, offer.lease.expires_at_ms / 1000 - time.time()) + 0.2)
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await authorizer.decide(rid, offer.lease.fencing_token, "approve")
        with pytest.raises(grpc.aio.AioRpcError) as renewal:
            await authorizer.renew(rid, offer.lease.fencing_token)
    assert failure.value.code() == grpc.StatusCode.ABORTED
    assert refusal_of(failure.value) == Refusal("LEASE_EXPIRED", {"request_id": rid})
    assert refusal_of(renewal.value) == Refusal("LEASE_EXPIRED", {"request_id": rid})
    assert renewal.value.details() == f"cannot renew the lease of request {rid}: lease expired"
    # What the command line makes of it.
    book = LeaseBook(tmp_path / "leases.json")
    said = not_held(failure.value, rid, offer.lease.fencing_token, book)
    assert said == f"{rid} is not held by you any more: your lease ran out"


async def test_an_unknown_request_and_a_reused_request_id(server: RunningServer) -> None:
    async with server.teller() as teller, server.authorizer() as authorizer:
        said = await refusal(authorizer.renew("no-such-request", 1), grpc.StatusCode.NOT_FOUND)
        assert said == Refusal("NOT_FOUND", {"request_id": "no-such-request"})
        first = request()
        await teller.submit(first)
        other = request(request_id=first.request_id, amount_minor=99_900)
        said = await refusal(teller.submit(other), grpc.StatusCode.ALREADY_EXISTS)
    assert said == Refusal(
        "ALREADY_EXISTS", {"request_id": first.request_id, "exists": "request", "state": "QUEUED"}
    )


async def test_an_authorizer_set_away_is_told_so(server: RunningServer) -> None:
    async with server.authorizer("auth-away") as authorizer:
        await authorizer.set_away(True)
        said = await refusal(authorizer.next(timeout=5), grpc.StatusCode.FAILED_PRECONDITION)
    assert said == Refusal("AUTHORIZER_AWAY", {"authorizer_id": "auth-away"})


# -- who is calling ------------------------------------------------------------------


async def test_a_password_to_change_says_why(server: RunningServer) -> None:
    await server.account("teller-1", [Role.TELLER], "branch-1")
    accounts = server.runtime.accounts
    old = (await accounts.get("teller-1")).password_set_ms - 91 * DAY_MS
    await server.runtime.client.hset("{authq}:acct:teller-1", "pwat", old)
    said = await login_refusal(server, "teller-1", PASSWORD)
    assert said == Refusal("PASSWORD_CHANGE_REQUIRED", {"user_id": "teller-1", "why": "expired"})
    await accounts.reset_password("teller-1", "temporary-password-9")
    said = await login_refusal(server, "teller-1", "temporary-password-9")
    assert said == Refusal("PASSWORD_CHANGE_REQUIRED", {"user_id": "teller-1", "why": "reset"})


async def test_a_wrong_password_missing_or_bad_token_and_a_role_without_the_right(
    server: RunningServer,
) -> None:
    await server.account("teller-1", [Role.TELLER], "branch-1")
    async with grpc.aio.insecure_channel(server.target) as channel:
        login = auth_pb2_grpc.AuthServiceStub(channel).Login
        wrong = auth_pb2.LoginRequest(user_id="teller-1", password="not-the-password")
        said = await refusal(login(wrong), grpc.StatusCode.UNAUTHENTICATED)
    assert said == Refusal("LOGIN_REFUSED")
    next_request = authorizer_pb2.NextRequest()
    async with grpc.aio.insecure_channel(server.target) as channel:
        said = await refusal(_stub(channel).Next(next_request), grpc.StatusCode.UNAUTHENTICATED)
        assert said == Refusal("TOKEN_MISSING")
        bad = (("authorization", "Bearer not-a-token"),)
        said = await refusal(
            _stub(channel).Next(next_request, metadata=bad), grpc.StatusCode.UNAUTHENTICATED
        )
        assert said == Refusal("TOKEN_INVALID")
    async with AuthorizerClient(server.target, "teller-1", PASSWORD) as teller:
        said = await refusal(teller.next(timeout=5), grpc.StatusCode.PERMISSION_DENIED)
    assert said == Refusal(
        "ROLE_LACKS_RIGHT",
        {"method": "AuthorizerService.Next", "needed": "AUTHORIZER", "held": "TELLER"},
    )


# -- session streams -----------------------------------------------------------------


async def test_a_refusal_inside_a_session_carries_its_reason(server: RunningServer) -> None:
    async with server.teller() as teller, server.authorizer() as authorizer:
        rid = (await teller.submit(request())).request.request_id
        first = await authorizer.next(timeout=10)
        await authorizer.release(rid, first.lease.fencing_token)
        second = await authorizer.next(timeout=10)
        async with authorizer.session() as console:
            with pytest.raises(SessionCallError) as failure:
                await console.decide(rid, first.lease.fencing_token, "approve")
    assert failure.value.code == grpc.StatusCode.ABORTED
    assert failure.value.refusal == Refusal(
        "STALE_FENCING_TOKEN",
        {
            "request_id": rid,
            "token": str(first.lease.fencing_token),
            "current_token": str(second.lease.fencing_token),
        },
    )
    async with server.teller() as teller, teller.session() as session:
        with pytest.raises(SessionCallError) as failure:
            await session.submit(request(request_id="short"))
    assert failure.value.refusal == Refusal("INVALID_FIELD", {"field": "request_id"})


async def test_a_session_closed_for_a_revoked_token_says_so(server: RunningServer) -> None:
    async with server.authorizer() as authorizer, authorizer.session() as console:
        # An answer: the stream is open on the server (it opens at the first message).
        with pytest.raises(SessionCallError) as failure:
            await console.decide("no-such-request", 1, "approve")
        assert failure.value.refusal == Refusal("NOT_FOUND", {"request_id": "no-such-request"})
        await server.runtime.accounts.set_status("authorizer-1", Status.DISABLED)
        await until(lambda: console.failure is not None)
    assert console.failure is not None
    assert console.failure.code == grpc.StatusCode.UNAUTHENTICATED
    assert console.failure.refusal == Refusal("TOKEN_INVALID")
    async with server.teller() as teller, teller.session() as workstation:
        with pytest.raises(SessionCallError):
            await workstation.watch("no-such-request")
        await server.runtime.accounts.set_status("teller-1", Status.DISABLED)
        await until(lambda: workstation.failure is not None)
    assert workstation.failure is not None
    assert workstation.failure.refusal == Refusal("TOKEN_INVALID")


# -- what no test server can be made to say --------------------------------------------


def _as_received(exc: BaseException) -> grpc.aio.AioRpcError:
    """The failure a client would get for the exception: the server's status and
    trailer, as the client library hands them over."""
    code, message, said = refused(exc)
    trailer = grpc.aio.Metadata(said.trailer(code, message))
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), trailer, message)


@pytest.mark.parametrize(
    ("exc", "code", "expected"),
    [
        (
            errors.OnsiteFallbackRequired("em-7"),
            grpc.StatusCode.FAILED_PRECONDITION,
            Refusal("EMERGENCY_IN_FORCE", {"emergency_id": "em-7"}),
        ),
        (ReplyLost("Redis at x: lost"), grpc.StatusCode.UNAVAILABLE, Refusal("OUTCOME_UNKNOWN")),
        (
            redis.exceptions.ConnectionError("down"),
            grpc.StatusCode.UNAVAILABLE,
            Refusal("STORE_UNREACHABLE"),
        ),
        (
            DecodeError("not protobuf"),
            grpc.StatusCode.INVALID_ARGUMENT,
            Refusal("REQUEST_UNPARSABLE"),
        ),
    ],
)
def test_refusals_no_test_server_is_made_to_give(
    exc: BaseException, code: grpc.StatusCode, expected: Refusal
) -> None:
    received = _as_received(exc)
    assert received.code() == code
    assert refusal_of(received) == expected


def test_an_internal_error_is_internal(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, logger="server.api.status"):
        received = _as_received(KeyError("oops"))
    assert received.code() == grpc.StatusCode.INTERNAL
    assert refusal_of(received) == Refusal("INTERNAL")
    assert len(caplog.records) == 1  # a fault of the server, logged as such


def test_a_far_too_long_id_is_cut_in_the_refusal_too() -> None:
    code, message, said = refused(errors.NotFound("no such request", request_id="x" * 100_000))
    assert len(said.metadata["request_id"]) <= 200
    assert len(said.trailer(code, message)[1]) < 8 * 1024 // 2


def test_a_trailer_for_another_status_or_domain_is_no_refusal() -> None:
    status = RpcStatus(code=grpc.StatusCode.NOT_FOUND.value[0], message="gone")
    status.details.add().Pack(ErrorInfo(reason="NOT_FOUND", domain=DOMAIN))
    trailer = grpc.aio.Metadata((DETAILS_KEY, status.SerializeToString()))
    other_code = grpc.aio.AioRpcError(grpc.StatusCode.ABORTED, grpc.aio.Metadata(), trailer)
    assert refusal_of(other_code) is None
    elsewhere = RpcStatus(code=grpc.StatusCode.NOT_FOUND.value[0], message="gone")
    elsewhere.details.add().Pack(ErrorInfo(reason="NOT_FOUND", domain="example.com"))
    trailer = grpc.aio.Metadata((DETAILS_KEY, elsewhere.SerializeToString()))
    other_domain = grpc.aio.AioRpcError(grpc.StatusCode.NOT_FOUND, grpc.aio.Metadata(), trailer)
    assert refusal_of(other_domain) is None
    bare = grpc.aio.AioRpcError(
        grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata()
    )
    assert refusal_of(bare) is None


def test_every_reason_the_server_gives_is_in_the_readme() -> None:
    section = README.read_text().split("### Refusals", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"^\| `([A-Z_]+)` \|", section, re.MULTILINE))
    given = {
        "INVALID_FIELD", "REQUEST_UNPARSABLE", "ILLEGAL_TRANSITION", "AUTHORIZER_AWAY",
        "EMERGENCY_IN_FORCE", "LEASE_HELD_BY_OTHER", "LEASE_EXPIRED", "STALE_FENCING_TOKEN",
        "PASSWORD_CHANGE_REQUIRED", "ROLE_LACKS_RIGHT", "TOKEN_MISSING", "TOKEN_INVALID",
        "LOGIN_REFUSED", "LOGIN_LOCKED", "OUTCOME_UNKNOWN", "STORE_UNREACHABLE", "INTERNAL",
    }  # fmt: skip
    classes = {cls.reason for cls in _every_domain_error()}
    store = {reason for _, reason, _ in status._STORE_REFUSALS.values()}
    assert given | classes | store | {admission.AT_CAPACITY_REASON} == documented


async def test_a_refusal_naming_a_long_non_ascii_id_still_reaches_the_caller(
    server: RunningServer,
) -> None:
    """The status message and the refusal travel in the trailers, which a peer refuses
    past 8 KB: cut by their encoded size, not by characters (a CJK character is 9
    bytes percent-encoded in grpc-message)."""
    long_id = "账户" * 2000
    async with server.supervisor() as supervisor:
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await supervisor.set_account_enabled(long_id, False, "on leave")
    assert failure.value.code() == grpc.StatusCode.NOT_FOUND, failure.value.details()
    said = failure.value.details() or ""
    assert said.startswith("no account 账户账户")
    assert said.endswith(f"... ({len('no account ' + long_id)} characters)")
    assert len(said.encode()) <= status.MESSAGE_MAX_BYTES
    assert refusal_of(failure.value) is not None
