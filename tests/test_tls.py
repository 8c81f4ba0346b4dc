"""TLS on the gRPC port and the plaintext-only-on-loopback rule (issue 3, section 2),
over real channels and real server processes, on loopback only."""

from __future__ import annotations

import asyncio
import os
import signal
import stat
import sys
from pathlib import Path

import grpc
import pytest
from authq.channel import AuthenticatedClient, ClientTLS
from authq.v1 import common_pb2 as cpb

from server.accounts.model import Role
from server.devtools.make_test_ca import CAFiles, make_test_ca
from server.devtools.make_test_ca import main as make_test_ca_main
from server.settings import Settings, SettingsError
from server.tls import PlaintextRefused, check_listen, is_loopback, listen_host
from teller_client.client import TellerClient
from tests.conftest import PASSWORD, RunningServer, StartServer
from tests.helpers import request

SERVER_BIN = Path(sys.executable).with_name("authq-server")


@pytest.fixture
def ca(tmp_path: Path) -> CAFiles:
    return make_test_ca(tmp_path / "tls", client_cn="teller-1")


@pytest.fixture
def other_ca(tmp_path: Path) -> CAFiles:
    return make_test_ca(tmp_path / "other-tls")


async def tls_server(start_server: StartServer, ca: CAFiles, **more: object) -> RunningServer:
    server = await start_server(tls_cert=ca.server_cert, tls_key=ca.server_key, **more)
    await server.account("teller-1", [Role.TELLER], "branch-1")
    return server


async def refused(client: AuthenticatedClient) -> None:
    """The connection fails (no TLS session), so the login never reaches the server."""
    try:
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await client.login()
        assert failure.value.code() == grpc.StatusCode.UNAVAILABLE
        assert not client.token
    finally:
        await client.close()


# -- the local test CA ---------------------------------------------------------------


def test_make_test_ca_writes_the_files_with_private_keys(tmp_path: Path) -> None:
    target = tmp_path / "out"
    assert make_test_ca_main([str(target), "--client-cn", "teller-9"]) == 0
    names = sorted(p.name for p in target.iterdir())
    assert names == [
        "ca-key.pem",
        "ca.pem",
        "client-key.pem",
        "client.pem",
        "server-key.pem",
        "server.pem",
    ]
    for key in ("ca-key.pem", "client-key.pem", "server-key.pem"):
        assert stat.S_IMODE((target / key).stat().st_mode) == 0o600
        assert (target / key).read_text().startswith("-----BEGIN PRIVATE KEY-----")
    assert (target / "client.pem").read_text().startswith("-----BEGIN CERTIFICATE-----")


# -- TLS on the port --------------------------------------------------------------------


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
async def test_login_and_submit_over_tls(start_server: StartServer, ca: CAFiles, host: str) -> None:
    server = await tls_server(start_server, ca)
    target = server.target.replace("127.0.0.1", host)
    tls = ClientTLS(ca=ca.ca)
    async with AuthenticatedClient(target, "teller-1", PASSWORD, tls=tls) as plain_login:
        assert plain_login.token
    async with TellerClient(target, "teller-1", PASSWORD, tls=tls) as teller:
        reply = await teller.submit(request())
        assert reply.request.state == cpb.REQUEST_STATE_QUEUED
        view = await teller.get(reply.request.request_id)
        assert view.request_id == reply.request.request_id


async def test_a_plaintext_client_cannot_talk_to_the_tls_port(
    start_server: StartServer, ca: CAFiles
) -> None:
    server = await tls_server(start_server, ca)
    await refused(AuthenticatedClient(server.target, "teller-1", PASSWORD))


async def test_a_client_that_trusts_another_ca_is_refused(
    start_server: StartServer, ca: CAFiles, other_ca: CAFiles
) -> None:
    server = await tls_server(start_server, ca)
    tls = ClientTLS(ca=other_ca.ca)
    await refused(AuthenticatedClient(server.target, "teller-1", PASSWORD, tls=tls))


async def test_client_certificates_when_required(
    start_server: StartServer, ca: CAFiles, other_ca: CAFiles
) -> None:
    server = await tls_server(start_server, ca, tls_client_ca=ca.ca, require_client_cert=True)
    without = ClientTLS(ca=ca.ca)
    foreign = ClientTLS(ca=ca.ca, cert=other_ca.client_cert, key=other_ca.client_key)
    for tls in (without, foreign):
        await refused(AuthenticatedClient(server.target, "teller-1", PASSWORD, tls=tls))
    good = ClientTLS(ca=ca.ca, cert=ca.client_cert, key=ca.client_key)
    async with TellerClient(server.target, "teller-1", PASSWORD, tls=good) as teller:
        reply = await teller.submit(request())
        assert reply.request.state == cpb.REQUEST_STATE_QUEUED


