"""How the command lines end when stopped from outside: a reader of their output that
went away (``| head``), or Ctrl-C. One line or none, never a traceback."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import grpc
import pytest

from teller_client import synthetic
from tests.conftest import RunningServer
from tests.helpers import STANDARD_KINDS
from tests.test_cli import _cli_env

INTERRUPTED, BROKEN_PIPE = 130, 141


def submit_args(tmp_path: Path, request_id: str) -> list[str]:
    args = ["submit", "--type", "CASH_WITHDRAWAL", "--amount", "12000.50", "--account",
            "6222020200001234", "--customer", "Zhang San", "--request-id", request_id]  # fmt: skip
    for kind in STANDARD_KINDS:
        path = tmp_path / f"{kind.lower()}.jpg"
        path.write_bytes(synthetic.image_for_kind(kind))
        args += ["--image", f"{kind}={path}"]
    return args


async def run(
    *argv: str, env: dict[str, str], stdout: int = asyncio.subprocess.PIPE
) -> tuple[int, str]:
    """Runs python with ``argv``; returns the exit code and stderr."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, *argv, stdin=asyncio.subprocess.DEVNULL, stdout=stdout,
        stderr=asyncio.subprocess.PIPE, env={**os.environ, **env},
    )  # fmt: skip
    _, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, err.decode()


async def with_stdout_closed(module: str, *args: str, env: dict[str, str]) -> tuple[int, str]:
    """Runs the command line with nobody reading its stdout, as `| head` leaves it."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        return await run("-m", module, *args, env=env, stdout=write_end)
    finally:
        os.close(write_end)


async def test_a_reader_gone_away_ends_the_command_quietly(
    server: RunningServer, tmp_path: Path
) -> None:
    env = await _cli_env(server, tmp_path)
    code, err = await with_stdout_closed(
        "teller_client.cli", *submit_args(tmp_path, "pipe-0001"), env=env
    )
    assert (code, err) == (BROKEN_PIPE, "")

    code, err = await with_stdout_closed(
        "authorizer_console.cli", "next", "--timeout", "10", "--images-dir",
        str(tmp_path / "got"), env=env,
    )  # fmt: skip
    assert code == BROKEN_PIPE
    assert err == "waiting for the next item...\n"


# Runs a command line as its installed console script does, after ``PATCH``.
AS_INSTALLED = """
import asyncio, os, signal, sys
from importlib.metadata import entry_points
{patch}
sys.argv = ["{prog}", *sys.argv[1:]]
sys.exit(entry_points(group="console_scripts")["{prog}"].load()())
"""

# Ctrl-C as the command line starts: while grpc loads.
CTRL_C_AT_START = """
class CtrlC:
    def find_spec(self, name, path=None, target=None):
        if name == "grpc":
            sys.meta_path.remove(self)
            os.kill(os.getpid(), signal.SIGINT)
        return None
sys.meta_path.insert(0, CtrlC())
"""


@pytest.mark.parametrize("prog", ["authq-teller", "authq-authorizer"])
async def test_ctrl_c_while_starting_is_one_line(tmp_path: Path, prog: str) -> None:
    script = AS_INSTALLED.format(patch=CTRL_C_AT_START, prog=prog)
    code, err = await run("-c", script, "login", env={"AUTHQ_STATE_DIR": str(tmp_path)})
    assert (code, err) == (INTERRUPTED, f"{prog}: interrupted\n")


# Ctrl-C while the images upload: the Submit call never goes out.
CTRL_C_IN_UPLOAD = """
from teller_client import client
async def upload_image(self, kind, data, progress=None):
    os.kill(os.getpid(), signal.SIGINT)
    await asyncio.sleep(60)
client.TellerClient.upload_image = upload_image
"""

# Ctrl-C just after the Submit call went out: the center may hold the request.
CTRL_C_AFTER_SEND = """
from teller_client import client
init = client.TellerClient.__init__
def interrupting(self, *args, **kwargs):
    init(self, *args, **kwargs)
    submit = self.stub.Submit
    def sent(*args, **kwargs):
        call = submit(*args, **kwargs)
        os.kill(os.getpid(), signal.SIGINT)
        return call
    self.stub.Submit = sent
client.TellerClient.__init__ = interrupting
"""


async def test_ctrl_c_in_a_submit_says_what_became_of_the_request(
    server: RunningServer, tmp_path: Path
) -> None:
    env = await _cli_env(server, tmp_path)

    async def submit_interrupted(patch: str, request_id: str) -> str:
        script = AS_INSTALLED.format(patch=patch, prog="authq-teller")
        code, err = await run("-c", script, *submit_args(tmp_path, request_id), env=env)
        assert code == INTERRUPTED
        assert err.count("\n") == 1
        return err

    err = await submit_interrupted(CTRL_C_IN_UPLOAD, "ctrl-c-0001")
    assert err == "authq-teller: interrupted: nothing was submitted\n"
    async with server.teller() as teller:
        with pytest.raises(grpc.aio.AioRpcError) as missing:
            await teller.get("ctrl-c-0001")
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND

        err = await submit_interrupted(CTRL_C_AFTER_SEND, "ctrl-c-0002")
        assert err.startswith("authq-teller: interrupted: ctrl-c-0002 may have reached the center")
        assert "`authq-teller show ctrl-c-0002` tells" in err
        assert "--request-id ctrl-c-0002 is safe" in err
