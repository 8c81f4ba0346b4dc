"""Separation of duties (R11): whoever submitted a request never authorizes it,
whatever roles they hold. Accounts already cannot combine a teller's post with an
authorizer's; the queue enforces the rule again on its own, atomically."""

from __future__ import annotations

import pytest

from server.domain.records import Submission
from server.domain.states import Outcome
from server.errors import PermissionDenied
from server.store.queue_store import NothingToClaim
from tests.conftest import RunningServer


def _submission(request_id: str, teller: str) -> Submission:
    return Submission(
        request_id=request_id, branch_id="branch-1", teller_id=teller,
        business_type="CASH_DEPOSIT", amount_minor=100, currency="CNY", account="6222",
        customer_name="Li", memo="", fields={}, urgency=1, importance=2, images=(),
    )  # fmt: skip


async def test_the_submitter_is_never_offered_its_own_request(server: RunningServer) -> None:
    store = server.runtime.store
    await store.submit(_submission("own-000001", "dual-1"))
    await store.submit(_submission("other-0001", "teller-2"))
    claim = await store.claim("dual-1")
    assert claim is not None
    assert claim.record.request_id == "other-0001"  # passed over its own, older one
    assert await store.claim("dual-1") is None  # only its own is left
    # Nothing it may take, though the queue is not empty: the dispatcher keeps trying
    # for the others.
    assert await store.claim_or_nothing("dual-1") == NothingToClaim(more_waiting=True)
    other = await store.claim("auth-2")
    assert other is not None
    assert other.record.request_id == "own-000001"


async def test_the_submitter_cannot_decide_its_own_request(server: RunningServer) -> None:
    store = server.runtime.store
    await store.submit(_submission("own-000002", "dual-2"))
    claim = await store.claim("auth-3")
    assert claim is not None
    # An account id reused by the submitter (the case the roles cannot rule out).
    await store.client.hset(store.keys.request("own-000002"), "h", "dual-2")
    with pytest.raises(PermissionDenied, match="R11"):
        await store.decide("own-000002", claim.token, "dual-2", Outcome.APPROVE)
    assert (await store.get("own-000002")).state.value == "CLAIMED"