async def test_the_teller_command_line_speaks_tls(
    start_server: StartServer, ca: CAFiles, tmp_path: Path
) -> None:
    server = await tls_server(start_server, ca)
    env = {
        **os.environ,
        "AUTHQ_SERVER": server.target,
        "AUTHQ_STATE_DIR": str(tmp_path / "state"),
        "AUTHQ_PASSWORD": PASSWORD,
        "AUTHQ_USER": "teller-1",
    }
    for name in ("AUTHQ_TLS_CA", "AUTHQ_TLS_CERT", "AUTHQ_TLS_KEY"):
        env.pop(name, None)

    async def teller(*args: str) -> tuple[int, str]:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "teller_client.cli",
            *args,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=env,
        )
        out, _ = await asyncio.wait_for(process.communicate(), 60)
        assert process.returncode is not None
        return process.returncode, out.decode()

    code, out = await teller("--tls-ca", str(ca.ca), "login")
    assert (code, out.strip()) == (0, "logged in as teller-1")
    code, out = await teller("--password", PASSWORD, "login")  # not the saved login
    assert code == 1
    assert "UNAVAILABLE" in out
    code, out = await teller("--tls-ca", str(tmp_path / "missing.pem"), "login")
    assert code == 2
    assert "missing.pem" in out


# -- settings ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"tls_cert": "server.pem"}, "give both or neither"),
        ({"tls_key": "server-key.pem"}, "give both or neither"),
        ({"tls_client_ca": "ca.pem"}, "needs tls_cert"),
        ({"tls_cert": "s.pem", "tls_key": "k.pem", "require_client_cert": True}, "tls_client_ca"),
        # grpcio never asks for a client certificate it does not require: refused.
        ({"tls_cert": "s.pem", "tls_key": "k.pem", "tls_client_ca": "ca.pem"}, "optional"),
    ],
)
def test_incoherent_tls_settings_are_refused(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        Settings.load(overrides=overrides)


def test_server_tls_environment_does_not_collide_with_the_clients() -> None:
    env = {"AUTHQ_TLS_CERT": "client.pem", "AUTHQ_TLS_KEY": "client-key.pem"}
    assert Settings.load(env=env).tls_cert is None
    env = {"AUTHQ_TLS_SERVER_CERT": "s.pem", "AUTHQ_TLS_SERVER_KEY": "k.pem"}
    settings = Settings.load(env=env)
    assert (settings.tls_cert, settings.tls_key) == (Path("s.pem"), Path("k.pem"))


# -- plaintext only on loopback ---------------------------------------------------------


@pytest.mark.parametrize(
    ("listen", "loopback"),
    [
        ("127.0.0.1:50051", True),
        ("127.8.9.10:0", True),
        ("[::1]:50051", True),
        ("::1", True),
        ("localhost:50051", True),
        ("LocalHost:1", True),
        ("0.0.0.0:50051", False),
        ("[::]:50051", False),
        ("10.1.2.3:50051", False),
        ("192.168.0.7:0", False),
        ("[fe80::1]:50051", False),
        ("authq.example.com:50051", False),
        ("localhost.example.com:50051", False),
        ("unix:/tmp/authq.sock", False),
        (":50051", False),
    ],
)
def test_loopback_check(listen: str, loopback: bool) -> None:
    assert is_loopback(listen) is loopback


def test_listen_host() -> None:
    assert listen_host("[::1]:50051") == "::1"
    assert listen_host("0.0.0.0:0") == "0.0.0.0"
    assert listen_host("localhost") == "localhost"


def test_check_listen_needs_tls_or_an_explicit_yes_off_loopback() -> None:
    with pytest.raises(PlaintextRefused, match=r"0\.0\.0\.0:50051.*--tls-cert"):
        check_listen(Settings(listen="0.0.0.0:50051"))
    check_listen(Settings(listen="127.0.0.1:50051"))
    check_listen(Settings(listen="0.0.0.0:50051", allow_plaintext=True))
    check_listen(Settings(listen="0.0.0.0:50051", tls_cert=Path("c"), tls_key=Path("k")))


async def test_server_refuses_plaintext_off_loopback_before_starting(tmp_path: Path) -> None:
    data = tmp_path / "data"
    process = await asyncio.create_subprocess_exec(
        str(SERVER_BIN),
        "--listen",
        "0.0.0.0:0",
        "--data-dir",
        str(data),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={k: v for k, v in os.environ.items() if not k.startswith("AUTHQ_")},
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 2
    lines = err.decode().strip().splitlines()
    assert len(lines) == 1, lines
    assert "0.0.0.0:0" in lines[0]
    assert "--tls-cert" in lines[0]
    assert "--allow-plaintext" in lines[0]
    assert not out
    assert not (data / "redis").exists()  # refused before the embedded Redis started


async def test_server_listens_off_loopback_with_allow_plaintext(tmp_path: Path) -> None:
    process = await asyncio.create_subprocess_exec(
        str(SERVER_BIN),
        "--listen",
        "0.0.0.0:0",
        "--allow-plaintext",
        "--data-dir",
        str(tmp_path / "data"),
        "--log-level",
        "WARNING",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={k: v for k, v in os.environ.items() if not k.startswith("AUTHQ_")},
    )
    assert process.stdout is not None
    seen: list[str] = []
    try:
        async with asyncio.timeout(60):
            while True:
                line = (await process.stdout.readline()).decode()
                assert line, f"server exited: {''.join(seen)}"
                seen.append(line)
                if "listening on" in line:
                    break
        assert "listening on 0.0.0.0:" in seen[-1]
        assert "plaintext" in seen[-1]
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0
