"""What the command lines take and how they show it: the shared flags after the
command's name too, the currency as people type it, places in the queue counted from
1, a repeated cancel shown as it was made, and the valid kinds, business types,
rejection reasons and review checks in the help, each from one place."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from authq import catalog
from authq.v1 import common_pb2 as cpb

import authorizer_console.catalog
from authorizer_console import cli as authorizer_cli
from server.accounts.model import Role
from server.domain.reasons import REJECTION_REASONS
from server.policy.loader import DEFAULT_POLICY, load_policy
from teller_client import cli as teller_cli
from tests.conftest import RunningServer
from tests.helpers import request
from tests.test_cli import _cli_env, run_cli
from tests.test_cli_exits import submit_args
from tests.test_local_fallback import nothing_listening

TELLER, AUTHORIZER = "teller_client.cli", "authorizer_console.cli"


async def test_shared_flags_work_after_the_command_too(
    server: RunningServer, tmp_path: Path
) -> None:
    env = await _cli_env(server, tmp_path)
    await server.account("supervisor-1", [Role.SUPERVISOR])
    async with server.teller() as teller:
        rid = (await teller.submit(request())).request.request_id
    # The address from the environment leads nowhere: only the one given after the
    # command reaches the center.
    env["AUTHQ_SERVER"] = nothing_listening()

    code, out, err = await run_cli(TELLER, "show", rid, "--server", server.target, "--json",
                                   env=env)  # fmt: skip
    assert code == 0, err
    assert json.loads(out)["requestId"] == rid

    code, out, err = await run_cli(
        TELLER, "hours", "status", "--json", "--server", server.target, env=env
    )
    assert code == 0, err
    assert json.loads(out)["branchId"] == "branch-1"

    code, out, err = await run_cli(
        AUTHORIZER, "position", rid, "--user", "supervisor-1", "--server", server.target,
        "--json", env=env,
    )  # fmt: skip
    assert code == 0, err
    assert json.loads(out)["requestId"] == rid

    # Given before the command, a flag still counts when the command does not repeat it.
    code, out, err = await run_cli(TELLER, "--server", server.target, "--json", "show", rid,
                                   env=env)  # fmt: skip
    assert code == 0, err
    assert json.loads(out)["requestId"] == rid


async def test_the_currency_is_taken_as_people_type_it(
    server: RunningServer, tmp_path: Path
) -> None:
    env = await _cli_env(server, tmp_path)
    args = [*submit_args(tmp_path, "jpy-00001"), "--currency", "jpy", "--json"]
    args[args.index("CASH_WITHDRAWAL")] = "FX_DEPOSIT"
    args[args.index("12000.50")] = "150000"
    code, out, err = await run_cli(TELLER, *args, env=env)
    assert code == 0, err
    assert json.loads(out)["request"]["transaction"]["amount"] == {
        "minorUnits": "150000",
        "currency": "JPY",
    }

    # Anything but three letters is refused before anything is sent: not even an
    # unreachable center's fallback journal gets it.
    env["AUTHQ_SERVER"] = nothing_listening()
    env["AUTHQ_STATE_DIR"] = str(tmp_path / "offline")
    for given in ("yenn", "12", "US1", "ÉUR"):
        args[args.index("--currency") + 1] = given
        code, out, err = await run_cli(TELLER, *args, env=env)
        assert code == 2
        assert f"argument --currency: {given!r} is not an ISO 4217 currency code" in err
        assert out == ""
    assert not (tmp_path / "offline" / "fallback-journal.jsonl").exists()


async def test_the_business_type_is_taken_in_either_case(
    server: RunningServer, tmp_path: Path
) -> None:
    env = await _cli_env(server, tmp_path)
    args = [*submit_args(tmp_path, "type-00001"), "--json"]
    args[args.index("CASH_WITHDRAWAL")] = "Cash_withdrawal"
    code, out, err = await run_cli(TELLER, *args, env=env)
    assert code == 0, err
    assert json.loads(out)["request"]["transaction"]["businessType"] == "CASH_WITHDRAWAL"


async def test_places_in_the_queue_count_from_one(server: RunningServer, tmp_path: Path) -> None:
    env = await _cli_env(server, tmp_path)
    for user in ("supervisor-1", "supervisor-2"):
        await server.account(user, [Role.SUPERVISOR])
    async with server.teller() as teller:
        first, second, gone = [(await teller.submit(request())).request.request_id
                               for _ in range(3)]  # fmt: skip
        await teller.cancel(gone)

    async def ask(*args: str, user: str = "supervisor-1") -> tuple[str, dict[str, object]]:
        """The supervisor's text, then JSON, answer."""
        code, text, err = await run_cli(AUTHORIZER, "--user", user, *args, env=env)
        assert code == 0, err
        code, out, err = await run_cli(AUTHORIZER, "--user", user, "--json", *args, env=env)
        assert code == 0, err
        data: dict[str, object] = json.loads(out)
        return text.strip(), data

    text, data = await ask("position", first)
    assert text == f"{first}: position 1 of 2 waiting (next in line)"
    assert (data["position"], data["waiting"]) == (1, "2")
    text, data = await ask("position", second)
    assert text == f"{second}: position 2 of 2 waiting"
    assert data["position"] == 2
    text, data = await ask("position", gone)
    assert text == f"{gone}: not waiting (CANCELLED)"
    assert data["position"] is None

    code, out, err = await run_cli(AUTHORIZER, "--user", "supervisor-1", "move", second,
                                   "--reason", "the customer is waiting", env=env)  # fmt: skip
    assert code == 0, err
    assert out.strip().endswith("position 2 of 2 waiting")
    _, data = await ask("moves")
    moves = data["moves"]
    assert isinstance(moves, list)
    assert [move["position"] for move in moves] == [2]
    code, out, err = await run_cli(AUTHORIZER, "--user", "supervisor-2", "--json", "confirm",
                                   second, env=env)  # fmt: skip
    assert code == 0, err
    confirmed = json.loads(out)
    assert (confirmed["position"], confirmed["waiting"]) == (1, "2")
    text, _ = await ask("position", second)
    assert text == f"{second}: position 1 of 2 waiting (next in line)"

    # An empty queue: both fields are there all the same.
    async with server.teller() as teller:
        for rid in (first, second):
            await teller.cancel(rid)
    _, data = await ask("position", first)
    assert (data["position"], data["waiting"]) == (None, "0")


