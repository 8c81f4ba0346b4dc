"""Small things the command lines said or took in a way a teller or an authorizer would
trip over: a decision on an item no longer held, `next` while away, the name of an RPC
where a command was meant, options without help, Ctrl-C while `python -m` loads them,
and review checks in either case."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from authorizer_console import cli as authorizer_cli
from server.accounts.model import Role
from teller_client import cli as teller_cli
from tests.conftest import RunningServer, StartServer
from tests.helpers import request
from tests.test_cli import _cli_env, run_cli
from tests.test_cli_exits import CTRL_C_AT_START, INTERRUPTED, run

TELLER, AUTHORIZER = "teller_client.cli", "authorizer_console.cli"
LAPSED = "(your lease ran out, or it was handed back)"


async def test_a_command_on_an_item_already_decided_says_so(
    server: RunningServer, tmp_path: Path
) -> None:
    env = await _cli_env(server, tmp_path)
    images = str(tmp_path / "images")
    async with server.teller() as teller:
        rid = (await teller.submit(request())).request.request_id
        held = (await teller.submit(request())).request.request_id
    code, _, err = await run_cli(AUTHORIZER, "next", "--timeout", "20", "--images-dir", images,
                                 env=env)  # fmt: skip
    assert code == 0, err
    code, _, err = await run_cli(AUTHORIZER, "approve", rid, env=env)
    assert code == 0, err
    # Decided with this command line: what `next` recorded is gone with the decision.
    for again in (["reject", rid, "--reason", "ID_MISMATCH"], ["release", rid]):
        code, out, err = await run_cli(AUTHORIZER, *again, env=env)
        assert (code, out) == (1, "")
        assert err == f"authq-authorizer: {rid} was already decided: it is APPROVED\n"

    # Held by this authorizer, taken elsewhere: only the token is missing here.
    async with server.authorizer() as elsewhere:
        assert (await elsewhere.next(timeout=10)).request.request_id == held
        code, _, err = await run_cli(AUTHORIZER, "approve", held, env=env)
    assert code == 1
    assert err.startswith(f"authq-authorizer: no lease of {held} recorded in ")
    assert "pass the --token" in err
    assert "take it with `next`" not in err


async def test_a_command_on_an_item_whose_lease_was_lost_says_so(
    start_server: StartServer, tmp_path: Path
) -> None:
    server = await start_server(lease_ms=1000)
    env = await _cli_env(server, tmp_path)
    async with (
        server.teller() as teller,
        server.authorizer() as mine,
        server.authorizer("authorizer-2") as other,
    ):
        rid = (await teller.submit(request())).request.request_id
        taken = await mine.next(timeout=10)
        # Never renewed: the lease runs out and the item goes to the next who asks.
        again = await other.next(timeout=10)
        assert again.request.request_id == rid
        token = str(taken.lease.fencing_token)
        async with other.holding(again):
            code, _, err = await run_cli(AUTHORIZER, "approve", rid, "--token", token, env=env)
            assert code == 1
            assert err == (
                f"authq-authorizer: {rid} is not held by you any more: another authorizer "
                f"holds it {LAPSED}\n"
            )
            code, _, err = await run_cli(AUTHORIZER, "approve", rid, env=env)
            assert (code, err) == (
                1,
                f"authq-authorizer: {rid} is not held by you: another authorizer holds it\n",
            )
            await other.release(rid, again.lease.fencing_token)
        code, _, err = await run_cli(AUTHORIZER, "renew", rid, "--token", token, env=env)
        assert code == 1
        assert err == (
            f"authq-authorizer: {rid} is not held by you any more: it waits in the queue {LAPSED}\n"
        )


async def test_next_while_away_says_so_at_once(server: RunningServer, tmp_path: Path) -> None:
    env = await _cli_env(server, tmp_path)
    take = ("next", "--timeout", "20", "--images-dir", str(tmp_path / "images"))
    async with server.teller() as teller:
        rid = (await teller.submit(request())).request.request_id
    code, out, err = await run_cli(AUTHORIZER, "away", env=env)
    assert (code, out) == (0, "authorizer-1 is away: no new items\n"), err

    # Answered by the center at once, not waited out until --timeout.
    code, out, err = await run_cli(AUTHORIZER, *take, env=env)
    assert (code, out) == (1, "")
    assert err.endswith(
        "authq-authorizer: FAILED_PRECONDITION: authorizer-1 is away: no new items until back\n"
    )

    code, out, err = await run_cli(AUTHORIZER, "back", env=env)
    assert code == 0, err
    code, out, err = await run_cli(AUTHORIZER, *take, "--json", env=env)
    assert code == 0, err
    assert json.loads(out)["request"]["requestId"] == rid


async def test_confirming_a_move_nobody_asked_for_names_the_command(
    server: RunningServer, tmp_path: Path
) -> None:
    env = await _cli_env(server, tmp_path)
    await server.account("supervisor-1", [Role.SUPERVISOR])
    async with server.teller() as teller:
        rid = (await teller.submit(request())).request.request_id
    code, _, err = await run_cli(AUTHORIZER, "--user", "supervisor-1", "confirm", rid, env=env)
    assert code == 1
    assert f"no move of request {rid} is pending (R6)" in err
    assert "asked for first (`move`" in err
    assert "RequestMove" not in err


def actions(parser: argparse.ArgumentParser, path: str) -> Iterator[tuple[str, str | None]]:
    """Each option, argument and command of the parser and its commands, with its help."""
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help for choice in action._choices_actions}
            for name, command in action.choices.items():
                yield f"{path} {name}", helps.get(name)
                yield from actions(command, f"{path} {name}")
            continue
        yield f"{path} {'/'.join(action.option_strings) or action.dest}", action.help


@pytest.mark.parametrize(
    ("prog", "build"),
    [("authq-teller", teller_cli.build_parser), ("authq-authorizer", authorizer_cli.build_parser)],
)
def test_every_option_and_command_has_help(
    prog: str, build: Callable[[], argparse.ArgumentParser]
) -> None:
    found = dict(actions(build(), prog))
    assert f"{prog} hours list --json" in found  # commands of commands too
    assert [name for name, text in found.items() if not text] == []


# Runs a command line as `python -m MODULE` does, after Ctrl-C while grpc loads.
AS_MODULE = """
import os, runpy, signal, sys
{patch}
runpy.run_module("{module}", run_name="__main__", alter_sys=True)
"""


@pytest.mark.parametrize(("module", "prog"), [(TELLER, "authq-teller"),
                                              (AUTHORIZER, "authq-authorizer")])  # fmt: skip
async def test_ctrl_c_while_python_m_loads_is_one_line(
    tmp_path: Path, module: str, prog: str
) -> None:
    script = AS_MODULE.format(patch=CTRL_C_AT_START, module=module)
    code, err = await run("-c", script, "login", env={"AUTHQ_STATE_DIR": str(tmp_path)})
    assert (code, err) == (INTERRUPTED, f"{prog}: interrupted\n")


async def test_review_checks_are_taken_in_either_case(
    server: RunningServer, tmp_path: Path
) -> None:
    env = await _cli_env(server, tmp_path)
    await server.account("reviewer-1", [Role.ONSITE_REVIEWER], "branch-1")
    async with server.teller() as teller:
        reply = await teller.submit(request(amount_minor=50_000_000))  # on-site review first
    rid = reply.request.request_id
    code, out, err = await run_cli(
        TELLER, "--user", "reviewer-1", "review", rid, "--confirm",
        "--check", "cash_recounted", "--check", " Identity_Checked ", "--json", env=env,
    )  # fmt: skip
    assert code == 0, err
    assert json.loads(out)["state"] == "REQUEST_STATE_QUEUED"
    async with server.teller() as teller:
        history = (await teller.get(rid)).history
    assert "CASH_RECOUNTED" in str(history[-1])
    assert "IDENTITY_CHECKED" in str(history[-1])
