"""The authorizer command line's lease book when its file write is cut short or the
file is damaged (the tokens recorded before survive; a damaged book is one line),
its permissions, and a session stream that the server ends cleanly (status OK):
every call waiting for an answer, and every later one, fails as UNAVAILABLE."""

from __future__ import annotations

import asyncio
import contextlib
import os
import stat
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from authq.channel import SessionCallError
from authq.v1 import authorizer_pb2 as apb

from authorizer_console.client import AuthorizerClient
from authorizer_console.lease_book import LeaseBook
from tests.conftest import RunningServer
from tests.helpers import request
from tests.test_cli import _cli_env, run_cli

AUTHORIZER = "authorizer_console.cli"
# Runs `python -m ARGV[2:]` with files limited to ARGV[1] bytes: a write past the
# limit fails part way (EFBIG, as ENOSPC on a full disk; Python ignores SIGXFSZ).
LIMITED = (
    "import os, resource, sys\n"
    "limit = int(sys.argv[1])\n"
    "resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))\n"
    "os.execv(sys.executable, [sys.executable, '-m', *sys.argv[2:]])\n"
)


async def run_cli_limited(
    file_bytes: int, module: str, *args: str, env: dict[str, str]
) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", LIMITED, str(file_bytes), module, *args,
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env={**os.environ, **env},
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def submit(server: RunningServer, request_id: str) -> None:
    async with server.teller() as teller:
        await teller.submit(request(request_id=request_id))


async def take_next(env: dict[str, str], tmp_path: Path) -> None:
    code, _, err = await run_cli(AUTHORIZER, "next", "--timeout", "10",
                                 "--images-dir", str(tmp_path / "got"), env=env)  # fmt: skip
    assert code == 0, err


def book_of(tmp_path: Path) -> Path:
    return tmp_path / "state" / "leases-authorizer-1.json"


async def test_a_book_write_cut_short_keeps_the_leases_recorded_before(
    server: RunningServer, tmp_path: Path
) -> None:
    env = await _cli_env(server, tmp_path)
    await submit(server, "kept-0001")
    await take_next(env, tmp_path)
    book = book_of(tmp_path)
    await submit(server, "cut-0002")
    # The book with both items no longer fits: its write fails part way. The cached
    # login is used (no password), so the book is the only file this run writes.
    cached = {k: v for k, v in env.items() if k != "AUTHQ_PASSWORD"}
    code, out, err = await run_cli_limited(book.stat().st_size + 1, AUTHORIZER, "next",
                                           "--timeout", "10", env=cached)  # fmt: skip
    assert code == 2
    assert "cut-0002" in out
    assert err.splitlines()[1:] == [f"authq-authorizer: {book}: File too large"]
    assert sorted(p.name for p in book.parent.iterdir()) == [book.name, "token-authorizer-1.json"]
    # The item taken before is still recorded: decided without --token.
    code, out, err = await run_cli(AUTHORIZER, "approve", "kept-0001", env=env)
    assert code == 0, err
    assert "APPROVED" in out


@pytest.mark.parametrize(
    ("content", "why"),
    [('{"torn-0001": {"token": 3, "ima', "not JSON"), ("[1, 2]", "not a lease book")],
)
async def test_a_damaged_book_is_one_line_that_says_to_pass_the_token(
    server: RunningServer, tmp_path: Path, content: str, why: str
) -> None:
    env = await _cli_env(server, tmp_path)
    book = book_of(tmp_path)
    book.parent.mkdir(parents=True)
    book.write_text(content)
    code, _, err = await run_cli(AUTHORIZER, "approve", "torn-0001", env=env)
    assert code == 2
    assert err == (
        f"authq-authorizer: the lease book {book} is damaged ({why}): "
        "pass --token as `next` showed it\n"
    )


async def test_next_over_a_damaged_book_starts_a_new_one_and_says_so(
    server: RunningServer, tmp_path: Path
) -> None:
    env = await _cli_env(server, tmp_path)
    book = book_of(tmp_path)
    book.parent.mkdir(parents=True)
    book.write_text('{"torn-0001": {"token": 3, "ima')
    await submit(server, "fresh-0001")
    code, out, err = await run_cli(AUTHORIZER, "next", "--timeout", "10",
                                   "--images-dir", str(tmp_path / "got"), env=env)  # fmt: skip
    assert code == 0, err
    assert "fresh-0001" in out
    assert err.splitlines() == [
        "waiting for the next item...",
        f"authq-authorizer: the lease book {book} is damaged (not JSON): a new one is "
        "started; pass --token for items taken before",
    ]
    code, out, err = await run_cli(AUTHORIZER, "approve", "fresh-0001", env=env)
    assert code == 0, err
    assert "APPROVED" in out


def test_a_new_book_is_the_owners_alone_and_a_rewrite_keeps_its_mode(tmp_path: Path) -> None:
    path = tmp_path / "state" / "leases.json"
    umask = os.umask(0o022)
    try:
        LeaseBook(path).put("one-0001", 7, [])
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        path.chmod(0o640)
        LeaseBook(path).put("two-0002", 8, [])
    finally:
        os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert LeaseBook(path).token("one-0001", None) == 7
    assert LeaseBook(path).token("two-0002", None) == 8


async def end_after_one_message(
    request_iterator: AsyncIterator[apb.AuthorizerSessionIn], context: Any
) -> AsyncIterator[apb.AuthorizerSessionOut]:
    """A session that reads one message, answers nothing, and ends the stream with
    OK, as a server shutting down (or a proxy) may."""
    async for _ in request_iterator:
        return
    yield apb.AuthorizerSessionOut()  # never reached: makes this a stream


@contextlib.asynccontextmanager
async def ending_server() -> AsyncIterator[AuthorizerClient]:
    """An authorizer client of a server whose sessions end_after_one_message (no login
    needed)."""
    session = grpc.stream_stream_rpc_method_handler(
        end_after_one_message,
        request_deserializer=apb.AuthorizerSessionIn.FromString,
        response_serializer=apb.AuthorizerSessionOut.SerializeToString,
    )
    server = grpc.aio.server()
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("authq.v1.AuthorizerService", {"Session": session}),)
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with AuthorizerClient(f"127.0.0.1:{port}", "authorizer-1", token="t") as client:
            yield client
    finally:
        await server.stop(None)


def decide_message() -> dict[str, Any]:
    return {"decide": apb.DecideRequest(request_id="r-0001", fencing_token=1)}


async def test_a_call_waiting_when_the_server_ends_the_session_fails_as_unavailable() -> None:
    async with ending_server() as client, client.session() as session:
        answer = session.request(**decide_message())
        await session.closed()  # the stream has ended: nothing will answer now
        assert answer.done(), "left waiting for an answer that cannot come"
        failure = answer.exception()
    assert isinstance(failure, SessionCallError)
    assert (failure.code, failure.message) == (
        grpc.StatusCode.UNAVAILABLE,
        "session ended by the server",
    )


async def test_a_call_after_the_server_ended_the_session_fails_at_once() -> None:
    async with ending_server() as client, client.session() as session:
        session.credit()  # the one message the server reads
        await session.closed()
        with pytest.raises(SessionCallError, match="UNAVAILABLE: session ended by the server"):
            session.credit()