async def test_a_repeated_cancel_shows_the_cancel_that_was_made(
    server: RunningServer, tmp_path: Path
) -> None:
    env = await _cli_env(server, tmp_path)
    await server.account("teller-2", [Role.TELLER], "branch-1")
    async with server.teller() as teller:
        rid = (await teller.submit(request())).request.request_id

        code, made, err = await run_cli(TELLER, "cancel", rid, "--note", "customer left",
                                        env=env)  # fmt: skip
        assert code == 0, err
        # Again, by a colleague of the same branch, later and with other words.
        again = ("--user", "teller-2", "cancel", rid, "--note", "again")
        code, repeated, err = await run_cli(TELLER, *again, env=env)
        assert code == 0, err
        assert repeated == made
        code, out, err = await run_cli(TELLER, "--json", *again, env=env)
        assert code == 0, err

        recorded = (await teller.get(rid)).history[-1]
    assert recorded.event == "CANCELLED"
    shown = json.loads(out)
    assert (int(shown["atMs"]), shown["actor"], shown["note"]) == (
        recorded.at_ms, "teller-1", "customer left"
    )  # fmt: skip
    assert "by teller-1" in made
    assert "customer left" in made


async def test_the_help_lists_the_kinds_and_business_types() -> None:
    kinds = [name.removeprefix("IMAGE_KIND_") for name, value in cpb.ImageKind.items() if value]
    business_types = list(load_policy(DEFAULT_POLICY).default.businesses)
    assert "CUSTOMER_PHOTO" in kinds
    assert "CASH_WITHDRAWAL" in business_types

    def flat(help_text: str) -> str:
        return " ".join(help_text.split())

    for module, command, listed in (
        (TELLER, "submit", kinds + business_types),
        (TELLER, "supply", kinds),
        (TELLER, "review", list(catalog.REVIEW_CHECKS)),
        (AUTHORIZER, "ask", kinds),
        (AUTHORIZER, "reject", list(REJECTION_REASONS)),
    ):
        code, out, _ = await run_cli(module, command, "--help")
        assert code == 0
        missing = [name for name in listed if name not in flat(out)]
        assert not missing, (module, command)


def test_the_reasons_and_checks_offered_are_the_catalogs(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A code the catalog gains is offered, and shown, without another list to edit."""
    reasons = (*authorizer_console.catalog.REASONS, ("TEST_REASON", "a reason added"))
    monkeypatch.setattr(authorizer_console.catalog, "REASONS", reasons)
    monkeypatch.setattr(catalog, "REVIEW_CHECKS", (*catalog.REVIEW_CHECKS, "TEST_CHECKED"))

    args = authorizer_cli.build_parser().parse_args(["reject", "r-1", "--reason", "TEST_REASON"])
    assert args.reason == "TEST_REASON"
    for parser, command in ((authorizer_cli.build_parser(), "reject"),
                            (teller_cli.build_parser(), "review")):  # fmt: skip
        with pytest.raises(SystemExit):
            parser.parse_args([command, "--help"])
        assert ("TEST_REASON" if command == "reject" else "TEST_CHECKED") in capsys.readouterr().out


@pytest.mark.parametrize("module", [TELLER, AUTHORIZER])
async def test_a_flag_after_the_command_is_described_in_its_help(module: str) -> None:
    code, out, _ = await run_cli(module, "login", "--help")
    assert code == 0
    assert "before or after its name" in out
    assert "--json" in out
    assert "--server" in out
