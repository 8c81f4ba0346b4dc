"""Operating hours (R9), extended-hours windows, branch enrollment (R10) and branch
regions, enforced by the server at submit. The schedule itself is tested in
tests/test_hours.py; here the shipped policy's real hours meet a fixed clock."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import grpc
import pytest
from authq.channel import AuthenticatedClient
from authq.v1 import branch_pb2 as bpb
from authq.v1 import branch_pb2_grpc

from server.accounts.model import Role
from server.policy.enrollment import Enrollment, EnrollmentStatus
from server.policy.loader import DEFAULT_POLICY
from server.store.branches import REASON_MAX_CHARS
from teller_client.client import TellerClient
from tests.conftest import PASSWORD, RunningServer, StartServer
from tests.helpers import request
from tests.test_admin_cli import admin

SHANGHAI = ZoneInfo("Asia/Shanghai")


def _tomorrow_at(hour: int) -> datetime:
    """A moment tomorrow in Shanghai: in the future, so windows around it can be asked for."""
    tomorrow = datetime.now(SHANGHAI) + timedelta(days=1)
    return tomorrow.replace(hour=hour, minute=0, second=0, microsecond=0)


@pytest.fixture
async def real_hours(start_server: StartServer) -> RunningServer:
    """A server on the shipped policy (center 08:30-17:30 or 16:30, branches 09:00-17:00
    or 16:00, Asia/Shanghai) with its clock set tomorrow at 22:00: closed."""
    server = await start_server(policy_file=DEFAULT_POLICY)
    server.runtime.center.clock = lambda: _tomorrow_at(22)
    server.runtime.center.branches.cache_ms = 0
    return server


def _branch_stub(client: AuthenticatedClient) -> branch_pb2_grpc.BranchServiceStub:
    return branch_pb2_grpc.BranchServiceStub(client.channel)


async def test_outside_hours_a_submit_is_refused_with_the_reason(real_hours: RunningServer) -> None:
    async with real_hours.teller() as teller:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await teller.submit(request())
        assert refused.value.code() is grpc.StatusCode.FAILED_PRECONDITION
        assert "outside operating hours (R9)" in (refused.value.details() or "")
        assert "closes at" in (refused.value.details() or "")
        real_hours.runtime.center.clock = lambda: _tomorrow_at(10)
        accepted = await teller.submit(request())
        assert accepted.request.request_id


async def test_a_retry_after_closing_gets_the_original_answer(real_hours: RunningServer) -> None:
    center = real_hours.runtime.center
    center.clock = lambda: _tomorrow_at(10)
    message = request()
    async with real_hours.teller() as teller:
        first = await teller.submit(message)
        center.clock = lambda: _tomorrow_at(22)
        again = await teller.submit(message)
    assert again.duplicate
    assert again.request.request_id == first.request.request_id


async def test_an_approved_window_opens_the_branch(real_hours: RunningServer) -> None:
    when = _tomorrow_at(22)
    start_ms = int((when - timedelta(hours=1)).timestamp() * 1000)
    end_ms = int((when + timedelta(hours=1)).timestamp() * 1000)
    async with real_hours.teller() as teller, real_hours.supervisor() as supervisor:
        branch = _branch_stub(teller)
        window = await branch.RequestExtendedHours(
            bpb.RequestExtendedHoursRequest(
                start_ms=start_ms, end_ms=end_ms, reason="month-end payroll queue"
            ),
            metadata=teller.metadata,
        )
        assert window.state == bpb.WINDOW_STATE_PENDING
        with pytest.raises(grpc.aio.AioRpcError):  # pending opens nothing
            await teller.submit(request())
        # The teller cannot approve its own request for hours (R13).
        with pytest.raises(grpc.aio.AioRpcError) as denied:
            await branch.DecideExtendedHours(
                bpb.DecideExtendedHoursRequest(window_id=window.window_id, approve=True),
                metadata=teller.metadata,
            )
        assert denied.value.code() is grpc.StatusCode.PERMISSION_DENIED
        boss = branch_pb2_grpc.BranchServiceStub(supervisor.channel)
        pending = await boss.ListExtendedHours(
            bpb.ListExtendedHoursRequest(), metadata=supervisor.metadata
        )
        assert [w.window_id for w in pending.windows] == [window.window_id]
        approved = await boss.DecideExtendedHours(
            bpb.DecideExtendedHoursRequest(window_id=window.window_id, approve=True),
            metadata=supervisor.metadata,
        )
        assert approved.state == bpb.WINDOW_STATE_APPROVED
        assert approved.decided_by == "supervisor-1"
        with pytest.raises(grpc.aio.AioRpcError) as twice:
            await boss.DecideExtendedHours(
                bpb.DecideExtendedHoursRequest(window_id=window.window_id, approve=False, note="x"),
                metadata=supervisor.metadata,
            )
        assert twice.value.code() is grpc.StatusCode.FAILED_PRECONDITION
        accepted = await teller.submit(request())
        assert accepted.request.request_id
        status = await branch.BranchStatus(bpb.BranchStatusRequest(), metadata=teller.metadata)
        assert status.open_now
        assert "extended-hours window" in status.hours
    # Another branch is not opened by this branch's window.
    async with real_hours.teller("teller-9", "branch-9") as other:
        with pytest.raises(grpc.aio.AioRpcError) as closed:
            await other.submit(request())
        assert "no approved extended-hours window" in (closed.value.details() or "")


async def test_a_refusal_note_too_long_is_refused_not_cut(real_hours: RunningServer) -> None:
    when = _tomorrow_at(22)
    start_ms = int(when.timestamp() * 1000)
    async with real_hours.teller() as teller, real_hours.supervisor() as supervisor:
        window = await _branch_stub(teller).RequestExtendedHours(
            bpb.RequestExtendedHoursRequest(
                start_ms=start_ms, end_ms=start_ms + 3_600_000, reason="late customers"
            ),
            metadata=teller.metadata,
        )
        boss = branch_pb2_grpc.BranchServiceStub(supervisor.channel)
        with pytest.raises(grpc.aio.AioRpcError) as long_note:
            await boss.DecideExtendedHours(
                bpb.DecideExtendedHoursRequest(
                    window_id=window.window_id, approve=False, note="n" * (REASON_MAX_CHARS + 1)
                ),
                metadata=supervisor.metadata,
            )
        assert long_note.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert (long_note.value.details() or "").startswith("note: ")
        pending = await boss.ListExtendedHours(
            bpb.ListExtendedHoursRequest(), metadata=supervisor.metadata
        )
        assert [w.state for w in pending.windows] == [bpb.WINDOW_STATE_PENDING]
        note = "staff shortage; ask again next week " + "x" * (REASON_MAX_CHARS - 36)
        refused = await boss.DecideExtendedHours(
            bpb.DecideExtendedHoursRequest(window_id=window.window_id, approve=False, note=note),
            metadata=supervisor.metadata,
        )
    assert refused.state == bpb.WINDOW_STATE_REFUSED
    assert refused.note == note


async def test_a_window_needs_a_reason_and_a_sane_span(real_hours: RunningServer) -> None:
    when = _tomorrow_at(22)
    start_ms = int(when.timestamp() * 1000)
    async with real_hours.teller() as teller:
        branch = _branch_stub(teller)
        for start, end, reason, field in (
            (start_ms, start_ms + 3_600_000, " ", "reason"),
            (start_ms, start_ms - 1, "late customers", "end_ms"),
            (start_ms, start_ms + 20 * 3_600_000, "all night", "end_ms"),
            (1, 2, "a while ago", "end_ms"),
            (far := start_ms + 400 * 86_400_000, far + 3_600_000, "next-next year", "start_ms"),
            (2**62, 2**62 + 3_600_000, "a typo", "start_ms"),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as bad:
                await branch.RequestExtendedHours(
                    bpb.RequestExtendedHoursRequest(start_ms=start, end_ms=end, reason=reason),
                    metadata=teller.metadata,
                )
            assert bad.value.code() is grpc.StatusCode.INVALID_ARGUMENT
            assert (bad.value.details() or "").startswith(field)
        # Branch staff see only their own branch (R13).
        with pytest.raises(grpc.aio.AioRpcError) as other:
            await branch.BranchStatus(
                bpb.BranchStatusRequest(branch_id="branch-2"), metadata=teller.metadata
            )
        assert other.value.code() is grpc.StatusCode.PERMISSION_DENIED
    async with real_hours.supervisor() as supervisor:
        with pytest.raises(grpc.aio.AioRpcError) as unknown:
            await _branch_stub(supervisor).BranchStatus(
                bpb.BranchStatusRequest(branch_id="no-such"), metadata=supervisor.metadata
            )
        assert unknown.value.code() is grpc.StatusCode.NOT_FOUND
        assert "no branch no-such" in (unknown.value.details() or "")


async def test_a_suspended_branch_is_refused_saying_so(server: RunningServer) -> None:
    branches = server.runtime.center.branches
    branches.cache_ms = 0
    async with server.teller() as teller:
        await branches.set_enrollment(
            "branch-1",
            Enrollment(
                EnrollmentStatus.SUSPENDED, frozenset({"CASH_WITHDRAWAL"}), "audit findings"
            ),
        )
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await teller.submit(request("CASH_WITHDRAWAL"))
        assert refused.value.code() is grpc.StatusCode.FAILED_PRECONDITION
        details = refused.value.details() or ""
        assert "CASH_WITHDRAWAL is suspended for this branch (audit findings)" in details
        assert (await teller.submit(request("CASH_DEPOSIT"))).request.request_id
        await branches.set_enrollment(
            "branch-1", Enrollment(EnrollmentStatus.SUSPENDED, frozenset(), "relocation")
        )
        with pytest.raises(grpc.aio.AioRpcError) as whole:
            await teller.submit(request("CASH_DEPOSIT"))
        assert "suspended for this branch (relocation)" in (whole.value.details() or "")
        await branches.set_enrollment("branch-1", Enrollment(EnrollmentStatus.ENROLLED))
        assert (await teller.submit(request("CASH_WITHDRAWAL"))).request.request_id


async def test_the_admin_cli_suspends_and_enrolls_a_branch(
    server: RunningServer, redis_url: str
) -> None:
    server.runtime.center.branches.cache_ms = 0
    await server.account("teller-1", [Role.TELLER], "branch-1")
    code, _, err = await admin(redis_url, "branch", "suspend", "branch-1")
    assert code == 2  # a suspension needs a reason (R10)
    assert "--reason" in err
    code, out, err = await admin(
        redis_url, "branch", "withdraw", "branch-1", "--reason", "branch closed"
    )
    assert code == 0, err
    assert "WITHDRAWN" in out
    async with TellerClient(server.target, "teller-1", PASSWORD) as teller:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await teller.submit(request())
        assert "withdrawn from central authorization (branch closed)" in (
            refused.value.details() or ""
        )
        code, out, _ = await admin(redis_url, "branch", "enroll", "branch-1")
        assert code == 0
        assert (await teller.submit(request())).request.request_id
    code, out, _ = await admin(redis_url, "branch", "show", "branch-1")
    assert "ENROLLED" in out
    await server.runtime.center.flush_audit()
    actions = [r.entry.action async for r in server.runtime.audit.read()]
    assert actions.count("BRANCH_ENROLLMENT") == 2


async def test_a_branch_region_the_policy_does_not_define_is_refused(
    server: RunningServer,
) -> None:
    await server.runtime.accounts.create_branch("branch-n", "North 1", region="north")
    server.runtime.center.branches.cache_ms = 0
    async with server.teller("teller-n", "branch-n") as teller:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await teller.submit(request())
        assert refused.value.code() is grpc.StatusCode.FAILED_PRECONDITION
        assert "region north" in (refused.value.details() or "")
