"""The policy is reloaded without a restart; a bad file is refused with its line and
the policy in force stays (R2). Every attempt is audited."""

from __future__ import annotations

import asyncio
import re
import signal
from pathlib import Path

from authq.v1 import common_pb2 as cpb

from server.center import Identity
from teller_client.client import TellerClient
from tests.conftest import RunningServer, StartServer
from tests.helpers import request, standard_images
from tests.processes import free_port, start_server_process

SIX_HUNDRED_THOUSAND = 60_000_000  # CNY 600,000.00 in fen: above the default threshold


def _with_threshold(source: str, amount: str) -> str:
    return source.replace(
        'local_cash_review_at = "500000.00"', f'local_cash_review_at = "{amount}"'
    )


async def _state_of_big_withdrawal(server: RunningServer) -> int:
    async with server.teller() as teller:
        reply = await teller.submit(request(amount_minor=SIX_HUNDRED_THOUSAND))
    return reply.request.state


async def _server_with_policy(
    start_server: StartServer, tmp_path: Path, open_policy: Path
) -> tuple[RunningServer, Path, str]:
    """A server reading a policy file of its own, and that file's text."""
    policy = tmp_path / "policy.toml"
    original = open_policy.read_text(encoding="utf-8")
    policy.write_text(original, encoding="utf-8")
    return await start_server(policy_file=policy), policy, original


async def test_a_reloaded_policy_applies_and_a_bad_one_is_refused(
    start_server: StartServer, tmp_path: Path, open_policy: Path
) -> None:
    server, policy, original = await _server_with_policy(start_server, tmp_path, open_policy)
    center = server.runtime.center
    operator = Identity("operator", origin="test")
    assert await _state_of_big_withdrawal(server) == cpb.REQUEST_STATE_PENDING_ONSITE_REVIEW

    policy.write_text(_with_threshold(original, "1000000.00"), encoding="utf-8")
    assert "version 2 in force" in await center.reload_policy(operator)
    assert await _state_of_big_withdrawal(server) == cpb.REQUEST_STATE_QUEUED

    policy.write_text(original.replace('mode = "ONSITE_ONLY"', 'mode = "SOMETIMES"', 1))
    message = await center.reload_policy(operator)
    assert "refused, version 2 stays in force" in message
    assert "SOMETIMES" in message
    assert re.search(rf"{re.escape(str(policy))}:\d+: ", message), message  # names the line
    assert await _state_of_big_withdrawal(server) == cpb.REQUEST_STATE_QUEUED

    await center.flush_audit()
    reloads = [
        r.entry async for r in server.runtime.audit.read() if r.entry.action == "POLICY_RELOAD"
    ]
    assert [entry.outcome == "OK" for entry in reloads] == [True, False]


async def test_a_policy_whose_reload_cannot_be_recorded_stays_out_of_force(
    start_server: StartServer, tmp_path: Path, open_policy: Path
) -> None:
    server, policy, original = await _server_with_policy(start_server, tmp_path, open_policy)
    center = server.runtime.center
    policy.write_text(_with_threshold(original, "1000000.00"), encoding="utf-8")
    # Redis refuses the record: the staging stream's key holds a string.
    staged = server.runtime.center.store.keys.audit_staged
    await server.runtime.client.set(staged, "not a stream")
    try:
        message = await center.reload_policy(Identity("operator", origin="test"))
        assert message.startswith(
            "policy version 2 not put in force, version 1 stays: its audit record failed"
        )
        assert "WRONGTYPE" in message
    finally:
        await server.runtime.client.delete(staged)
    assert center.policy.version == 1
    assert await _state_of_big_withdrawal(server) == cpb.REQUEST_STATE_PENDING_ONSITE_REVIEW
    assert "version 2 in force" in await center.reload_policy(Identity("operator", "test"))


async def test_sighup_reloads_the_policy_of_a_running_server(
    tmp_path: Path, open_policy: Path
) -> None:
    policy = tmp_path / "policy.toml"
    original = open_policy.read_text(encoding="utf-8")
    policy.write_text(original, encoding="utf-8")
    port = free_port()
    process = start_server_process(tmp_path / "data", port, extra_args=("--policy", str(policy)))
    try:
        async with TellerClient(f"127.0.0.1:{port}", "teller-1", "authq-demo-pass") as teller:
            await teller.upload_images(standard_images())
            big = request(amount_minor=SIX_HUNDRED_THOUSAND)
            assert (await teller.submit(big)).request.state == (
                cpb.REQUEST_STATE_PENDING_ONSITE_REVIEW
            )
            policy.write_text(_with_threshold(original, "1000000.00"), encoding="utf-8")
            process.send_signal(signal.SIGHUP)
            log = tmp_path / "server.log"
            for _ in range(100):
                if "policy version 2 in force" in log.read_text():
                    break
                await asyncio.sleep(0.05)
            assert "policy version 2 in force" in log.read_text()
            again = request(amount_minor=SIX_HUNDRED_THOUSAND)
            assert (await teller.submit(again)).request.state == cpb.REQUEST_STATE_QUEUED
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
