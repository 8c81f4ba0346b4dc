"""authq on a Redis reached over TLS (a ``rediss://`` URL): the pipelined connections
that carry the Lua scripts and the event stream, and the pooled client beside them.

The bundled redis-server is built without TLS, so the suite's Redis is put behind a
TLS front here, as stunnel or a managed Redis's TLS endpoint would be: every byte
authq sends it crosses that TLS connection."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from authq.v1 import common_pb2 as cpb
from cryptography import x509
from cryptography.x509.oid import NameOID
from redis.exceptions import ConnectionError

from server.devtools.make_test_ca import CAFiles, make_test_ca
from server.store import redis_pipe
from server.store.connect import PipedRedis, redis_client
from server.store.redis_pipe import RedisPipe, tls_refusal
from tests.conftest import RunningServer, StartServer
from tests.test_admin_cli import admin
from tests.test_archive import decided


class TlsFront:
    """Accepts TLS connections on a loopback port and relays each, decrypted, to the
    plaintext Redis behind it."""

    def __init__(self, redis_url: str, ca: CAFiles, *, client_cert: bool = False) -> None:
        self.upstream = urlsplit(redis_url)
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.load_cert_chain(ca.server_cert, ca.server_key)
        if client_cert:  # mutual TLS: only a client the CA vouches for gets in
            self.context.verify_mode = ssl.CERT_REQUIRED
            self.context.load_verify_locations(ca.ca)
        self.handshakes = 0
        # The common name of each client certificate presented ("" for none).
        self.clients: list[str] = []
        self.port = 0
        self._server: asyncio.Server | None = None
        self._relays: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0, ssl=self.context)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for relay in self._relays:
            relay.cancel()
        await asyncio.gather(*self._relays, return_exceptions=True)

    def url(self, ca_file: Path, client: CAFiles | None = None) -> str:
        url = f"rediss://127.0.0.1:{self.port}/0?ssl_ca_certs={ca_file}"
        if client is not None:
            url += f"&ssl_certfile={client.client_cert}&ssl_keyfile={client.client_key}"
        return url

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.handshakes += 1  # called once the TLS handshake is done
        peer = writer.get_extra_info("peercert") or {}
        names = [value for rdn in peer.get("subject", ()) for key, value in rdn
                 if key == "commonName"]  # fmt: skip
        self.clients.append(names[0] if names else "")
        relay = asyncio.current_task()
        assert relay is not None
        self._relays.add(relay)
        try:
            up_reader, up_writer = await self._open_upstream()
            await asyncio.gather(_copy(reader, up_writer), _copy(up_reader, writer))
        finally:
            self._relays.discard(relay)
            writer.close()

    async def _open_upstream(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self.upstream.scheme == "unix":  # the embedded Redis's socket
            return await asyncio.open_unix_connection(self.upstream.path)
        return await asyncio.open_connection(self.upstream.hostname, self.upstream.port)


async def _copy(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    try:
        while data := await source.read(65536):
            sink.write(data)
            await sink.drain()
    except OSError:  # the other side went away
        pass
    finally:
        with contextlib.suppress(Exception):
            sink.close()


class RefusingFront:
    """A TLS endpoint that wants a client certificate the CA signed and refuses a
    client without one as OpenSSL does, with a TLS alert, in a blocking socket on a
    thread of its own (asyncio's TLS servers close without sending the alert). Or,
    with ``hang_up``, one that closes each connection before the handshake, as a
    Redis going down would."""

    def __init__(self, ca: CAFiles, version: ssl.TLSVersion, *, hang_up: bool = False) -> None:
        self.hang_up = hang_up
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.load_cert_chain(ca.server_cert, ca.server_key)
        self.context.verify_mode = ssl.CERT_REQUIRED
        self.context.load_verify_locations(ca.ca)
        self.version = self.context.minimum_version = self.context.maximum_version = version
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        # Connections that reached the handshake, and the server side's errors.
        self.attempts = 0
        self.refusals: list[str] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def close(self) -> None:
        # Closing alone does not wake the thread's accept() on Linux; shutting down does.
        self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        self._thread.join(timeout=5)

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:  # closed
                return
            self.attempts += 1
            with connection:
                if self.hang_up:
                    continue
                tls = self.context.wrap_socket(
                    connection, server_side=True, do_handshake_on_connect=False
                )
                with tls:
                    try:
                        tls.do_handshake()
                    except (ssl.SSLError, OSError) as exc:
                        self.refusals.append(str(exc))
                        _drain(tls)


def _drain(connection: socket.socket) -> None:
    """Closes our side and reads what the client still sends until it closes too:
    closed with data unread, the socket would answer with a reset, and a client
    that gets it before reading the alert sees only the reset (as a real Redis's
    may: the pipe then retries, as for any reset)."""
    with contextlib.suppress(OSError):
        connection.settimeout(5)
        connection.shutdown(socket.SHUT_WR)
        while connection.recv(65536):
            pass


async def approved_through(server: RunningServer) -> None:
    """A request submitted, claimed and approved, and the teller sees it approved."""
    request_id = await decided(server)
    async with server.teller() as teller:
        assert (await teller.get(request_id)).state == cpb.REQUEST_STATE_APPROVED


@pytest.fixture
def ca(tmp_path: Path) -> CAFiles:
    return make_test_ca(tmp_path / "tls")


@pytest.fixture
async def front(redis_url: str, ca: CAFiles) -> AsyncIterator[TlsFront]:
    tls_front = TlsFront(redis_url, ca)
    await tls_front.start()
    yield tls_front
    await tls_front.stop()


async def test_the_whole_cycle_runs_on_a_redis_behind_tls(
    front: TlsFront, ca: CAFiles, start_server: StartServer
) -> None:
    # The front first: it is then torn down after the server has stopped.
    server = await start_server(redis_url=front.url(ca.ca))
    await approved_through(server)
    client = server.runtime.store.client
    assert isinstance(client, PipedRedis)
    assert client.pipe.connects >= 1  # the scripts' pipe
    assert server.runtime.center.hub.pipe.connects >= 1  # the event stream's
    # The pipe, the event stream's pipe and the pooled client each came through.
    assert front.handshakes >= 3


async def test_a_certificate_that_does_not_verify_fails_the_call_without_retrying(
    front: TlsFront, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    attempts = 0
    open_connection = RedisPipe._open

    async def counted(pipe: RedisPipe) -> Any:
        nonlocal attempts
        attempts += 1
        return await open_connection(pipe)

    monkeypatch.setattr(RedisPipe, "_open", counted)
    stranger = make_test_ca(tmp_path / "another-ca")
    pipe = RedisPipe(front.url(stranger.ca))
    try:
        with pytest.raises(ConnectionError, match="certificate verify failed"):
            await pipe.execute("PING")
    finally:
        await pipe.aclose()
    # A lost connection is retried for about 7 s; a certificate that does not
    # verify will not verify on the next try either.
    assert attempts == 1
    assert front.handshakes == 0


async def test_the_pipe_talks_tls_where_the_url_says_so(front: TlsFront, ca: CAFiles) -> None:
    pipe = RedisPipe(front.url(ca.ca))
    try:
        assert await pipe.execute("PING") == b"PONG"
    finally:
        await pipe.aclose()
    assert front.handshakes == 1


@pytest.fixture
async def mutual(redis_url: str, ca: CAFiles) -> AsyncIterator[TlsFront]:
    tls_front = TlsFront(redis_url, ca, client_cert=True)
    await tls_front.start()
    yield tls_front
    await tls_front.stop()


async def test_a_redis_that_asks_for_a_client_certificate_gets_it_on_every_connection(
    mutual: TlsFront, ca: CAFiles, start_server: StartServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # This front closes without a TLS alert (RefusingFront sends one), so the pipe sees
    # a lost connection, which it would retry for about 7 s.
    monkeypatch.setattr(redis_pipe, "RETRIES", 0)
    bare = RedisPipe(mutual.url(ca.ca))  # no client certificate
    try:
        with pytest.raises(ConnectionError):
            await bare.execute("PING")
    finally:
        await bare.aclose()
    assert mutual.handshakes == 0
    monkeypatch.undo()

    server = await start_server(redis_url=mutual.url(ca.ca, client=ca))
    await approved_through(server)
    # The scripts' pipe, the event stream's pipe and the pooled client each showed
    # the certificate the test CA signed for the client.
    assert mutual.handshakes >= 3
    client_cert = x509.load_pem_x509_certificate(ca.client_cert.read_bytes())
    name = client_cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    assert set(mutual.clients) == {name}


@pytest.fixture(params=[ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_2], ids=["tls1.3", "tls1.2"])
def refusing(request: pytest.FixtureRequest, ca: CAFiles) -> Iterator[RefusingFront]:
    refusing_front = RefusingFront(ca, request.param)
    yield refusing_front
    refusing_front.close()


async def test_a_redis_that_refuses_the_handshake_fails_the_call_without_retrying(
    refusing: RefusingFront, ca: CAFiles
) -> None:
    # Under TLS 1.3 the alert comes after the client's side of the handshake, on the
    # first read; under 1.2 during the handshake. A closed connection is retried for
    # about 7 s, a refusal is not: no certificate will appear in the meantime.
    url = f"rediss://127.0.0.1:{refusing.port}/0?ssl_ca_certs={ca.ca}"
    tls13 = refusing.version is ssl.TLSVersion.TLSv1_3
    alert = "alert certificate required" if tls13 else "alert handshake failure"
    pipe = RedisPipe(url.replace("rediss://", "rediss://:s3cret-pass@"))
    try:
        with pytest.raises(ConnectionError, match=alert) as refused:
            await pipe.execute("PING")
    finally:
        await pipe.aclose()
    assert refusing.attempts == 1
    assert "s3cret" not in str(refused.value)

    client = redis_client(url, pool_size=2)
    try:
        with pytest.raises(ConnectionError, match=alert):
            await client.ping()
    finally:
        await client.aclose()
    assert refusing.attempts == 2
    assert all("did not return a certificate" in refusal for refusal in refusing.refusals)


async def test_a_connection_closed_during_the_handshake_is_retried(
    ca: CAFiles, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The counterpart of the refusal: a closed connection, as in a restart, is the
    # one TLS error to ride out.
    monkeypatch.setattr(redis_pipe, "RETRIES", 2)
    hanging_up = RefusingFront(ca, ssl.TLSVersion.TLSv1_3, hang_up=True)
    pipe = RedisPipe(f"rediss://127.0.0.1:{hanging_up.port}/0?ssl_ca_certs={ca.ca}")
    try:
        with pytest.raises(ConnectionError):
            await pipe.execute("PING")
    finally:
        await pipe.aclose()
        hanging_up.close()
    assert hanging_up.attempts == 3


def test_a_tls_error_that_ends_the_stream_is_a_loss_not_a_refusal() -> None:
    # Under uvloop and asyncio a lost TLS connection reaches the pipe as a reset or a
    # close (the test above); the ssl module's own words for one are kept a loss too.
    def wrapped(cause: BaseException) -> ConnectionError:
        error = ConnectionError("Error while reading")
        error.__context__ = cause
        return error

    for lost in (ssl.SSLEOFError(8, "EOF"), ssl.SSLZeroReturnError(6, "closed"),
                 ssl.SSLSyscallError(5, "syscall"), ConnectionResetError()):  # fmt: skip
        assert tls_refusal(wrapped(lost)) is None
    alert = ssl.SSLError(1, "[SSL: TLSV13_ALERT_CERTIFICATE_REQUIRED]")
    assert tls_refusal(wrapped(alert)) is alert


async def test_the_server_and_the_admin_tool_name_a_refusal_and_keep_the_password_out(
    refusing: RefusingFront, ca: CAFiles, tmp_path: Path
) -> None:
    url = f"rediss://:s3cret-pass@127.0.0.1:{refusing.port}/0?ssl_ca_certs={ca.ca}"
    shown = f"rediss://:***@127.0.0.1:{refusing.port}/0?ssl_ca_certs={ca.ca}"
    server = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "server.main", "--listen", "127.0.0.1:0",
        "--data-dir", str(tmp_path / "var"), "--redis-url", url,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        stdin=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    out, err = await asyncio.wait_for(server.communicate(), 60)
    assert server.returncode == 1
    # One line saying what is wrong, not a traceback.
    [line] = err.decode().splitlines()
    assert line.startswith(f"authq-server: cannot reach Redis at {shown}: ")
    assert "alert" in line

    code, _, admin_err = await admin(url, "user", "list")
    assert code == 2
    assert f"authq-admin: cannot reach Redis at {shown}: " in admin_err
    assert "alert" in admin_err
    assert "s3cret" not in (out + err).decode() + admin_err
